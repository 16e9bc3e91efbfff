"""The training transforms: timm's RandAugment at its top magnitude, where the increasing
posterize keeps no bits (Pillow 13 refuses that unless bioattn's own transform routes it),
without changing timm's table of operations for anyone else."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from bioattn.data.transforms import Augmentation, embedded_uint8_transform, folder_transform, rand_augment


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(n)]


def test_top_magnitude_posterize_gives_a_black_image_in_our_transform_only():
    from timm.data.auto_augment import NAME_TO_OP, RandAugment

    before = dict(NAME_TO_OP)
    augment = rand_augment("rand-m10-n1-mstd0-inc1", 16)
    assert NAME_TO_OP == before  # timm's table is untouched
    assert isinstance(augment, RandAugment)
    posterize = next(op for op in augment.ops if op.name == "PosterizeIncreasing")
    black = posterize.aug_fn(_images(1)[0], 0)
    assert np.asarray(black).max() == 0 and black.size == (16, 16)
    kept = posterize.aug_fn(_images(1)[0], 2)
    assert set(np.unique(np.asarray(kept)).tolist()) <= {0, 64, 128, 192}


def test_rand_augment_at_full_magnitude_runs_on_every_path():
    # two ops per image at magnitude 10: about one image in eight draws the 0-bit posterize
    random.seed(0)
    augment = rand_augment("rand-m10-n2-mstd0-inc1", 16)
    assert all(augment(img).size == (16, 16) for img in _images(200))
    aug = Augmentation(auto_augment="rand-m10-n2-mstd0-inc1", random_resized_crop=False)
    embedded = embedded_uint8_transform(16, 16, True, aug)
    batch = torch.randint(0, 256, (200, 3, 16, 16), dtype=torch.uint8)
    assert all(embedded(x).shape == (3, 16, 16) for x in batch)
    folder = folder_transform(16, (0.5,) * 3, (0.5,) * 3, True, aug, None)
    assert all(folder(img).shape == (3, 16, 16) for img in _images(200))
