"""Normalised image tensors and the pixels they stand for."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import BioattnError


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

    def to_picture(self, image: torch.Tensor) -> np.ndarray:
        """One normalised image ``(C, H, W)`` -> an ``(H, W, 3)`` float array in [0, 1] to draw
        (a single channel is repeated)."""
        if len(self.mean_list) not in (1, image.shape[0]):
            raise BioattnError(f"mean/std must have 1 or {image.shape[0]} values (one per channel), "
                               f"got {len(self.mean_list)}")
        unit = self.to_unit(image.detach().float().cpu()[None])[0]
        if unit.shape[0] == 1:
            unit = unit.expand(3, -1, -1)
        return unit.permute(1, 2, 0).numpy()
