"""What every suite needs: the device, batched loaders over a subset, progress bars, and the
mapping between normalised tensors and pixels."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import BioattnError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``) picks the GPU when there is one."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BioattnError(f"bad device '{device}': {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BioattnError(f"device {device} requested but no GPU is available")
    return dev


def limited(dataset: Dataset, limit: int | None) -> Dataset:
    """At most ``limit`` items of ``dataset``, spread evenly over it (class folders are sorted,
    so the first items would all share one class). The choice is deterministic."""
    if limit is None or limit >= len(dataset):
        return dataset
    if limit <= 0:
        raise BioattnError(f"limit must be positive, got {limit}")
    idx = np.linspace(0, len(dataset) - 1, num=limit).round().astype(int)
    return Subset(dataset, np.unique(idx).tolist())


def make_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    if batch_size <= 0:
        raise BioattnError(f"batch size must be positive, got {batch_size}")
    if workers < 0:
        raise BioattnError(f"workers must be >= 0, got {workers}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def as_dataset(data) -> Dataset:
    """A ``Dataset`` from a data set or a ``DataLoader`` over one."""
    if isinstance(data, DataLoader):
        return data.dataset
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise BioattnError(f"expected a data set of (image, label) pairs, got {type(data).__name__}")
    return data


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with ETA on stderr; yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n: prog.advance(task, n)


class Pixels:
    """Maps normalised image tensors ``(x - mean) / std`` to pixels in [0, 1] and back."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean, std = list(map(float, mean)), list(map(float, std))
        if len(mean) != len(std) or not mean:
            raise BioattnError(f"mean {mean} and std {std} must have the same, non-zero length")
        if any(s <= 0 for s in std):
            raise BioattnError(f"std must be positive, got {std}")
        self.mean_list, self.std_list = mean, std
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tensor -> pixels in [0, 1] (clamped)."""
        return (x * self.std.to(x) + self.mean.to(x)).clamp(0.0, 1.0)

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> normalised tensor."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def to_uint8(self, x: torch.Tensor) -> np.ndarray:
        """Normalised ``(B, C, H, W)`` -> uint8 ``(B, H, W, C)`` images."""
        unit = self.to_unit(x.detach().float().cpu())
        return (unit * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    def from_uint8(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` images -> normalised ``(B, C, H, W)`` float tensor."""
        unit = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        return self.from_unit(unit)


class PixelModel(nn.Module):
    """``model`` taking pixels in [0, 1]: normalises inside, and answers with the logits of one
    step of a multi-step model (``step`` 1-based; ``None`` = the final prediction).

    ``steps`` sets how many steps (glimpses, passes) the model runs.
    """

    def __init__(self, model: nn.Module, pixels: Pixels, step: int | None = None,
                 steps: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.pixels = pixels
        self.step = step
        self.steps = steps

    def all_readouts(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every step, ``(T, B, K)``."""
        from ..protocol import forward_readouts

        return forward_readouts(self.model, self.pixels.from_unit(x), steps=self.steps).all_readouts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..protocol import forward_readouts, has_readouts

        if self.step is None and self.steps is None and not has_readouts(self.model):
            return self.model(self.pixels.from_unit(x))
        out = forward_readouts(self.model, self.pixels.from_unit(x), steps=self.steps)
        if self.step is None:
            return out.logits
        steps = out.all_readouts()
        if not 1 <= self.step <= steps.shape[0]:
            raise BioattnError(f"attack step {self.step} is outside the model's 1..{steps.shape[0]} steps")
        return steps[self.step - 1]


def is_stochastic(model: nn.Module) -> bool:
    """Whether the model samples at evaluation (random fixations): a true ``stochastic`` or
    ``eval_sample`` attribute on the model."""
    from ..protocol import unwrap

    inner = unwrap(model)
    return bool(getattr(inner, "stochastic", False) or getattr(inner, "eval_sample", False))
