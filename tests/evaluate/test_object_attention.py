"""The attention-on-the-object score against hand-made masks and maps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bioattn.evaluate.object_attention import mask_attention_scores


class _MaskImages:
    """A data set whose images are its object masks (white object on black)."""

    def __init__(self, masks: np.ndarray):
        self.arrays = SimpleNamespace(masks=masks)

    def __len__(self) -> int:
        return len(self.arrays.masks)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.arrays.masks[index]).float()[None].expand(3, -1, -1), 0


class _Looker(nn.Module):
    """A map-producing model whose map is its input's first channel, or uniform."""

    def __init__(self, uniform: bool):
        super().__init__()
        self.uniform = uniform

    def attention_maps(self, x):
        return {"map": self.saliency(x)}

    def saliency(self, x):
        return torch.ones_like(x[:, 0]) if self.uniform else x[:, 0]


def _masks() -> np.ndarray:
    masks = np.zeros((5, 16, 16), bool)
    for i, side in enumerate((2, 4, 6, 8, 10)):
        masks[i, 3:3 + side, 2:2 + side] = True
    return masks


def test_a_map_on_the_object_scores_all_its_mass_and_a_perfect_auc():
    masks = _masks()
    scores = mask_attention_scores(_Looker(uniform=False), _MaskImages(masks), limit=10, batch_size=2)
    assert scores["mask_share"] == pytest.approx(100.0)
    assert scores["mask_auc"] == pytest.approx(1.0)
    assert scores["mask_share_chance"] == pytest.approx(100.0 * masks.mean())
    assert scores["n_images"] == 5


def test_a_uniform_map_scores_chance_and_the_limit_counts():
    masks = _masks()
    scores = mask_attention_scores(_Looker(uniform=True), _MaskImages(masks), limit=3)
    chance = 100.0 * masks[:3].mean()
    assert scores["n_images"] == 3
    assert scores["mask_share"] == pytest.approx(chance) and scores["mask_share_chance"] == pytest.approx(chance)
