"""What every suite needs: batched loaders and the mapping between normalised tensors and pixels."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.pixels import Pixels
from ..errors import BioattnError
from ..protocol import forward_readouts, has_readouts, unwrap


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


class PixelModel(nn.Module):
    """``model`` taking pixels in [0, 1]: normalises inside, and answers with the logits of one
    readout of a multi-readout model (``readout`` 1-based; ``None`` = the final prediction).

    ``readouts`` sets how many readouts (passes, glimpses) the model runs.
    """

    def __init__(self, model: nn.Module, pixels: Pixels, readout: int | None = None,
                 readouts: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.pixels = pixels
        self.readout = readout
        self.readouts = readouts

    def all_readouts(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every readout, ``(T, B, K)``."""
        return forward_readouts(self.model, self.pixels.from_unit(x), readouts=self.readouts).all_readouts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.readout is None and self.readouts is None and not has_readouts(self.model):
            return self.model(self.pixels.from_unit(x))
        out = forward_readouts(self.model, self.pixels.from_unit(x), readouts=self.readouts)
        if self.readout is None:
            return out.logits
        every = out.all_readouts()
        if not 1 <= self.readout <= every.shape[0]:
            raise BioattnError(f"readout {self.readout} is outside the model's 1..{every.shape[0]} readouts")
        return every[self.readout - 1]


def is_stochastic(model: nn.Module) -> bool:
    """Whether the model samples at evaluation (random fixations): a true ``stochastic`` or
    ``eval_sample`` attribute on the model."""

    inner = unwrap(model)
    return bool(getattr(inner, "stochastic", False) or getattr(inner, "eval_sample", False))
