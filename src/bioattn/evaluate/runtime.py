"""What every suite needs: batched loaders and the mapping between normalised tensors and pixels."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.pixels import Pixels
from ..errors import BioattnError


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

        return forward_readouts(self.model, self.pixels.from_unit(x), readouts=self.steps).all_readouts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..protocol import forward_readouts, has_readouts

        if self.step is None and self.steps is None and not has_readouts(self.model):
            return self.model(self.pixels.from_unit(x))
        out = forward_readouts(self.model, self.pixels.from_unit(x), readouts=self.steps)
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
