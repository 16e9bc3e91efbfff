"""The demo's cached training runs: each model is trained (or fine-tuned) once into the cache
and loaded from there on later runs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_model, read_meta
from ..errors import BioattnError
from ..train import TrainConfig, train
from .settings import DemoSettings, TaskDemoSettings


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def train_or_load(config: TrainConfig, what: str, start: str, retrain: bool,
                  log: Callable[[str], None]) -> tuple[Any, dict, float]:
    """The best checkpoint of the run ``config`` writes: loaded from its run directory when a
    usable one is there (and ``retrain`` is off), else trained anew (``start`` is logged first).
    Returns the model, its metadata and the training seconds (0 when loaded)."""
    run_dir = Path(config.output)
    if not retrain and (run_dir / "best" / "model.safetensors").exists():
        try:
            model = load_model(run_dir / "best")
        except BioattnError as exc:  # written by another version of the model code
            log(f"{what}: the cached checkpoint cannot be used ({exc}); training again")
        else:
            log(f"{what}: using the cached checkpoint {run_dir / 'best'}")
            return model, read_meta(run_dir / "best"), 0.0
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log(start)
    t0 = time.perf_counter()
    train(config)
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


def train_classifier(label: str, name: str, args: dict, settings: DemoSettings, ckpt_root: Path,
                     retrain: bool, progress: bool, log) -> tuple[Any, dict, float]:
    config = TrainConfig(
        model=name, data=settings.data, output=str(ckpt_root / slug(label)), recipe="small",
        model_args=dict(args), epochs=settings.epochs, batch_size=settings.batch_size, base_lr=settings.base_lr,
        warmup_epochs=min(1, settings.epochs - 1), seed=settings.seed, progress=progress,
        tensorboard=False, device="cpu" if not torch.cuda.is_available() else "auto",
    )
    return train_or_load(config, label, f"[bold]training {label}[/] ({name} {args or ''})", retrain, log)
