"""Timing helpers the benchmark scripts share: device, mixed precision, alternating rounds.

The scripts run as ``python benchmarks/<script>.py``, which puts this folder on ``sys.path``, and
import this module as ``timing``.

A benchmark wraps each model in a :class:`DeviceRunner` (usually a :class:`ModelRunner`) whose
``step(mode)`` runs one eval forward or one training step, and times the runners with
:func:`time_rounds`: the runners take turns, one step each, round after round, so that load from
other processes falls on all of them alike. Each runner's times are then reduced to one number:
the median, or the fastest (the round least disturbed by other work). Beside them: the ``--device``
and ``--amp`` options, FLOP counting and the head of a results table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

# --amp value -> autocast type (None: full precision, no autocast)
AMP: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
AMP_HELP = "autocast type: bf16, fp16 (with loss scaling) or none (default)"
CPU = torch.device("cpu")


def parse_amp(text: str) -> torch.dtype | None:
    """The autocast type an ``--amp`` value names: ``bf16``, ``fp16`` or ``none`` (no autocast)."""
    try:
        return AMP[text]
    except KeyError:
        raise ValueError(f"unknown amp {text!r} (choose from {', '.join(AMP)})") from None


def add_device_options(parser: argparse.ArgumentParser, amps: Sequence[str] = tuple(AMP),
                       amp_help: str = AMP_HELP) -> None:
    """Adds ``--device`` (cpu or cuda, default cpu) and ``--amp`` (one of ``amps``, default none)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=tuple(amps), default="none", help=amp_help)


def parse_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """The device a ``--device`` value names (the first GPU for ``cuda``); a parser error when it
    is ``cuda`` and no GPU is available."""
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    return torch.device("cuda:0" if name == "cuda" else "cpu")


def sync(device: torch.device) -> None:
    """Waits until the work queued on ``device`` is done (nothing to wait for off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceRunner:
    """Work on one device under one autocast type.

    Subclasses hold a model with its inputs and define ``step(mode)``, one eval forward
    (``"eval"``) or one training step (``"train"``); :func:`time_rounds` times it.
    :class:`ModelRunner` defines the usual step. Under float16 the runner scales the loss
    (``self.scaler``) so that small gradients do not vanish.
    """

    def __init__(self, device: torch.device = CPU, amp: torch.dtype | None = None) -> None:
        self.device = device
        self.amp = amp
        self.scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the runner's type on its device; a context that does nothing when the
        type is None."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def sync(self) -> None:
        """Waits until the work queued on the runner's device is done."""
        sync(self.device)

    def optimise(self, loss: torch.Tensor, optimiser: torch.optim.Optimizer) -> None:
        """Clears the gradients, back-propagates ``loss`` and takes one optimiser step (with loss
        scaling under float16)."""
        optimiser.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimiser)
            self.scaler.update()
        else:
            loss.backward()
            optimiser.step()

    def timed(self, fn: Callable[..., object], *args: object) -> float:
        """Seconds that ``fn(*args)`` takes, from an idle device to the end of its device work."""
        self.sync()
        start = time.perf_counter()
        fn(*args)
        self.sync()
        return time.perf_counter() - start

    def step(self, mode: str) -> None:
        """Runs one eval forward (``"eval"``) or one training step (``"train"``)."""
        raise NotImplementedError


class ModelRunner(DeviceRunner):
    """One model with its optimiser, on one device under one autocast type.

    Subclasses set ``self.model``, ``self.optimiser`` and ``self.x`` (the batch of an eval step) and
    define :meth:`loss`. ``step("eval")`` runs one forward of the eval batch under autocast with
    gradients off (``eval_grad_mode``: ``torch.no_grad``, or ``torch.inference_mode`` in a
    subclass that sets it); ``step("train")`` computes :meth:`loss` under autocast and takes one
    optimiser step.
    """

    model: torch.nn.Module
    optimiser: torch.optim.Optimizer
    x: torch.Tensor
    eval_grad_mode: Callable[[], contextlib.AbstractContextManager] = torch.no_grad

    def loss(self) -> torch.Tensor:
        """The training loss of one batch (run in training mode, under autocast)."""
        raise NotImplementedError

    def step(self, mode: str) -> None:
        if mode == "eval":
            self.model.eval()
            with self.eval_grad_mode(), self.autocast():
                self.model(self.x)
            return
        self.model.train()
        with self.autocast():
            loss = self.loss()
        self.optimise(loss, self.optimiser)


def time_rounds(runners: Mapping[str, DeviceRunner], mode: str, rounds: int,
                reduce: Callable[[Iterable[float]], float] = statistics.median,
                warmup: int = 1) -> dict[str, float]:
    """Seconds of one ``step(mode)`` of each runner, by name.

    ``warmup`` untimed rounds, then ``rounds`` timed ones; in every round each runner takes one
    step in turn. Each runner's timed steps are reduced by ``reduce``: ``statistics.median``
    (the default) or ``min`` for the fastest.
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(warmup + rounds):
        for name, runner in runners.items():
            seconds = runner.timed(runner.step, mode)
            if round_ >= warmup:
                times[name].append(seconds)
    return {name: reduce(t) for name, t in times.items()}


def print_header(header: str) -> None:
    """Prints the column header of a results table and a rule as wide under it."""
    print(header)
    print("-" * len(header))


def count_flops(fn: Callable[..., object], *args: object) -> int:
    """FLOPs that torch counts in ``fn(*args)`` (independent of machine load)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()
