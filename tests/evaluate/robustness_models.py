"""Tiny models and data sets for the robustness-suite tests."""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from bioattn.protocol import ModelOutput

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def normalise(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x01 - mean) / std


class TinyCNN(nn.Module):
    """Conv -> ReLU -> 4x4 average pool -> linear: keeps coarse position information."""

    def __init__(self, num_classes: int = 2, size: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(6 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(F.relu(self.conv(x))).flatten(1))


def halves_pixels(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1]: textured noise with the left (class 1) or the right (class 0) half
    brighter by 0.04 -- separable, but fragile under a small L-inf perturbation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.2
    y = torch.arange(n) % 2
    half = size // 2
    left = y == 1
    x[left, :, :, :half] += 0.04
    x[~left, :, :, half:] += 0.04
    return x.clamp(0, 1), y


@cache
def trained_halves_cnn() -> TinyCNN:
    """A TinyCNN trained for 120 steps on the halves task (cached per process)."""
    torch.manual_seed(0)
    model = TinyCNN(2)
    x, y = halves_pixels(512, seed=1)
    xn = normalise(x)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        idx = torch.randint(0, len(y), (128,))
        loss = F.cross_entropy(model(xn[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def halves_dataset(n: int = 64, seed: int = 2) -> TensorDataset:
    x, y = halves_pixels(n, seed=seed)
    return TensorDataset(normalise(x), y)


class GlimpseToy(nn.Module):
    """A multi-readout model that looks at one 4x4 patch per readout and classifies by its brightness.

    Deterministic: step t looks at patch t. Stochastic (``stochastic=True``): each step looks at
    a random patch per image, like a glimpse model with random fixations. Step logits are not
    accumulated, so the prediction at step t depends only on patch t's pixels.
    """

    def __init__(self, stochastic: bool = False, default_steps: int = 4, size: int = 16, patch: int = 4):
        super().__init__()
        self.stochastic = stochastic
        self.default_steps = default_steps
        self.num_classes = 2
        self.patch = patch
        self.grid = size // patch
        self.scale = nn.Parameter(torch.tensor(20.0))

    def _patch_means(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.mean(dim=1, keepdim=True), self.patch).flatten(1)  # (B, P)

    def forward_readouts(self, x: torch.Tensor, readouts: int | None = None) -> ModelOutput:
        steps = readouts or self.default_steps
        means = self._patch_means(x)
        b, p = means.shape
        logits = []
        for t in range(steps):
            if self.stochastic:
                idx = torch.randint(0, p, (b,), device=x.device)
            else:
                idx = torch.full((b,), t % p, device=x.device, dtype=torch.long)
            e = means.gather(1, idx[:, None]).squeeze(1) * self.scale
            logits.append(torch.stack([-e, e], dim=1))
        readout_logits = torch.stack(logits)
        return ModelOutput(logits=readout_logits[-1], readout_logits=readout_logits)

    def forward(self, x: torch.Tensor):
        out = self.forward_readouts(x)
        return out if self.training else out.logits


def uniform_pixels(n: int, size: int = 16, margin: float = 0.02, seed: int = 0):
    """Pixels 0.5 +- margin everywhere (class 1: brighter), with faint noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    sign = (y.float() * 2 - 1).view(-1, 1, 1, 1)
    x = 0.5 + margin * sign + 0.003 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), y
