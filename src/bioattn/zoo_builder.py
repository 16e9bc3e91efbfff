"""Building the zoo: train each entry of :data:`bioattn.zoo.ZOO` from scratch with bioattn's
trainer, then write its folder (float16 weights, bioattn and timm metadata, the command, the
training log and the test figures).

``build_zoo()`` (``bioattn zoo``, ``make zoo``) trains every entry whose folder is missing or
was made by other settings; ``retrain=True`` trains them all again. Training runs go under
``runs`` (default ``$BIOATTN_CACHE/zoo-runs``), so an interrupted build resumes each run from
its last epoch. Entry folders go into ``out``: by default the package's own zoo folder, but only
in a source checkout (an installed package is not rewritten); elsewhere name a folder, and load
an entry from it with ``timm.create_model("local-dir:<out>/<entry>", pretrained=True)``.

The zoo's table (:mod:`bioattn.zoo`) sits in the lowest layer, where the model registry reads
it; this builder sits with the pipelines, above the trainer and the evaluation it runs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from . import __version__
from . import checkpoint as ckpt
from .config import TrainConfig, flag_of
from .data.embedded import cache_root
from .errors import BioattnError
from .evaluate.saved import evaluate_checkpoint
from .fileio import atomic_dir, file_sha256
from .train import train, train_or_reuse
from .zoo import ZOO, ZOO_DIR, ZooEntry, find_entry

TRAIN_RECORD = "train.json"


def default_out() -> Path:
    """Where entry folders go unless told: the package's zoo folder when the package runs from a
    source checkout, else nowhere (a :class:`BioattnError` asks for a folder)."""
    checkout = ZOO_DIR.parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "bioattn").is_dir():
        return ZOO_DIR
    raise BioattnError(f"bioattn is installed at {ZOO_DIR.parent}, not run from a source checkout: name the folder "
                       "the zoo's entries go into (bioattn zoo --out DIR; Python: build_zoo(out=DIR))")


def entry_folder(entry: ZooEntry, out: Path | None = None) -> Path:
    """The folder of ``entry`` under ``out`` (default: the package's zoo folder)."""
    return entry.folder if out is None else Path(out) / entry.name


def train_config(entry: ZooEntry, run_dir: Path, progress: bool = False, out: Path | None = None) -> TrainConfig:
    """The trainer's settings of ``entry``, writing its run into ``run_dir``; a fine-tuned entry
    starts from its starting entry's folder under ``out``."""
    settings = dict(entry.settings)
    init = str(settings.get("init") or "")
    if out is not None and init.startswith(ckpt.ZOO_PREFIX):
        settings["init"] = str(Path(out) / init[len(ckpt.ZOO_PREFIX):])
    return TrainConfig(model=entry.model, data=entry.data, model_args=dict(entry.model_args), seed=entry.seed,
                       output=str(run_dir), progress=progress, tensorboard=False, **settings)


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
    return shlex.join(words)


def _record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / TRAIN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _start_entry(entry: ZooEntry) -> ZooEntry | None:
    """The zoo entry a fine-tuned entry starts from (``init="zoo:<entry>"``), or None."""
    init = str(entry.settings.get("init") or "")
    return find_entry(init[len(ckpt.ZOO_PREFIX):]) if init.startswith(ckpt.ZOO_PREFIX) else None


def start_weights_sha256(entry: ZooEntry, out: Path | None = None) -> str | None:
    """sha256 of the weights a fine-tuned entry starts from, as they are now (None for an entry
    trained from scratch, or whose starting entry is not built)."""
    start = _start_entry(entry)
    weights = entry_folder(start, out) / ckpt.WEIGHTS if start is not None else None
    return file_sha256(weights) if weights is not None and weights.is_file() else None


def is_current(entry: ZooEntry, out: Path | None = None) -> bool:
    """Whether ``entry``'s folder (under ``out``) holds weights made by its present settings and,
    for a fine-tuned entry, from the weights its starting entry holds now (a record made before
    starting weights were recorded counts as current)."""
    folder = entry_folder(entry, out)
    built = (folder / ckpt.WEIGHTS).is_file() and (folder / ckpt.META).is_file()
    record = _record(folder) if built else {}
    if record.get("command") != command_line(entry):
        return False
    recorded = record.get("start_weights_sha256")
    return recorded is None or recorded == start_weights_sha256(entry, out)


def _test_figures(best: Path, entry: ZooEntry) -> dict[str, Any]:
    """The clean figures of the checkpoint ``best`` on the test split of the entry's data."""
    result = evaluate_checkpoint(best, "clean", data=entry.data, split="test", progress=False)
    clean = result["results"]["clean"]
    keep = ("top1", "top5", "miou", "pixel_acc", "map", "f1_overall", "n", "per_readout")
    return {k: clean[k] for k in keep if k in clean}


def export_entry(entry: ZooEntry, run_dir: Path, train_seconds: float, out: Path | None = None) -> Path:
    """Write ``entry``'s folder (under ``out``) from the best checkpoint of its finished run ``run_dir``."""
    best = ckpt.resolve_checkpoint_dir(run_dir / "best")
    meta = ckpt.read_meta(best)
    if meta is None:
        raise BioattnError(f"{run_dir} holds no best checkpoint to export")
    state = {k: (v.half() if v.is_floating_point() else v).contiguous()
             for k, v in ckpt.read_state_dict(best).items()}
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    test = _test_figures(best, entry)
    cpu = _summed(log, "epoch_cpu_seconds")
    record = {
        "entry": entry.name,
        "label": entry.label,
        "command": command_line(entry),
        "start_weights_sha256": start_weights_sha256(entry, out),
        "seed": entry.seed,
        "data": entry.data,
        "bioattn_version": __version__,
        "torch_version": torch.__version__,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu, 1) if cpu is not None else None,
        "best_epoch": meta.get("epoch"),
        "validation": meta.get("metrics"),
        "test": test,
        "log": log,
    }

    def fill(tmp: Path) -> None:
        save_file(state, str(tmp / ckpt.WEIGHTS), metadata={"format": "pt", "zoo_entry": entry.name,
                                                            "command": record["command"]})
        ckpt.write_meta(tmp, dict(meta, zoo_entry=entry.name), tag=entry.tag)
        (tmp / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    folder = entry_folder(entry, out)
    atomic_dir(folder, fill, what="zoo folder")
    return folder


def build_entry(entry: ZooEntry, runs: Path, retrain: bool = False, progress: bool = False, log=print,
                out: Path | None = None) -> Path:
    """Train ``entry`` (resuming its run under ``runs`` if one was interrupted, reusing it if it
    finished: :func:`bioattn.train.train_or_reuse`) and export it into ``out`` (default: the
    package's zoo folder); ``retrain`` trains it anew in any case."""
    run_dir = runs / entry.name
    cfg = train_config(entry, run_dir, progress, out)
    start = time.perf_counter()
    if retrain:
        log(f"{entry.name}: training ({command_line(entry)})")
        train(dataclasses.replace(cfg, overwrite=True))
    else:
        log(f"{entry.name}: {command_line(entry)}")
        train_or_reuse(cfg, replace=True, log=lambda message: log(f"{entry.name}: {message}"))
    seconds = _recorded_seconds(run_dir) or (time.perf_counter() - start)
    folder = export_entry(entry, run_dir, seconds, out)
    log(f"{entry.name}: wrote {folder}")
    return folder


def _summed(records: list[dict[str, Any]], key: str) -> float | None:
    """The sum of ``key`` over a run's epoch records; None when an epoch lacks it."""
    values = [r.get(key) for r in records]
    return float(sum(values)) if values and None not in values else None


def _recorded_seconds(run_dir: Path) -> float | None:
    """Training time of a run: its epochs' wall-clock seconds (training and validation), summed."""
    try:
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    except OSError:
        return None
    return _summed(records, "epoch_seconds")


def select_entries(patterns: list[str] | None) -> list[ZooEntry]:
    """The zoo entries that ``patterns`` name (entry names or their pretrained names, or
    shell-style patterns such as ``rvt_micro*_seed1``), in the zoo's order; None selects every
    entry. An empty selection, or a pattern that names no entry, is refused."""
    if patterns is None:
        return list(ZOO)
    if not patterns:
        raise BioattnError("the selection names no zoo entry: give entry names (bioattn zoo --only NAME[,NAME...]) "
                           "or leave --only out to build every entry")
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(e.name, p) or e.tagged == p for e in ZOO)]
    if unknown:
        raise BioattnError(f"no zoo entry matches {', '.join(unknown)} ({len(ZOO)} entries, e.g. "
                           f"{', '.join(e.name for e in ZOO[:3])}; `bioattn zoo --list` lists them)")
    return [e for e in ZOO if any(fnmatch.fnmatchcase(e.name, p) or e.tagged == p for p in patterns)]


def zoo_listing(patterns: list[str] | None = None, out: str | Path | None = None) -> list[str]:
    """One line per selected entry: its folder name, the name it loads under with
    ``pretrained=True``, its seed and whether its folder holds weights of its present settings
    (``current``), of other settings (``stale``) or none (``missing``)."""
    where = Path(out) if out is not None else ZOO_DIR
    where = None if where == ZOO_DIR else where
    lines = []
    for entry in select_entries(patterns):
        folder = entry_folder(entry, where)
        state = "current" if is_current(entry, where) else "stale" if (folder / ckpt.WEIGHTS).is_file() else "missing"
        lines.append(f"{entry.name:<40} {entry.tagged:<44} seed {entry.seed}  {state}")
    return lines


# the validation score of each task, as the trainer logs it per epoch, and the test figure
SCORES = (("val_top1", "top1", "top-1"), ("val_miou", "miou", "mIoU"), ("val_map", "map", "mAP"))
# an entry has reached its plateau when its best validation score over the last fifth of its
# epochs is at most this many points above the score before them
PLATEAU_POINTS = 0.5


def plateau_gain(curve: list[float]) -> float:
    """The rise of the validation ``curve`` over its last fifth of epochs (at least one): the
    best score of those epochs minus the score of the epoch before them."""
    last = max(1, len(curve) // 5)
    if len(curve) <= last:
        return math.nan
    return max(curve[-last:]) - curve[-last - 1]


def entry_record(entry: ZooEntry, out: Path | None = None) -> dict[str, Any] | None:
    """The ``train.json`` of ``entry``'s built folder (under ``out``), or None."""
    try:
        return json.loads((entry_folder(entry, out) / TRAIN_RECORD).read_text())
    except (OSError, ValueError):
        return None


def zoo_report(out: Path | None = None) -> str:
    """A Markdown page of the built entries, from their ``train.json`` records alone: per entry
    and seed its test figure, validation curve, rise over the last fifth of its epochs (a plateau
    when at most :data:`PLATEAU_POINTS`), epochs and training time; per model the mean and spread
    of the test figure across its built seeds; the total training time."""
    rows, by_model, total, stale = [], {}, 0.0, []
    cpu_total, cpu_entries = 0.0, 0
    for entry in ZOO:
        record = entry_record(entry, out)
        if record is None:
            continue
        if record.get("command") != command_line(entry):
            stale.append(entry.name)
        log = record.get("log") or []
        key, test_key, metric = next(((k, t, m) for k, t, m in SCORES if log and k in log[0]), SCORES[0])
        curve = [float(r[key]) for r in log if key in r]
        test = (record.get("test") or {}).get(test_key)
        gain = plateau_gain(curve)
        seconds = float(record.get("train_seconds") or 0.0)
        cpu = record.get("train_cpu_seconds")
        rate = max((float(r["img_per_s"]) for r in log if r.get("img_per_s")), default=None)
        total += seconds
        if cpu is not None:
            cpu_total, cpu_entries = cpu_total + float(cpu), cpu_entries + 1
        base = entry.name.removesuffix(f"_seed{entry.seed}") if entry.seed else entry.name
        if test is not None:
            by_model.setdefault((base, entry.label, metric), []).append(float(test))
        rising = "" if gain <= PLATEAU_POINTS else " (rising)"
        rows.append(f"| `{entry.name}` | {entry.label} | {entry.seed} | {metric} {_fmt(test)} | "
                    f"{' '.join(f'{v:.0f}' for v in curve)} | {_fmt(gain)}{rising} | {len(curve)} | "
                    f"{seconds / 60:.1f} | {'-' if cpu is None else f'{cpu / 60:.1f}'} | "
                    f"{'-' if rate is None else f'{rate:.0f}'} |")
    lines = ["# The model zoo, as built", "",
             "Generated by `bioattn zoo --report` from each built entry's `train.json`. The validation curve is the "
             "score after each epoch; \"rise\" is the best score of the last fifth of the epochs minus the score "
             f"before them (a plateau when at most {PLATEAU_POINTS} points). Test figures are on the test split of "
             "the entry's data. *Minutes* are wall-clock minutes of training and validation, which grow when "
             "other jobs share the machine; *CPU minutes* are the training process's CPU time over all its "
             "threads (recorded by the trainer since it logs `epoch_cpu_seconds`), which do not; *img/s* is the "
             "training rate of the entry's fastest epoch, the nearest to its rate on an idle machine.", "",
             "| entry | model | seed | test | validation curve | rise | epochs | minutes | CPU minutes | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|", *rows, "", "## Across seeds", "",
             "| entry | model | metric | seeds | mean | spread (sd) |", "|---|---|---|---|---|---|"]
    for (base, label, metric), values in by_model.items():
        spread = statistics.stdev(values) if len(values) > 1 else math.nan
        lines.append(f"| `{base}` | {label} | {metric} | {len(values)} | {statistics.fmean(values):.2f} | "
                     f"{_fmt(spread)} |")
    lines += ["", f"Total recorded training time of the built entries: {total / 3600:.2f} hours of wall-clock "
              f"time ({len(rows)} entries of {len(ZOO)}); CPU time recorded for {cpu_entries} of them: "
              f"{cpu_total / 3600:.2f} hours."]
    if stale:
        lines += ["", f"Built by other settings than the table's (`bioattn zoo` trains them again): "
                  f"{', '.join(f'`{n}`' for n in stale)}."]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def build_zoo(names: list[str] | None = None, retrain: bool = False, runs: str | Path | None = None,
              progress: bool = True, log=None, out: str | Path | None = None) -> list[Path]:
    """Train and export the zoo entries ``names`` (default: every entry; see
    :func:`select_entries`) into ``out`` (default: :func:`default_out`), skipping those whose
    folders were made by their present settings unless ``retrain``."""
    say = log or (lambda message: print(message, file=sys.stderr))
    entries = select_entries(names)
    out = Path(out) if out is not None else default_out()
    out = None if out == ZOO_DIR else out
    runs = Path(runs) if runs is not None else cache_root() / "zoo-runs"
    written = []
    for entry in entries:
        if not retrain and is_current(entry, out):
            say(f"{entry.name}: up to date ({entry_folder(entry, out)})")
            continue
        written.append(build_entry(entry, runs, retrain, progress, say, out))
    return written
