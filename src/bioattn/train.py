"""Training: the DeiT recipe through timm's utilities, from one CPU to many GPU nodes.

``train(TrainConfig(...))`` is the Python entry point; ``bioattn train`` parses its flags into a
:class:`TrainConfig`. Launch on several processes with ``torchrun --nproc_per_node=N -m bioattn
train ...``: each process takes ``batch_size`` images per step (DDP, distributed and
repeated-augmentation samplers), rank 0 logs and writes checkpoints.

A run directory holds ``config.json``, ``log.jsonl`` (one record per epoch), ``tb/``
(TensorBoard scalars), and the checkpoints ``last/`` and ``best/`` (see
:mod:`bioattn.checkpoint`; ``last/`` also holds the trainer state). ``resume=<run dir>``
continues a run; every random draw of an epoch is seeded from (seed, epoch, rank), so a run that
was killed and resumed ends with the same weights as one never interrupted.

Recipes: settings left at ``None`` come from a recipe. ``deit`` is SPEC §4 (300 epochs, AdamW
lr 5e-4 x batch/512, warmup 5, RandAugment, mixup/cutmix, random erasing, repeated augmentation,
EMA, label smoothing, drop-path 0.1). ``small`` suits the embedded data on a CPU (no heavy
augmentation: the object covers a fifth of the image, so random crops would cut it away).
``auto`` picks ``small`` for the embedded data and ``deit`` otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from . import checkpoint as ckpt
from .distributed import DistInfo, all_reduce_sum, all_true, barrier, cleanup, init_distributed
from .errors import BioattnError, NonFiniteLossError
from .fileio import atomic_dir, atomic_write_text
from .protocol import after_train_step, compute_loss, final_logits, forward_readouts, unwrap

RECIPES: dict[str, dict[str, Any]] = {
    "deit": dict(
        epochs=300, base_lr=5e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=5, weight_decay=0.05,
        smoothing=0.1, mixup=0.8, cutmix=1.0, aa="rand-m9-mstd0.5-inc1", color_jitter=0.4,
        reprob=0.25, hflip=0.5, repeated_aug=True, drop_path=0.1, model_ema=True,
        model_ema_decay=0.99996, random_resized_crop=True,
    ),
    "small": dict(
        epochs=10, base_lr=2e-3, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=1, weight_decay=0.05,
        smoothing=0.1, mixup=0.0, cutmix=0.0, aa=None, color_jitter=0.0, reprob=0.0, hflip=0.0,
        repeated_aug=False, drop_path=0.0, model_ema=False, model_ema_decay=0.999,
        random_resized_crop=False,
    ),
}


@dataclass
class TrainConfig:
    model: str
    data: str = "embedded"
    output: str | None = None
    recipe: str = "auto"
    model_args: dict[str, Any] = field(default_factory=dict)
    img_size: int | None = None
    epochs: int | None = None
    batch_size: int = 128
    base_lr: float | None = None
    lr: float | None = None
    min_lr: float | None = None
    warmup_lr: float | None = None
    warmup_epochs: int | None = None
    weight_decay: float | None = None
    opt: str = "adamw"
    sched: str = "cosine"
    clip_grad: float | None = None
    smoothing: float | None = None
    mixup: float | None = None
    cutmix: float | None = None
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    aa: str | None = None
    color_jitter: float | None = None
    reprob: float | None = None
    hflip: float | None = None
    random_resized_crop: bool | None = None
    repeated_aug: bool | None = None
    drop_path: float | None = None
    model_ema: bool | None = None
    model_ema_decay: float | None = None
    amp: bool = True
    amp_dtype: str = "float16"
    device: str = "auto"
    seed: int = 0
    workers: int = 0
    resume: str | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    skip_bad_images: bool = False
    progress: bool = True
    tensorboard: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with every recipe setting filled in."""
        from .data import is_embedded

        name = self.recipe
        if name == "auto":
            name = "small" if is_embedded(self.data) else "deit"
        if name not in RECIPES:
            raise BioattnError(f"unknown recipe '{self.recipe}' (choose from auto, {', '.join(RECIPES)})")
        values = {k: v for k, v in dataclasses.asdict(self).items()}
        for key, default in RECIPES[name].items():
            if values.get(key) is None:
                values[key] = default
        values["recipe"] = name
        return TrainConfig(**values)


# ------------------------------------------------------------------------------------------
# set-up helpers
# ------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


def rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _build_model(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    from .models import create_model

    args = dict(cfg.model_args)
    args["num_classes"] = num_classes
    if cfg.img_size is not None:
        args["img_size"] = cfg.img_size
    train_only = {"drop_path_rate": cfg.drop_path} if cfg.drop_path else {}
    try:
        model = create_model(cfg.model, **args, **train_only)
    except BioattnError as exc:
        if train_only and "drop_path_rate" in str(exc):
            print(f"note: {cfg.model} has no drop-path; training without it", file=sys.stderr)
            model = create_model(cfg.model, **args)
        else:
            raise
    return model, args


def data_config(model_name: str, img_size: int | None = None) -> dict[str, Any]:
    """Input size, normalisation and crop of a registered model, from its ``pretrained_cfg``."""
    from timm.models import get_pretrained_cfg

    from .models import create_model

    pc = get_pretrained_cfg(model_name)
    if pc is None:  # unknown name: let create_model raise its clear error
        create_model(model_name)
    size = img_size or pc.input_size[-1]
    return {"img_size": size, "mean": tuple(pc.mean), "std": tuple(pc.std), "crop_pct": pc.crop_pct}


def _limit(ds, n: int | None):
    if n is None or n >= len(ds):
        return ds
    sub = Subset(ds, range(n))
    for attr in ("classes", "num_classes"):
        setattr(sub, attr, getattr(ds, attr))
    return sub


class _Shard(Subset):
    """Every ``world``-th sample from ``rank`` on: an evaluation shard without padding."""

    def __init__(self, ds, rank: int, world: int) -> None:
        super().__init__(ds, range(rank, len(ds), world))


# ------------------------------------------------------------------------------------------
# progress and logs
# ------------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int):
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, info="")

    def update(self, task, advance: int = 1, info: str | None = None) -> None:
        if self._progress is not None and task is not None:
            kw = {"info": info} if info is not None else {}
            self._progress.update(task, advance=advance, **kw)

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, flush=True)


def evaluate_distributed(model: nn.Module, loader: DataLoader, info: DistInfo) -> dict[str, float]:
    """Top-1/top-5/loss over this process's shard, summed over all processes."""
    model.eval()
    totals = [0.0, 0.0, 0.0, 0.0]  # correct1, correct5, loss_sum, n
    with torch.no_grad():
        for images, targets in loader:
            images, targets = images.to(info.device), targets.to(info.device)
            logits = forward_readouts(model, images).logits.float()
            totals[2] += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
            totals[0] += top[:, 0].sum().item()
            totals[1] += top.any(dim=1).sum().item()
            totals[3] += targets.shape[0]
    c1, c5, loss, n = all_reduce_sum(totals, info)
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan")}
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n}


# ------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------
def _save(run_dir: Path, name: str, model: nn.Module, meta: dict, trainer_state: dict | None) -> None:
    def fill(tmp: Path) -> None:
        ckpt.write_checkpoint_files(tmp, model, meta)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / ckpt.TRAINER_STATE)

    target = run_dir / name
    try:
        atomic_dir(target, fill)
    except OSError as exc:
        raise BioattnError(
            f"could not write checkpoint {target}: {exc.strerror or exc}; the previous checkpoint is intact"
        ) from None


def _load_resume(resume: str) -> tuple[Path, TrainConfig, dict]:
    run_dir = Path(resume)
    if run_dir.name in ("last", "last.old") or (run_dir / ckpt.WEIGHTS).exists():
        run_dir = run_dir.parent
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise BioattnError(f"cannot resume: {config_path} not found")
    last = ckpt.resolve_checkpoint_dir(run_dir / "last")
    state_path = last / ckpt.TRAINER_STATE
    if not state_path.exists():
        raise BioattnError(f"cannot resume: no trainer state in {last}")
    saved = json.loads(config_path.read_text())
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BioattnError(f"cannot read trainer state {state_path}: {exc}".splitlines()[0]) from None
    return run_dir, TrainConfig(**saved), state


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a model. Returns the run directory, the last epoch's metrics, the best validation
    top-1, and the trained ``model`` (and its ``ema`` copy when EMA is on)."""
    resume_state = None
    if config.resume:
        run_dir, saved_cfg, resume_state = _load_resume(config.resume)
        overrides = {k: getattr(config, k) for k in ("device", "workers", "progress", "tensorboard")}
        if config.epochs is not None:
            overrides["epochs"] = config.epochs
        cfg = dataclasses.replace(saved_cfg, resume=None, **overrides).resolved()
    else:
        cfg = config.resolved()
        run_dir = Path(cfg.output or f"runs/{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")

    info = init_distributed(cfg.device)
    try:
        return _train(cfg, run_dir, info, resume_state)
    except BaseException as exc:
        if info.enabled:
            # the traceback's frames keep the DDP wrapper alive; it must go before the group does
            traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        cleanup(info)


def _train(cfg: TrainConfig, run_dir: Path, info: DistInfo, resume_state: dict | None) -> dict[str, Any]:
    from timm.data import Mixup
    from timm.data.distributed_sampler import RepeatAugSampler
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, NativeScaler

    from .data import Augmentation, build_dataset

    seed_everything(cfg.seed)
    device = info.device

    # ---- data --------------------------------------------------------------------------
    dcfg = data_config(cfg.model, cfg.img_size)
    aug = Augmentation(
        auto_augment=None if (cfg.aa or "none").lower() == "none" else cfg.aa, color_jitter=cfg.color_jitter, re_prob=cfg.reprob, hflip=cfg.hflip,
        random_resized_crop=cfg.random_resized_crop,
    )
    train_set = build_dataset(cfg.data, "train", dcfg["img_size"], dcfg["mean"], dcfg["std"],
                              train=True, aug=aug, skip_bad_images=cfg.skip_bad_images)
    val_set = build_dataset(cfg.data, "val", dcfg["img_size"], dcfg["mean"], dcfg["std"],
                            train=False, skip_bad_images=cfg.skip_bad_images,
                            crop_pct=dcfg["crop_pct"], classes=list(train_set.classes))
    classes = list(train_set.classes)
    num_classes = len(classes)
    train_set, val_set = _limit(train_set, cfg.limit_train), _limit(val_set, cfg.limit_val)
    if len(train_set) < cfg.batch_size * info.world_size:
        raise BioattnError(
            f"the training set has {len(train_set)} images, fewer than one global batch "
            f"({cfg.batch_size} x {info.world_size} processes)"
        )

    if cfg.repeated_aug:
        sampler = RepeatAugSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True)
    else:
        sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=True)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler,
                              num_workers=cfg.workers, drop_last=True,
                              pin_memory=device.type == "cuda")
    val_loader = DataLoader(_Shard(val_set, info.rank, info.world_size), batch_size=cfg.batch_size,
                            shuffle=False, num_workers=cfg.workers)

    # ---- model, optimiser, schedule ----------------------------------------------------
    seed_everything(cfg.seed)
    model, model_args = _build_model(cfg, num_classes)
    model.to(device)
    total_batch = cfg.batch_size * info.world_size
    lr = cfg.lr if cfg.lr is not None else cfg.base_lr * total_batch / 512
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay)
    updates_per_epoch = len(train_loader)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr,
        warmup_epochs=cfg.warmup_epochs, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    scaler = NativeScaler() if use_amp and amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay, device=device) if cfg.model_ema else None

    mixup_fn = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup_fn = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                         switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing,
                         num_classes=num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    start_epoch, global_step, best_top1 = 0, 0, -1.0
    if resume_state is not None:
        ckpt.load_weights(model, ckpt.resolve_checkpoint_dir(run_dir / "last"))
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if ema is not None and resume_state.get("ema") is not None:
            ema.module.load_state_dict(resume_state["ema"])
        if scaler is not None and resume_state.get("scaler") is not None:
            scaler.load_state_dict(resume_state["scaler"])
        start_epoch = int(resume_state["epoch"]) + 1
        global_step = int(resume_state["global_step"])
        best_top1 = float(resume_state["best_top1"])
        set_rng_states(resume_state["rng"])

    train_model: nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(getattr(model, "has_unused_parameters", False)),
        )

    meta = ckpt.model_meta(cfg.model, model_args, num_classes, classes, dcfg["img_size"],
                           dcfg["mean"], dcfg["std"], data=cfg.data)
    writer = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))

    last_metrics: dict[str, Any] = {}
    with _Progress(cfg.progress and info.is_main) as progress:
        if resume_state is None:
            progress.log(
                f"training {cfg.model} on {cfg.data} ({len(train_set)} train / {len(val_set)} val images, "
                f"{num_classes} classes) for {cfg.epochs} epochs, recipe {cfg.recipe}, "
                f"{info.world_size} process(es) on {device.type}, global batch {total_batch}, lr {lr:.2e}"
            )
        else:
            progress.log(f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.epochs}")
        for epoch in range(start_epoch, cfg.epochs):
            seed_everything(epoch_seed(cfg.seed, epoch, info.rank))
            sampler.set_epoch(epoch)
            train_model.train()
            task = progress.task(f"epoch {epoch + 1}/{cfg.epochs}", updates_per_epoch)
            loss_sum = correct = seen = 0.0
            t0 = time.perf_counter()
            for images, targets in train_loader:
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                hard_targets = targets
                if mixup_fn is not None:
                    images, targets = mixup_fn(images, targets)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    output = train_model(images)
                    loss = compute_loss(train_model, output, targets, criterion)
                if not all_true(bool(torch.isfinite(loss).item()), info):
                    kept = (f"the last good checkpoint is {run_dir / 'last'}" if (run_dir / "last").exists()
                            else "no checkpoint had been written yet")
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch + 1}, step {global_step + 1}: training stopped; "
                        f"{kept} (a lower --lr or --clip-grad may help)"
                    )
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler(loss, optimizer, clip_grad=cfg.clip_grad, parameters=model.parameters())
                else:
                    loss.backward()
                    if cfg.clip_grad:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    optimizer.step()
                global_step += 1
                scheduler.step_update(num_updates=global_step)
                if ema is not None:
                    ema.update(model, step=global_step)
                after_train_step(model, global_step)

                n = images.shape[0]
                loss_sum += loss.item() * n
                if mixup_fn is None:
                    correct += (final_logits(output).argmax(-1) == hard_targets).sum().item()
                seen += n
                elapsed = time.perf_counter() - t0
                acc = f" acc {100 * correct / seen:5.1f}%" if mixup_fn is None else ""
                progress.update(task, info=(
                    f"loss {loss_sum / seen:.4f}{acc} lr {optimizer.param_groups[0]['lr']:.2e} "
                    f"{seen * info.world_size / max(elapsed, 1e-9):.0f} img/s"))
            scheduler.step(epoch + 1)
            train_time = time.perf_counter() - t0
            loss_total, correct_total, seen_total = all_reduce_sum([loss_sum, correct, seen], info)
            val = evaluate_distributed(model, val_loader, info)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": global_step,
                "train_loss": loss_total / seen_total,
                "lr": optimizer.param_groups[0]["lr"],
                "img_per_s": seen_total / train_time,
                "val_top1": val["top1"],
                "val_top5": val["top5"],
                "val_loss": val["loss"],
            }
            if mixup_fn is None:
                record["train_top1"] = 100.0 * correct_total / seen_total
            if ema is not None:
                ema_val = evaluate_distributed(ema.module, val_loader, info)
                record.update({"ema_val_top1": ema_val["top1"], "ema_val_top5": ema_val["top5"]})
            skipped = sum(getattr(ds, "skipped", lambda: 0)() for ds in (_root(train_set), _root(val_set)))
            if skipped:
                record["skipped_images"] = skipped
            is_best = val["top1"] > best_top1
            best_top1 = max(best_top1, val["top1"])
            record["best_val_top1"] = best_top1
            if info.is_main:
                state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "ema": ema.module.state_dict() if ema is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "epoch": epoch,
                    "global_step": global_step,
                    "best_top1": best_top1,
                    "rng": rng_states(),
                }
                epoch_meta = dict(meta, epoch=epoch + 1, metrics=record)
                _save(run_dir, "last", model, epoch_meta, state)
                if is_best:
                    _save(run_dir, "best", model, epoch_meta, None)
                with open(run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key, value in record.items():
                        if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                            writer.add_scalar(key, value, epoch + 1)
                    writer.flush()
                progress.log(
                    f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, val top-1 {val['top1']:.2f}% "
                    f"top-5 {val['top5']:.2f}%, {record['img_per_s']:.0f} img/s"
                    + (f", skipped {skipped} unreadable images" if skipped else "")
                )
            barrier(info)
            last_metrics = record
    if writer is not None:
        writer.close()
    return {"run_dir": str(run_dir), "metrics": last_metrics, "best_val_top1": best_top1,
            "model": model, "ema": ema.module if ema is not None else None}


def _root(ds):
    while isinstance(ds, Subset):
        ds = ds.dataset
    while hasattr(ds, "base"):
        ds = ds.base
    return ds
