"""The run directory of a training run: a new run never replaces another (:func:`new_run_dir`), a
resumed run keeps its settings (:func:`load_resume`), and a run directory never lies inside the
data it reads nor holds the weights it starts from (:func:`check_run_dir_keeps_inputs`).

Pipelines that train runs of their own (the zoo's builder, the demo, leave-one-domain-out) meet
a run directory that may already hold a run. One rule decides what to do with it
(:func:`prior_run`; the trainer's ``train_or_reuse`` carries it out): a run of the same settings is reused when finished
and resumed when not; a run of other settings is refused, or replaced when asked to.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import TrainConfig, flag_of
from .errors import BioattnError
from .fileio import refuse_output_inside
from .specs import data_folders

# settings that say how a run is carried out, not what it trains: two runs that differ only in
# these are the same run
RUN_ONLY = ("output", "resume", "overwrite", "device", "workers", "progress", "tensorboard", "explicit")
RUN_FILES = ("config.json", "log.jsonl", "best", "last", "best.old", "last.old", "tb")
# settings a resumed run takes from the command line (they change how fast it trains, not what it
# learns); every other one comes from config.json
RESUME_OVERRIDES = ("epochs", "device", "workers", "progress", "tensorboard", "sync_every", "prefetch",
                    "compile", "compile_mode", "grad_checkpointing")


def _describe_run(run_dir: Path) -> str:
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        return f"a run of {saved.get('model')} for {saved.get('epochs')} epochs"
    except (OSError, ValueError):
        return "not a bioattn run"


def new_run_dir(cfg: TrainConfig) -> Path:
    """The directory of a new run: ``cfg.output``, or ``runs/<model>-<time>`` (with a suffix if
    that exists). An existing, non-empty ``output`` is refused unless ``cfg.overwrite``, in
    which case the previous run's files are removed first (and nothing else in the folder)."""
    if cfg.output is None:
        base = Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir, n = base, 1
        while run_dir.exists():
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
        return run_dir
    run_dir = Path(cfg.output)
    if run_dir.exists() and not run_dir.is_dir():
        raise BioattnError(f"--output {run_dir} is a file, not a run directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not cfg.overwrite:
            raise BioattnError(
                f"--output {run_dir} already exists ({_describe_run(run_dir)}): pass --resume {run_dir} "
                f"to continue it, --overwrite to replace it, or another --output")
        for name in RUN_FILES:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    return run_dir


def load_resume(config: TrainConfig) -> tuple[Path, TrainConfig, dict]:
    """The run directory, settings and trainer state of the run ``config.resume`` names.

    The saved settings stay; ``epochs``, ``device``, ``workers``, ``progress`` and
    ``tensorboard`` may be given anew. Any other setting given with a different value is
    refused, since silently ignoring it would train something other than what was asked.
    """
    run_dir = Path(config.resume)
    if run_dir.name in ("last", "last.old") or (run_dir / ckpt.WEIGHTS).exists():
        run_dir = run_dir.parent
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise BioattnError(f"cannot resume: {config_path} not found")
    last = ckpt.resolve_checkpoint_dir(run_dir / "last")
    state_path = last / ckpt.TRAINER_STATE
    if not state_path.exists():
        raise BioattnError(f"cannot resume: no trainer state in {last}")
    try:
        saved_values = json.loads(config_path.read_text())
        saved = TrainConfig(**saved_values)
    except (ValueError, TypeError) as exc:
        raise BioattnError(f"cannot resume: {config_path} is not a bioattn run config ({exc})") from None
    for name in sorted(config.explicit_settings()):
        value = getattr(config, name)
        if name in RESUME_OVERRIDES or name in ("resume", "overwrite"):
            continue
        if name == "output" and Path(value).resolve() == run_dir.resolve():
            continue
        if value != getattr(saved, name):
            flag = "--" + name.replace("_", "-")
            had = getattr(saved, name)
            had = (f"{name} = {had!r} in {config_path}" if had is not None
                   else f"{name} not set in {config_path}: the recipe decided it")
            allowed = ", ".join(flag_of(f) for f in dataclasses.fields(TrainConfig) if f.name in RESUME_OVERRIDES)
            raise BioattnError(
                f"{flag} {value} conflicts with the resumed run ({had}); a resumed run keeps its "
                f"settings except {allowed}")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BioattnError(f"cannot read trainer state {state_path}: {exc}".splitlines()[0]) from None
    overrides = {k: getattr(config, k) for k in RESUME_OVERRIDES if k != "epochs"}
    if config.epochs is not None:
        overrides["epochs"] = config.epochs
    cfg = dataclasses.replace(saved, resume=None, **overrides).resolved()
    done = int(state["epoch"]) + 1
    if done >= cfg.epochs:
        raise BioattnError(
            f"{run_dir} has finished its {cfg.epochs} epochs: pass --epochs N with N > {cfg.epochs} "
            "to train it further")
    return run_dir, cfg, state



def check_run_dir_keeps_inputs(cfg: TrainConfig, run_dir: Path) -> None:
    """Refuse a run directory inside the data the run reads, or holding the ``--init`` weights
    (a new run clears its directory of an earlier run's files before it starts)."""
    what = "--output" if cfg.output is not None else "the run directory"
    refuse_output_inside(run_dir, data_folders(cfg.data), what)
    if cfg.init and Path(cfg.init).exists():
        init = Path(cfg.init).resolve()
        target = run_dir.resolve()
        if init == target or target in init.parents:
            raise BioattnError(f"--init {cfg.init} lies in the run directory {run_dir}, whose checkpoints the "
                               "run replaces: give another --output, or copy the weights elsewhere first")



def _comparable(values: dict) -> dict:
    values = json.loads(json.dumps(values, default=str))
    return {k: v for k, v in values.items() if k not in RUN_ONLY}


def prior_run(run_dir: Path, cfg: TrainConfig, replace: bool = False) -> str:
    """What ``run_dir`` holds for the run ``cfg``: ``"new"`` (nothing, or an unfinished run
    without a checkpoint), ``"finished"`` or ``"unfinished"`` (a run of the same settings, every
    setting compared but those in :data:`RUN_ONLY`). A run of other settings, or files that are no
    run, are refused in one line, or with ``replace`` count as ``"new"`` (to be trained over)."""
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not run_dir.is_dir():
        raise BioattnError(f"run directory {run_dir} is a file: give another output folder")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        if replace:
            return "new"
        raise BioattnError(f"{run_dir} holds files but no bioattn run: give another output folder, or "
                           "--overwrite to train there") from None
    wanted = _comparable(dataclasses.asdict(cfg.resolved()))
    # a setting the user gave is named before the data spec that it also changes (seed, holdout)
    differ = sorted((k for k in wanted if saved.get(k) != wanted[k]), key=lambda k: k == "data")
    if differ:
        if replace:
            return "new"
        key = differ[0]
        raise BioattnError(
            f"{run_dir} holds a run with other settings ({key} {saved.get(key)!r} there, "
            f"{wanted[key]!r} here): pass --overwrite to train it again, or give another output folder")
    last = ckpt.read_meta(run_dir / "last")
    if last is None:
        return "new"  # no epoch finished: nothing to keep
    if int(last.get("epoch", 0)) >= int(wanted["epochs"]) and ckpt.read_meta(run_dir / "best") is not None:
        return "finished"
    return "unfinished"
