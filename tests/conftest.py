"""Shared fixtures: tiny ImageNet-style folders and an isolated data cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)
REFERENCE = Path(__file__).parent / "reference"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test uses a private data cache (never the user's ~/.cache/bioattn)."""
    cache = os.environ.get("BIOATTN_TEST_CACHE")
    if cache is None:
        cache = str(tmp_path_factory.getbasetemp() / "bioattn-cache")
    monkeypatch.setenv("BIOATTN_CACHE", cache)


def make_image_folder(root: Path, classes=("a", "b"), per_class: int = 12, size: int = 32,
                      splits=("train", "val"), seed: int = 0) -> Path:
    """Write an ImageNet-style tree whose classes differ by brightness (easy to learn)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for ci, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = 40 + 170 * ci / max(1, len(classes) - 1)
                pixels = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")
