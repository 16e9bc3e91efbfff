"""Building the zoo: train each entry of :data:`bioattn.zoo.ZOO` from scratch with bioattn's
trainer, then write its folder (float16 weights, bioattn and timm metadata, the command, the
training log and the test figures).

``build_zoo()`` (``bioattn zoo``, ``make zoo``) trains every entry whose folder is missing or
was made by other settings; ``retrain=True`` trains them all again. Training runs go under
``runs`` (default ``$BIOATTN_CACHE/zoo-runs``), so an interrupted build resumes each run from
its last epoch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import __version__
from .. import checkpoint as ckpt
from ..config import TrainConfig, flag_of
from ..data.embedded import cache_root
from ..errors import BioattnError
from ..evaluate.suites import evaluate_checkpoint
from ..fileio import atomic_dir
from ..models import data_config
from ..train import train
from . import ZOO, ZOO_TAG, ZooEntry, find_entry

TRAIN_RECORD = "train.json"
TIMM_CONFIG = "config.json"


def train_config(entry: ZooEntry, run_dir: Path, progress: bool = False) -> TrainConfig:
    """The trainer's settings of ``entry``, writing its run into ``run_dir``."""
    return TrainConfig(model=entry.model, data=entry.data, model_args=dict(entry.model_args), seed=entry.seed,
                       output=str(run_dir), progress=progress, tensorboard=False, **entry.settings)


def command_line(entry: ZooEntry) -> str:
    """The ``bioattn train`` command that trains ``entry`` (run directory left to the trainer)."""
    cfg = TrainConfig(model=entry.model, data=entry.data, model_args=dict(entry.model_args), seed=entry.seed,
                      **entry.settings)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    words = ["bioattn", "train", "--model", entry.model, "--data", entry.data]
    for key, value in entry.model_args.items():
        words += ["--model-arg", f"{key}={value}"]
    words += ["--seed", str(entry.seed)]
    for key in sorted(entry.settings):
        value = getattr(cfg, key)
        if isinstance(value, bool):
            value = "on" if value else "off"
        words += [flag_of(fields[key]), str(value)]
    return " ".join(words)


def _recorded_command(entry: ZooEntry) -> str | None:
    try:
        return json.loads((entry.folder / TRAIN_RECORD).read_text()).get("command")
    except (OSError, ValueError):
        return None


def is_current(entry: ZooEntry) -> bool:
    """Whether ``entry``'s folder holds weights made by its present settings."""
    return entry.is_built() and _recorded_command(entry) == command_line(entry)


def _test_figures(best: Path, entry: ZooEntry) -> dict[str, Any]:
    """The clean figures of the checkpoint ``best`` on the test split of the entry's data."""
    result = evaluate_checkpoint(best, "clean", data=entry.data, split="test", progress=False)
    clean = result["results"]["clean"]
    keep = ("top1", "top5", "miou", "pixel_acc", "map", "f1_overall", "n", "per_readout")
    return {k: clean[k] for k in keep if k in clean}


def export_entry(entry: ZooEntry, run_dir: Path, train_seconds: float) -> Path:
    """Write ``entry``'s folder from the best checkpoint of its finished run ``run_dir``."""
    best = ckpt.resolve_checkpoint_dir(run_dir / "best")
    meta = ckpt.read_meta(best)
    if meta is None:
        raise BioattnError(f"{run_dir} holds no best checkpoint to export")
    state = {k: (v.half() if v.is_floating_point() else v).contiguous()
             for k, v in ckpt.read_state_dict(best).items()}
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    test = _test_figures(best, entry)
    cfg = data_config(meta["model"], meta.get("img_size"))
    timm_config = {
        "architecture": meta["model"],
        "num_classes": meta["num_classes"],
        "model_args": dict(meta.get("model_args") or {}),
        "pretrained_cfg": {
            "tag": ZOO_TAG,
            "input_size": list(cfg["input_size"]),
            "mean": list(meta["mean"]),
            "std": list(meta["std"]),
            "crop_pct": cfg["crop_pct"],
            "interpolation": cfg.get("interpolation", "bicubic"),
            "num_classes": meta["num_classes"],
            "label_names": meta.get("classes"),
        },
    }
    record = {
        "entry": entry.name,
        "label": entry.label,
        "command": command_line(entry),
        "seed": entry.seed,
        "data": entry.data,
        "bioattn_version": __version__,
        "torch_version": torch.__version__,
        "train_seconds": round(train_seconds, 1),
        "best_epoch": meta.get("epoch"),
        "validation": meta.get("metrics"),
        "test": test,
        "log": log,
    }

    def fill(tmp: Path) -> None:
        save_file(state, str(tmp / ckpt.WEIGHTS), metadata={"format": "pt", "zoo_entry": entry.name,
                                                            "command": record["command"]})
        (tmp / ckpt.META).write_text(json.dumps(dict(meta, zoo_entry=entry.name), indent=2, default=str) + "\n")
        (tmp / TIMM_CONFIG).write_text(json.dumps(timm_config, indent=2) + "\n")
        (tmp / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    atomic_dir(entry.folder, fill, what="zoo folder")
    return entry.folder


def build_entry(entry: ZooEntry, runs: Path, retrain: bool = False, progress: bool = False, log=print) -> Path:
    """Train ``entry`` (resuming its run under ``runs`` if one was interrupted) and export it."""
    run_dir = runs / entry.name
    finished = (run_dir / "best").exists() and _run_finished(run_dir, entry)
    start = time.perf_counter()
    if retrain or not finished:
        if _resumable(run_dir, entry) and not retrain:
            log(f"{entry.name}: resuming {run_dir}")
            epochs = train_config(entry, run_dir).resolved().epochs
            train(TrainConfig(resume=str(run_dir), epochs=epochs, progress=progress, tensorboard=False))
        else:
            log(f"{entry.name}: training ({command_line(entry)})")
            train(dataclasses.replace(train_config(entry, run_dir, progress), overwrite=True))
    seconds = _recorded_seconds(run_dir) or (time.perf_counter() - start)
    folder = export_entry(entry, run_dir, seconds)
    log(f"{entry.name}: wrote {folder}")
    return folder


def _run_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _same_run(run_dir: Path, entry: ZooEntry) -> bool:
    saved = _run_config(run_dir)
    if saved is None:
        return False
    wanted = dataclasses.asdict(train_config(entry, run_dir).resolved())
    ignore = {"output", "progress", "tensorboard", "overwrite", "resume", "device", "workers"}
    return all(saved.get(k) == v for k, v in wanted.items() if k not in ignore)


def _epochs_done(run_dir: Path) -> int:
    try:
        return len([line for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()])
    except OSError:
        return 0


def _run_finished(run_dir: Path, entry: ZooEntry) -> bool:
    return _same_run(run_dir, entry) and _epochs_done(run_dir) >= train_config(entry, run_dir).resolved().epochs


def _resumable(run_dir: Path, entry: ZooEntry) -> bool:
    return _same_run(run_dir, entry) and (run_dir / "last").exists() and _epochs_done(run_dir) > 0


def _recorded_seconds(run_dir: Path) -> float | None:
    """Training time of a run: its epochs' wall-clock seconds (training and validation), summed."""
    try:
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    except OSError:
        return None
    seconds = [r.get("epoch_seconds") for r in records]
    return float(sum(seconds)) if seconds and None not in seconds else None


def build_zoo(names: list[str] | None = None, retrain: bool = False, runs: str | Path | None = None,
              progress: bool = True, log=None) -> list[Path]:
    """Train and export the zoo entries ``names`` (default: every entry), skipping those whose
    folders were made by their present settings unless ``retrain``."""
    say = log or (lambda message: print(message, file=sys.stderr))
    entries = [find_entry(n) for n in names] if names else list(ZOO)
    runs = Path(runs) if runs is not None else cache_root() / "zoo-runs"
    written = []
    for entry in entries:
        if not retrain and is_current(entry):
            say(f"{entry.name}: up to date ({entry.folder})")
            continue
        written.append(build_entry(entry, runs, retrain, progress, say))
    return written
