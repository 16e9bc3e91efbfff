"""Training: the DeiT recipe through timm's utilities, from one CPU to many GPU nodes.

``train(TrainConfig(...))`` is the Python entry point; ``bioattn train`` parses its flags into a
:class:`TrainConfig`. Launch on several processes with ``torchrun --nproc_per_node=N -m bioattn
train ...``: each process takes ``batch_size`` images per optimizer step (DDP, distributed and
repeated-augmentation samplers), rank 0 logs and writes checkpoints.

A run directory holds ``config.json``, ``log.jsonl`` (one record per epoch), ``tb/``
(TensorBoard scalars), and the checkpoints ``last/`` and ``best/`` (see
:mod:`bioattn.checkpoint`; ``last/`` also holds the trainer state). ``resume=<run dir>``
continues a run; every random draw of an epoch is seeded from (seed, epoch, rank), so a run that
was killed and resumed ends with the same weights as one never interrupted. The run directory is
managed by :mod:`bioattn.runs`; stage 1, the data sets and loaders, is :mod:`bioattn.loaders`.

Recipes: settings left at ``None`` come from a recipe. ``deit`` is described in docs/training.md (300 epochs, AdamW
lr 5e-4 x batch/512, warmup 5, RandAugment, mixup/cutmix, random erasing, repeated augmentation,
EMA, label smoothing, drop-path 0.1). ``small`` suits the embedded data on a CPU (no heavy
augmentation: the object covers a fifth of the image, so random crops would cut it away).
``auto`` picks ``small`` for the embedded data and ``deit`` otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .config import TrainConfig
from .data.subsets import base_dataset
from .distributed import DistInfo, all_reduce_min_, all_reduce_sum, barrier, cleanup, init_distributed
from .errors import BioattnError, NonFiniteLossError
from .fileio import atomic_dir, atomic_write_text
from .loaders import TrainData, build_data, seed_loader_workers
from .models import create_model
from .progress import Progress
from .protocol import (
    BackboneInitialised,
    LabelPrompted,
    ReadoutModel,
    after_train_step,
    capable,
    compute_loss,
    evaluating,
    final_logits,
    unwrap,
)
from .randomness import epoch_seed, rng_states, seed_everything, set_rng_states
from .runs import check_run_dir_keeps_inputs, load_resume, new_run_dir, prior_run
from .tasks.base import Task
from .tasks.registry import get_task


# ------------------------------------------------------------------------------------------
# stage 2: model, objective, optimiser and schedule
# ------------------------------------------------------------------------------------------
@dataclass
class Trainee:
    """Everything that changes as the model trains, and what changes it."""

    model: nn.Module
    model_args: dict[str, Any]
    train_model: nn.Module  # what the training step calls (DDP-wrapped when distributed, compiled on demand)
    criterion: nn.Module
    mixup: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    lr: float
    autocast: dict[str, Any]
    scaler: Any
    ema: Any
    ddp: DistributedDataParallel | None = None  # the DDP wrapper, whose no_sync skips a gradient all-reduce


def _build_model(cfg: TrainConfig, name: str, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    args = dict(cfg.model_args)
    args["num_classes"] = num_classes
    if cfg.img_size is not None:
        args["img_size"] = cfg.img_size
    # a drop_path_rate model argument equals --drop-path (TrainConfig checks): passed once
    train_only = {"drop_path_rate": cfg.drop_path} if cfg.drop_path and "drop_path_rate" not in args else {}
    try:
        model = create_model(name, **args, **train_only)
    except BioattnError as exc:
        if train_only and "drop_path_rate" in str(exc):
            print(f"note: {name} has no drop-path; training without it", file=sys.stderr)
            model = create_model(name, **args)
        else:
            raise
    return model, args


def load_init_weights(model: nn.Module, path: str | Path) -> str:
    """Load the weights at ``path`` (``--init``) into ``model`` for fine-tuning: every key must
    fit, except a classifier of another number of classes, which keeps its fresh weights. A
    segmentation model takes a classification checkpoint into its backbone (position embedding
    resized to its input size, the classifier left out). The model family's
    ``checkpoint_filter_fn`` adapts the state dict (grids of another image size resized). Returns
    a note saying what was loaded, resized and left out."""
    state = ckpt.read_state_dict(path)
    if capable(model, BackboneInitialised) and unwrap(model).accepts_backbone_state(state):
        return f"--init {path}: " + unwrap(model).load_backbone_state(state)
    notes: list[str] = []
    left_out = ckpt.load_state(model, state, f"--init {path}", notes=notes, fresh_classifier=True)
    loaded = len(state) - len(left_out)
    resized = "".join(f"; {note}" for note in notes)
    if not left_out:
        return f"--init {path}: loaded all {loaded} tensors{resized}"
    classes = next(state[k].shape[0] for k in left_out if k.endswith(".weight"))
    return (f"--init {path}: loaded {loaded} tensors{resized}; left out {', '.join(left_out)} (a classifier "
            f"for {classes} classes; this model has {getattr(model, 'num_classes', '?')}), which "
            "starts from random weights")


def warmup_epochs(cfg: TrainConfig) -> int:
    """The recipe's warm-up, at most half the run (a one-epoch run gets none)."""
    return min(cfg.warmup_epochs, cfg.epochs // 2)


def amp_dtype(setting: str, device: torch.device, bf16_supported: bool | None = None) -> torch.dtype:
    """The mixed-precision type of ``--amp-dtype`` on ``device``: ``float16`` or ``bfloat16`` as
    named; ``auto``: bfloat16 on a GPU that supports it (``bf16_supported``, by default
    ``torch.cuda.is_bf16_supported()``), else float16. On other devices, which train in full
    precision, bfloat16 (the type CPU autocast accepts)."""
    if setting in ("float16", "bfloat16"):
        return torch.float16 if setting == "float16" else torch.bfloat16
    if setting != "auto":
        raise BioattnError(f"--amp-dtype must be auto, float16 or bfloat16; got {setting!r}")
    if device.type != "cuda":
        return torch.bfloat16
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16


def fused_optimizer_args(opt: str, device_type: str) -> dict[str, Any]:
    """``{"fused": True}`` where timm's optimizer ``opt`` is a torch optimizer with a fused
    kernel (AdamW, Adam, SGD) and the device is a GPU: one kernel updates every parameter, and
    with loss scaling an inf/NaN gradient skips the step on the device; else no arguments."""
    # deferred: timm's optimizer table is only needed here
    from timm.optim import get_optimizer_class

    if device_type != "cuda" or opt.lower().startswith("lookahead_"):
        return {}
    try:
        cls = get_optimizer_class(opt.lower(), bind_defaults=False)
    except (ValueError, KeyError):
        return {}
    fused_kernel = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
    if isinstance(cls, type) and issubclass(cls, fused_kernel) and "fused" in inspect.signature(cls).parameters:
        return {"fused": True}
    return {}


def enable_grad_checkpointing(model: nn.Module, name: str) -> None:
    """Recompute the blocks' activations in the backward pass (``--grad-checkpointing``) through
    the model's ``set_grad_checkpointing``; a model without it is refused."""
    setter = getattr(model, "set_grad_checkpointing", None)
    refused = (f"--grad-checkpointing: {name} has no gradient checkpointing (the transformer families "
               "have it: ViT, AbSViT, RVT and VARS, GFNet)")
    if setter is None:
        raise BioattnError(refused)
    try:
        setter(True)
    except (AssertionError, NotImplementedError):
        raise BioattnError(refused) from None


def build_trainee(cfg: TrainConfig, data: TrainData, info: DistInfo) -> Trainee:
    """The model (seeded), its loss (soft targets with mixup/cutmix, label smoothing), the timm
    optimiser (fused on GPUs) and per-update schedule, mixed precision, the EMA copy, and the
    speed settings: gradient checkpointing, DDP, torch.compile."""
    device = info.device
    task = data.task
    num_classes = len(data.classes)
    task.check_settings(cfg)
    seed_everything(cfg.seed)
    model, model_args = _build_model(cfg, task.model_name(cfg.model), num_classes)
    if cfg.init:
        note = load_init_weights(model, cfg.init)
        if info.is_main:
            print(f"note: {note}", file=sys.stderr)
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(model, cfg.model)
    model.to(device)
    lr = cfg.lr if cfg.lr is not None else cfg.base_lr * cfg.batch_size * cfg.grad_accum * info.world_size / 512
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay,
                                    **fused_optimizer_args(cfg.opt, device.type))
    scheduler, _ = create_scheduler_v2(
        # a small global batch can scale the peak below the recipe's floor: the schedule never rises
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, min_lr=min(cfg.min_lr, lr),
        warmup_lr=min(cfg.warmup_lr, lr),
        warmup_epochs=warmup_epochs(cfg), step_on_epochs=False,
        updates_per_epoch=len(data.train_loader) // cfg.grad_accum,
    )
    use_amp = cfg.amp and device.type == "cuda"
    dtype = amp_dtype(cfg.amp_dtype, device)
    scaler = NativeScaler() if use_amp and dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay, device=device) if cfg.model_ema else None

    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
    criterion = task.criterion(cfg, num_classes)

    train_model: nn.Module = ReadoutModel(model)  # every readout and the auxiliary losses
    if info.enabled and task.spec.sync_batchnorm:
        # the batch statistics over every process's images (segmentation heads, as in the reference set-up)
        train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
    ddp = None
    if info.enabled:
        train_model = ddp = DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(getattr(model, "has_unused_parameters", False)),
        )
    if cfg.compile:
        train_model = torch.compile(train_model, mode=cfg.compile_mode)
    autocast = {"device_type": device.type, "dtype": dtype, "enabled": use_amp}
    return Trainee(model, model_args, train_model, criterion, mixup, optimizer, scheduler, lr,
                   autocast, scaler, ema, ddp)


def restore(trainee: Trainee, run_dir: Path, state: dict) -> tuple[int, int, float]:
    """Load a resumed run's weights and trainer state; returns the first epoch to run, the
    optimizer steps taken so far and the best validation top-1."""
    ckpt.load_weights(trainee.model, ckpt.resolve_checkpoint_dir(run_dir / "last"))
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.scheduler.load_state_dict(state["scheduler"])
    if trainee.ema is not None and state.get("ema") is not None:
        trainee.ema.module.load_state_dict(state["ema"])
    if trainee.scaler is not None and state.get("scaler") is not None:
        trainee.scaler.load_state_dict(state["scaler"])
    set_rng_states(state["rng"])
    best = state.get("best_score", state.get("best_top1", -1.0))  # older trainer states name it best_top1
    return int(state["epoch"]) + 1, int(state["global_step"]), float(best)


# ------------------------------------------------------------------------------------------
# stage 3: one epoch
# ------------------------------------------------------------------------------------------
# An optimizer step number no run reaches: "no non-finite loss so far".
_NO_BAD_STEP = 2**62


class EpochMeter:
    """An epoch's running figures, kept on the device so that a training step never waits for
    the host: the loss summed over images, the training score's hits and count, and the first
    optimizer step whose loss was not finite. :meth:`read` fetches them at once."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x images, hits, count
        self.first_bad = torch.full((1,), _NO_BAD_STEP, dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, images: int, score: tuple[Any, Any] | None, step: int) -> None:
        loss = loss.detach()
        self.first_bad = torch.minimum(self.first_bad, torch.where(torch.isfinite(loss), _NO_BAD_STEP, step))
        self.sums[0] += loss.double() * images
        if score is not None:
            self.sums[1] += score[0]
            self.sums[2] += score[1]

    def read(self, info: DistInfo) -> tuple[int | None, list[float]]:
        """The first optimizer step with a non-finite loss on any process (None if there was
        none) and this process's sums: one all-reduce and one host synchronisation."""
        first = all_reduce_min_(self.first_bad.clone(), info)
        values = torch.cat([first.double(), self.sums]).tolist()
        return (int(values[0]) if values[0] < _NO_BAD_STEP else None), values[1:]


def _gradient_sync(t: Trainee, last: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces the gradients only on the last batch of an accumulated step."""
    if t.ddp is None or last:
        return contextlib.nullcontext()
    return t.ddp.no_sync()


def _backward(cfg: TrainConfig, t: Trainee, loss: torch.Tensor, last: bool) -> None:
    """Add this batch's gradients (of ``loss / grad_accum``); on the last batch of a step, clip
    and step the optimizer (through the loss scaler with float16)."""
    if cfg.grad_accum > 1:
        loss = loss / cfg.grad_accum
    if t.scaler is not None:
        t.scaler(loss, t.optimizer, clip_grad=cfg.clip_grad, parameters=t.model.parameters(), need_update=last)
        return
    loss.backward()
    if last:
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.clip_grad)
        t.optimizer.step()


def train_one_epoch(cfg: TrainConfig, data: TrainData, t: Trainee, epoch: int, optimizer_steps: int,
                    run_dir: Path, progress: Progress, info: DistInfo) -> tuple[dict[str, float], int]:
    """One pass over the training set; returns the epoch's totals (summed over processes) and
    the number of optimizer steps taken so far.

    A step does not wait for the host: loss and score add up on the device (:class:`EpochMeter`),
    and every ``sync_every`` optimizer steps, and at the end, one synchronisation and one
    all-reduce read them, update the progress bar and check the loss. A non-finite loss on any
    process stops every process with :class:`NonFiniteLossError` at that check, at most
    ``sync_every`` steps after it; checkpoints are written only after an epoch whose every loss
    was finite, so weights updated by a non-finite step are never saved. With ``grad_accum`` K,
    K batches make one optimizer step (a last group of fewer than K batches is left out).
    """
    seed = epoch_seed(cfg.seed, epoch, info.rank)
    seed_everything(seed)
    seed_loader_workers(data.train_loader, seed)
    data.sampler.set_epoch(epoch)
    t.train_model.train()
    t.optimizer.zero_grad(set_to_none=True)
    accum = cfg.grad_accum
    steps = len(data.train_loader) // accum
    task = progress.task(f"epoch {epoch + 1}/{cfg.epochs}", steps)
    meter = EpochMeter(info.device)
    seen, shown, waited = 0, 0, 0.0
    batches = iter(data.train_loader)
    prompted = capable(t.model, LabelPrompted)
    start = time.perf_counter()

    def check(done: int) -> list[float]:
        bad, sums = meter.read(info)
        if bad is not None:
            kept = (f"the last good checkpoint is {run_dir / 'last'}" if (run_dir / "last").exists()
                    else "no checkpoint had been written yet")
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch + 1}, optimizer step {bad}: training stopped; {kept} "
                "(a lower --lr or --clip-grad may help)")
        nonlocal shown
        loss_sum, hits, counted = sums
        elapsed = max(time.perf_counter() - start, 1e-9)
        acc = f" {data.task.spec.train_score_label} {100 * hits / counted:5.1f}%" if counted else ""
        progress.update(task, advance=done - shown,
                        info=f"loss {loss_sum / max(seen, 1):.4f}{acc} lr {t.optimizer.param_groups[0]['lr']:.2e} "
                             f"{seen * info.world_size / elapsed:.0f} img/s, data wait {100 * waited / elapsed:.0f}%")
        shown = done
        return sums

    for step in range(steps):
        for micro in range(accum):
            fetch = time.perf_counter()
            images, targets = next(batches)
            waited += time.perf_counter() - fetch
            images = images.to(info.device, non_blocking=True)
            targets = targets.to(info.device, non_blocking=True)
            hard_targets = targets
            if t.mixup is not None:
                images, targets = t.mixup(images, targets)
            last = micro == accum - 1
            with _gradient_sync(t, last):
                with torch.autocast(**t.autocast):
                    # a label-prompted model draws its prior (and so its target) from the labels
                    output = t.train_model(images, labels=targets) if prompted else t.train_model(images)
                    loss = compute_loss(t.train_model, output, targets, t.criterion)
                _backward(cfg, t, loss, last)
            if prompted:
                hard_targets = output.extras["prompted_class"]
            score = None if t.mixup is not None else data.task.train_score(final_logits(output).detach(), hard_targets)
            meter.add(loss, images.shape[0], score, optimizer_steps + 1)
            seen += images.shape[0]
        optimizer_steps += 1
        t.optimizer.zero_grad(set_to_none=True)
        t.scheduler.step_update(num_updates=optimizer_steps)
        if t.ema is not None:
            t.ema.update(t.model, step=optimizer_steps)
        after_train_step(t.model, optimizer_steps)
        if (step + 1) % cfg.sync_every == 0 and step + 1 < steps:
            check(step + 1)
    loss_sum, hits, counted = check(steps)
    for _ in batches:  # batches short of a whole accumulated step: read, so the workers end the epoch idle
        pass
    t.scheduler.step(epoch + 1)
    seconds = time.perf_counter() - start
    loss_total, hits_total, counted_total, seen_total, waited_total, seconds_total = all_reduce_sum(
        [loss_sum, hits, counted, seen, waited, seconds], info)
    totals = {"train_loss": loss_total / seen_total, "lr": t.optimizer.param_groups[0]["lr"],
              "img_per_s": seen_total / seconds, "data_wait": waited_total / seconds_total}
    if counted_total:
        totals[f"train_{data.task.spec.train_score}"] = 100.0 * hits_total / counted_total
    return totals, optimizer_steps


# ------------------------------------------------------------------------------------------
# stage 4: validation
# ------------------------------------------------------------------------------------------
def evaluate_distributed(model: nn.Module, loader: DataLoader, info: DistInfo, task: Task,
                         num_classes: int) -> dict[str, Any]:
    """The task's validation figures (top-1/top-5, mIoU, mAP, and the loss) over every
    process's shard."""
    model.eval()
    meter = task.meter(num_classes)
    with torch.no_grad():
        for images, targets in loader:
            images, targets = images.to(info.device), targets.to(info.device)
            meter.update(task.predict(model, images, num_classes), targets)
    return task.merged(meter, info)


def _numbers(figures: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def validate(data: TrainData, t: Trainee, info: DistInfo) -> dict[str, Any]:
    """The validation figures of the model (and of its EMA copy), e.g. ``val_top1``,
    ``val_miou``, ``val_map``; per-class lists stay out of the epoch record."""
    num_classes = len(data.classes)
    record = _numbers(evaluate_distributed(t.model, data.val_loader, info, data.task, num_classes), "val_")
    if t.ema is not None:
        ema = evaluate_distributed(t.ema.module, data.val_loader, info, data.task, num_classes)
        record.update(_numbers(ema, "ema_val_"))
    skipped = sum(getattr(base_dataset(ds), "skipped", lambda: 0)() for ds in (data.train_set, data.val_set))
    if skipped:
        record["skipped_images"] = skipped
    return record


# ------------------------------------------------------------------------------------------
# stage 5: checkpoints and logs
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


def save_epoch(run_dir: Path, t: Trainee, meta: dict, record: dict, epoch: int, optimizer_steps: int,
               best_score: float, is_best: bool, writer) -> None:
    """``last/`` with the trainer state, ``best/`` when validation improved, one line of
    ``log.jsonl`` and the TensorBoard scalars."""
    state = {
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "ema": t.ema.module.state_dict() if t.ema is not None else None,
        "scaler": t.scaler.state_dict() if t.scaler is not None else None,
        "epoch": epoch,
        "global_step": optimizer_steps,
        "best_score": best_score,
        "rng": rng_states(),
    }
    epoch_meta = dict(meta, epoch=epoch + 1, metrics=record)
    _save(run_dir, "last", t.model, epoch_meta, state)
    if is_best:
        _save(run_dir, "best", t.model, epoch_meta, None)
    with open(run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(key, value, epoch + 1)
        writer.flush()


# ------------------------------------------------------------------------------------------
# checks before the first step: what would fail after minutes of work is refused at once
# ------------------------------------------------------------------------------------------
def check_settings_fit(cfg: TrainConfig, run_dir: Path, info: DistInfo) -> None:
    """Refuse, before any data is read, settings that contradict the task, the device or the
    files: a segmentation model on data without label maps, ``--decode gpu`` off the GPU, and a
    run directory inside the data it reads or holding the ``--init`` weights it would replace."""
    get_task(cfg.task).check_model_name(cfg.model, cfg.data)
    if cfg.decode == "gpu" and info.device.type != "cuda":
        raise BioattnError(f"--decode gpu decodes the images on the GPU; this run is on {info.device.type} "
                           "(--device): pass --decode cpu, or a CUDA --device")
    check_run_dir_keeps_inputs(cfg, run_dir)


def check_run_fits(cfg: TrainConfig, data: TrainData, t: Trainee, info: DistInfo) -> None:
    """Refuse, once data and model are built and before the first step, what would stop the run
    later: a ``num_classes`` model argument other than the data's, a batch too small for the
    model's batch normalisation, and a validation batch the model cannot score (checked on the
    first one)."""
    given = cfg.model_args.get("num_classes")
    if given is not None and given != len(data.classes):
        raise BioattnError(f"--model-arg num_classes={given} conflicts with the data: '{cfg.data}' has "
                           f"{len(data.classes)} classes (the model is built for the data's classes; leave "
                           "out num_classes)")
    data.task.check_batch_norm(t.model, data.task.model_name(cfg.model), cfg.batch_size, info.world_size)
    probe_validation(data, t, info)


def probe_validation(data: TrainData, t: Trainee, info: DistInfo) -> None:
    """Score the model on the first validation batch, so that a model that cannot run on the
    validation images (or labels the meter refuses) stops the run before training, not after
    the first epoch."""
    batch = next(iter(data.val_loader), None)
    if batch is None:
        return
    images, targets = batch
    model = t.model
    try:
        with evaluating(model), torch.no_grad():
            meter = data.task.meter(len(data.classes))
            meter.update(data.task.predict(model, images.to(info.device), len(data.classes)),
                         targets.to(info.device))
    except BioattnError as exc:
        raise BioattnError(f"validation would fail after the first epoch: {exc}") from None


# ------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------
def train(config: TrainConfig) -> dict[str, Any]:
    """Train a model. Returns the run directory, the last epoch's metrics, the best validation
    top-1, and the trained ``model`` (and its ``ema`` copy when EMA is on)."""
    resume_state = None
    if config.resume:
        run_dir, cfg, resume_state = load_resume(config)
    else:
        cfg = config.resolved()
        if cfg.output is not None:  # before new_run_dir clears an earlier run's files there
            check_run_dir_keeps_inputs(cfg, Path(cfg.output))
        run_dir = new_run_dir(cfg)

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
    check_settings_fit(cfg, run_dir, info)
    seed_everything(cfg.seed)
    data = build_data(cfg, info)
    t = build_trainee(cfg, data, info)
    check_run_fits(cfg, data, t, info)
    start_epoch, optimizer_steps, best_score = 0, 0, -1.0
    if resume_state is not None:
        start_epoch, optimizer_steps, best_score = restore(t, run_dir, resume_state)
    metric = f"val_{data.task.metric}"
    meta = ckpt.model_meta(data.task.model_name(cfg.model), t.model_args, len(data.classes), data.classes,
                           data.input.img_size, data.input.mean, data.input.std, data=cfg.data,
                           task=data.task.name)
    writer = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "explicit"}
        atomic_write_text(run_dir / "config.json", json.dumps(saved, indent=2))
        if cfg.tensorboard:
            # deferred: tensorboard loads slowly and is off with --no-tensorboard
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))

    record: dict[str, Any] = {}
    with Progress(cfg.progress and info.is_main, stream=sys.stdout) as progress:
        if info.is_main:
            progress.log(_start_message(cfg, data, t, info, run_dir, start_epoch))
        for epoch in range(start_epoch, cfg.epochs):
            epoch_start, epoch_cpu = time.perf_counter(), time.process_time()
            totals, optimizer_steps = train_one_epoch(cfg, data, t, epoch, optimizer_steps, run_dir,
                                                      progress, info)
            record = {"epoch": epoch + 1, "step": optimizer_steps, **totals, **validate(data, t, info)}
            record["epoch_seconds"] = round(time.perf_counter() - epoch_start, 2)
            # this process's CPU time over all its threads: unlike the wall-clock time, it does
            # not grow when other jobs share the machine
            record["epoch_cpu_seconds"] = round(time.process_time() - epoch_cpu, 2)
            is_best = record[metric] > best_score
            best_score = max(best_score, record[metric])
            record[f"best_{metric}"] = best_score
            if info.is_main:
                save_epoch(run_dir, t, meta, record, epoch, optimizer_steps, best_score, is_best, writer)
                progress.log(_epoch_message(data.task, record))
            barrier(info)
    if writer is not None:
        writer.close()
    return {"run_dir": str(run_dir), "metrics": record, "task": data.task.name, "metric": metric,
            "metric_label": data.task.metric_label,
            f"best_{metric}": best_score, "model": t.model,
            "ema": t.ema.module if t.ema is not None else None}


def _start_message(cfg: TrainConfig, data: TrainData, t: Trainee, info: DistInfo, run_dir: Path,
                   start_epoch: int) -> str:
    if start_epoch:
        return (f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.epochs} with its saved settings "
                f"(config.json); from this command: epochs {cfg.epochs}, device {info.device.type}, "
                f"workers {cfg.workers}")
    warmup = warmup_epochs(cfg)
    note = f" (warm-up shortened to {warmup} of {cfg.epochs} epochs)" if warmup < cfg.warmup_epochs else ""
    return (f"training {cfg.model} on {cfg.data} ({len(data.train_set)} train / {len(data.val_set)} val "
            f"images, {len(data.classes)} classes) for {cfg.epochs} epochs, recipe {cfg.recipe}{note}, "
            f"{info.world_size} process(es) on {info.device.type}, global batch "
            f"{cfg.batch_size * cfg.grad_accum * info.world_size}"
            f"{f' ({cfg.grad_accum} accumulated batches)' if cfg.grad_accum > 1 else ''}, lr {t.lr:.2e}; "
            f"writing {run_dir}")


def _epoch_message(task: Task, record: dict[str, Any]) -> str:
    skipped = record.get("skipped_images")
    return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, {task.summary(record)}, "
            f"{record['img_per_s']:.0f} img/s (data wait {100 * record['data_wait']:.0f}%)"
            + (f", skipped {skipped} unreadable images" if skipped else ""))


def train_or_reuse(cfg: TrainConfig, replace: bool = False, log=None) -> str:
    """Carry out the run ``cfg`` (``cfg.output`` its directory) under the one rule of
    :func:`bioattn.runs.prior_run`: reuse a finished run of the same settings, resume an
    unfinished one, else train it anew (over a run of other settings only when ``replace``).
    Returns what was done: ``"reused"``, ``"resumed"`` or ``"trained"``."""
    run_dir = Path(cfg.output)
    state = prior_run(run_dir, cfg, replace)
    say = log or (lambda message: None)
    if state == "finished":
        say(f"reusing the finished run in {run_dir}")
        return "reused"
    if state == "unfinished":
        say(f"resuming {run_dir}")
        train(TrainConfig(resume=str(run_dir), epochs=cfg.resolved().epochs, device=cfg.device, workers=cfg.workers,
                          progress=cfg.progress, tensorboard=cfg.tensorboard))
        return "resumed"
    say(f"training into {run_dir}")
    train(dataclasses.replace(cfg, overwrite=True))
    return "trained"
