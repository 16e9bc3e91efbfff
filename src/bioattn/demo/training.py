"""The demo's cached training runs: each model is trained (or fine-tuned) once into the cache
and loaded from there on later runs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_model, read_meta
from ..errors import BioattnError
from ..tasks.registry import get_task
from ..train import TrainConfig, train, train_or_reuse
from ..zoo import (
    MULTILABEL_BENCHMARK,
    SEGMENTATION_BENCHMARK,
    STYLES,
    ZooEntry,
    benchmark_classifier,
    held_out_spec,
    trained_on,
)
from .settings import FROM_DEMO, FROM_ZOO, DemoSettings, TaskDemoSettings


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def train_or_load(config: TrainConfig, what: str, start: str, retrain: bool,
                  log: Callable[[str], None]) -> tuple[Any, dict, float]:
    """The best checkpoint of the run ``config`` writes, under the trainer's one rule
    (:func:`bioattn.train.train_or_reuse`): a finished run of the same settings in its run
    directory is loaded, an unfinished one resumed, anything else trained anew (``start`` is
    logged first); ``retrain`` trains anew in any case. Returns the model, its metadata and the
    training seconds (0 when loaded)."""
    run_dir = Path(config.output)
    t0 = time.perf_counter()
    if not retrain:
        done = train_or_reuse(config, replace=True, log=lambda message: log(
            start if message.startswith("training") else f"{what}: {message}"))
        try:
            return load_model(run_dir / "best"), read_meta(run_dir / "best"), \
                0.0 if done == "reused" else time.perf_counter() - t0
        except BioattnError as exc:  # written by another version of the model code
            log(f"{what}: the cached checkpoint cannot be used ({exc}); training again")
            t0 = time.perf_counter()
    log(start)
    train(dataclasses.replace(config, overwrite=True))
    return load_model(run_dir / "best"), read_meta(run_dir / "best"), time.perf_counter() - t0


def fine_tune(task: str, label: str, name: str, args: dict, data: str, init: Path, settings: TaskDemoSettings,
              run_dir: Path, retrain: bool, progress: bool, log: Callable[[str], None]) -> tuple[Any, dict, float]:
    """Train (or load from ``run_dir``) ``name`` on ``data`` from the demo checkpoint ``init``."""
    config = TrainConfig(
        model=name, data=data, output=str(run_dir), recipe="small", model_args=dict(args), init=str(init),
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        warmup_epochs=min(1, settings.epochs - 1), progress=progress, tensorboard=False,
        device="cpu" if not torch.cuda.is_available() else "auto",
    )
    return train_or_load(config, f"{label} ({task})", f"[bold]fine-tuning {label} for {task}[/] from {init}",
                         retrain, log)


def zoo_folder(name: str, args: dict) -> Path | None:
    """The folder of the built zoo entry of ``name`` with ``args`` (trained on the embedded
    benchmark), or None when the zoo has none."""
    entry = benchmark_classifier(name, args)
    return entry.folder if entry is not None and entry.is_built() else None


def zoo_task_folder(task: str, name: str, args: dict) -> Path | None:
    """The folder of the built zoo entry solving ``task`` (``segmentation`` or ``multilabel``)
    with backbone ``name`` and ``args``, or None when the zoo has none."""
    data = {"segmentation": SEGMENTATION_BENCHMARK, "multilabel": MULTILABEL_BENCHMARK}.get(task)
    entry = trained_on(data, get_task(task).model_name(name), args) if data else None
    return entry.folder if entry is not None and entry.is_built() else None


def zoo_style_entries(name: str, args: dict) -> dict[str, ZooEntry] | None:
    """The zoo's built leave-one-style-out entries of ``name`` with ``args``, by held-out style,
    or None unless the zoo has one for every style."""
    entries = {style: trained_on(held_out_spec(style), name, args) for style in STYLES}
    if any(e is None or not e.is_built() for e in entries.values()):
        return None
    return entries


def train_here(label: str, name: str, args: dict, settings: DemoSettings, run_dir: Path, retrain: bool,
               progress: bool, log) -> tuple[Any, dict, float]:
    """``name`` trained on ``settings.data`` for ``settings.epochs`` into ``run_dir`` (or loaded
    from an earlier demo run there)."""
    config = TrainConfig(
        model=name, data=settings.data, output=str(run_dir), recipe="small",
        model_args=dict(args), epochs=settings.epochs, batch_size=settings.batch_size, base_lr=settings.base_lr,
        warmup_epochs=min(1, settings.epochs - 1), seed=settings.seed, progress=progress,
        tensorboard=False, device="cpu" if not torch.cuda.is_available() else "auto",
    )
    return train_or_load(config, label, f"[bold]training {label}[/] ({name} {args or ''})", retrain, log)


def train_classifier(label: str, name: str, args: dict, settings: DemoSettings, ckpt_root: Path,
                     retrain: bool, progress: bool, log) -> tuple[Any, dict, float, Path, str]:
    """The demo model ``label``: the zoo's weights when ``settings.use_zoo`` and the zoo has them
    (unless ``retrain``), else trained on ``settings.data`` (or loaded from an earlier demo run).
    Returns the model, its metadata, the training seconds (0 when loaded), its checkpoint folder
    and where the weights come from (:data:`FROM_ZOO` or :data:`FROM_DEMO`)."""
    folder = zoo_folder(name, args) if settings.use_zoo and not retrain else None
    if folder is not None:
        log(f"{label}: using the zoo's weights {folder}")
        return load_model(folder), read_meta(folder), 0.0, folder, FROM_ZOO
    run_dir = ckpt_root / slug(label)
    model, meta, seconds = train_here(label, name, args, settings, run_dir, retrain, progress, log)
    return model, meta, seconds, run_dir / "best", FROM_DEMO
