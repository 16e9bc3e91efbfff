"""Training batches made in the main process from the embedded images held in memory: the
images and targets gathered, each batched augmentation step against its definition, the label
maps moved with their images, and the trainer's exact resume on this path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler

from bioattn import checkpoint as ckpt
from bioattn.data import Augmentation, build_dataset
from bioattn.data.batched import (
    BatchRecipe,
    InMemoryBatches,
    augment_batch,
    color_jitter,
    crop_and_resize,
    in_memory_loader,
    in_memory_source,
    photometric_batch,
    random_resized_crop_boxes,
    segment_batch,
)
from bioattn.data.segmentation import SegmentationTransform, build_segmentation_dataset, embedded_label_map
from bioattn.data.stats import EMBEDDED_MEAN, EMBEDDED_STD
from bioattn.data.subsets import spread_subset
from bioattn.errors import BioattnError
from bioattn.train import TrainConfig, train
from conftest import killed_before_saving_epoch

DATA = "embedded:size=32,train=40,val=8,test=8"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _plain(size: int = 32) -> BatchRecipe:
    return BatchRecipe(size=size, mean=EMBEDDED_MEAN, std=EMBEDDED_STD)


# ------------------------------------------------------------------------------------------
# gathering
# ------------------------------------------------------------------------------------------
def test_a_batch_holds_the_data_sets_images_and_targets_in_the_order_asked():
    ds = build_dataset(DATA, "train", mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    source = in_memory_source(ds)
    assert source is not None and len(source) == 40
    order = [7, 3, 30, 3]
    images, targets = source.batch(order)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    for row, i in enumerate(order):
        assert torch.equal(images[row], torch.from_numpy(np.asarray(ds.arrays.images[i])).permute(2, 0, 1))
        assert int(targets[row]) == ds[i][1]
    # without augmentation the batch is what the data set gives image by image
    x = augment_batch(images, _plain(), _gen())
    torch.testing.assert_close(x, torch.stack([ds[i][0] for i in order]), rtol=0, atol=1e-6)


def test_subsets_domains_multilabel_and_label_maps_are_gathered_through_their_wrappers():
    ds = build_dataset(DATA, "train", mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    sub = spread_subset(ds, 10)
    images, targets = in_memory_source(sub).batch([0, 9])
    for row, i in enumerate([0, 9]):
        j = sub.indices[i]
        assert torch.equal(images[row], torch.from_numpy(np.asarray(ds.arrays.images[j])).permute(2, 0, 1))
        assert int(targets[row]) == int(ds.targets[j])

    # two domains one after the other: item 40 is the second domain's first image
    domains = build_dataset("domains:train=cartoon+sketch,root=embedded:size=32,train=40,val=8,test=8",
                            "train", mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    source = in_memory_source(domains)
    assert len(source) == len(domains)
    images, targets = source.batch([1, len(domains.datasets[0]) + 1])
    for row, i in enumerate([1, len(domains.datasets[0]) + 1]):
        x, y = domains[i]
        torch.testing.assert_close(augment_batch(images[row:row + 1], _plain(), _gen())[0], x, rtol=0, atol=1e-6)
        assert int(targets[row]) == y

    multi = build_dataset("embedded:multi,size=32,train=16,val=8,test=8", "train",
                          mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    source = in_memory_source(multi)
    _, targets = source.batch([2, 5])
    assert torch.equal(targets, torch.stack([multi[2][1], multi[5][1]]))

    seg = build_segmentation_dataset("embedded:seg,size=32,train=16,val=8,test=8", "train", 32, train=True)
    source = in_memory_source(seg)
    _, labels = source.batch([4, 1])
    assert np.array_equal(labels[0].numpy(), embedded_label_map(seg.arrays, 4))
    assert np.array_equal(labels[1].numpy(), embedded_label_map(seg.arrays, 1))


def test_image_folders_are_not_in_memory(image_folder):
    assert in_memory_source(build_dataset(str(image_folder), "train", 32)) is None


# ------------------------------------------------------------------------------------------
# classification and multi-label steps
# ------------------------------------------------------------------------------------------
def test_random_resized_crop_boxes_follow_the_area_and_aspect_limits():
    boxes = random_resized_crop_boxes(4000, 64, 48, _gen())
    top, left, h, w = boxes.T
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 48).all())
    area = (h * w).double() / (64 * 48)
    # rounding the sides to whole pixels moves the area and ratio a little past the limits
    assert float(area.min()) >= 0.06 and float(area.max()) <= 1.0
    aspect = w.double() / h.double()
    assert float(aspect.min()) >= 0.6 and float(aspect.max()) <= 1.6
    # the area fraction is spread over its range, not stuck at one end
    assert 0.35 < float(area.mean()) < 0.7
    assert torch.equal(boxes, random_resized_crop_boxes(4000, 64, 48, _gen()))


def test_crop_and_resize_samples_the_box_like_interpolate():
    images = torch.rand(3, 3, 16, 16, generator=_gen())
    whole = torch.tensor([[0, 0, 16, 16]] * 3)
    torch.testing.assert_close(crop_and_resize(images, whole, 16, "bilinear"), images, rtol=0, atol=1e-5)
    box = torch.tensor([[4, 2, 8, 8], [0, 8, 8, 8], [8, 0, 8, 8]])
    out = crop_and_resize(images, box, 16, "bilinear")
    for i, (t, left, h, w) in enumerate(box.tolist()):
        expected = F.interpolate(images[i:i + 1, :, t:t + h, left:left + w], size=(16, 16), mode="bilinear",
                                 align_corners=False)[0]
        # inside the box the two agree; at its rim the grid also sees the pixels just outside it
        torch.testing.assert_close(out[i, :, 2:-2, 2:-2], expected[:, 2:-2, 2:-2], rtol=0, atol=1e-5)


def test_flip_takes_each_image_whole_or_not_at_all():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=_gen())
    recipe = BatchRecipe(size=8, mean=(0, 0, 0), std=(1, 1, 1), hflip=0.5)
    out = augment_batch(images, recipe, _gen(3))
    plain = images.float() / 255
    flipped = [bool(torch.allclose(o, p.flip(-1))) for o, p in zip(out, plain)]
    kept = [bool(torch.allclose(o, p)) for o, p in zip(out, plain)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_color_jitter_draws_factors_per_image_within_the_strength():
    grey = torch.full((200, 3, 4, 4), 0.5)
    out = color_jitter(grey, 0.4, _gen())
    # contrast and saturation leave a flat grey image as it is: only brightness scales it
    factors = out[:, 0, 0, 0] / 0.5
    assert bool((out == out[:, :1, :1, :1]).all())
    assert float(factors.min()) >= 0.6 - 1e-6 and float(factors.max()) <= 1.4 + 1e-6
    assert float(factors.std()) > 0.1
    assert torch.equal(color_jitter(grey, 0.0, _gen()), grey)
    # on colours, the saturation step moves pixels towards their grey level, so colours change
    colour = torch.rand(8, 3, 4, 4, generator=_gen(1))
    assert not torch.allclose(color_jitter(colour, 0.4, _gen()), colour)


def test_resizing_to_the_models_size_matches_the_loader_path():
    aug = Augmentation(random_resized_crop=False)
    ds = build_dataset(DATA, "train", 16, mean=EMBEDDED_MEAN, std=EMBEDDED_STD, train=True, aug=aug)
    images, _ = in_memory_source(ds).batch([0, 1, 2])
    x = augment_batch(images, _plain(16), _gen())
    assert x.shape == (3, 3, 16, 16)
    # the loader resizes uint8 images (rounded to whole levels), the batch float ones
    step = 1 / 255 / min(EMBEDDED_STD)
    torch.testing.assert_close(x, torch.stack([ds[i][0] for i in range(3)]), rtol=0, atol=step)


def test_random_erasing_and_randaugment_change_some_images():
    ds = build_dataset(DATA, "train", mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    images, _ = in_memory_source(ds).batch(list(range(16)))
    plain = augment_batch(images, _plain(), _gen())
    import random

    random.seed(0)
    erased = augment_batch(images, BatchRecipe(32, EMBEDDED_MEAN, EMBEDDED_STD, re_prob=1.0), _gen())
    assert all(not torch.equal(a, b) for a, b in zip(erased, plain))
    random.seed(0)
    ra = augment_batch(images, BatchRecipe(32, EMBEDDED_MEAN, EMBEDDED_STD, auto_augment="rand-m9-mstd0.5"), _gen())
    assert ra.shape == plain.shape and sum(not torch.equal(a, b) for a, b in zip(ra, plain)) >= 8


# ------------------------------------------------------------------------------------------
# segmentation
# ------------------------------------------------------------------------------------------
def _coded(n: int = 6, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose red channel is 20 x the label of the pixel (labels in blocks of 8 x 8)."""
    g = _gen(5)
    blocks = torch.randint(0, 11, (n, size // 8, size // 8), generator=g)
    labels = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2).to(torch.uint8)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[:, 0] = labels * 20
    return images, labels


def _transform(**kw) -> SegmentationTransform:
    base = dict(train=True, crop=24, scale=(32, 32), mean=(0, 0, 0), std=(1 / 255,) * 3, photometric=False,
                cat_max_ratio=None)
    base.update(kw)
    return SegmentationTransform(**base)


def test_segmentation_batches_move_label_maps_with_their_images():
    images, labels = _coded()
    x, y = segment_batch(images, labels, _transform(ratio_range=(1.0, 1.0), hflip=0.5), _gen())
    assert x.shape == (6, 3, 24, 24) and y.shape == (6, 24, 24) and y.dtype == torch.long
    # no rescale: every pixel of the crop keeps its code
    assert torch.equal(x[:, 0].round().long(), y * 20)
    # the crops differ from image to image, and flips happen
    x2, y2 = segment_batch(images, labels, _transform(ratio_range=(1.0, 1.0), hflip=1.0), _gen())
    assert torch.equal(x2[:, 0].round().long(), y2 * 20)

    # upscaled: bilinear images against nearest labels agree away from the block edges
    x, y = segment_batch(images, labels, _transform(ratio_range=(2.0, 2.0)), _gen())
    agree = (x[:, 0] - y * 20).abs() < 1
    assert float(agree.float().mean()) > 0.8


def test_segmentation_batches_pad_small_rescales_with_zero_and_the_ignore_index():
    images, labels = _coded()
    x, y = segment_batch(images, labels, _transform(ratio_range=(0.5, 0.5), mean=(0.5,) * 3, std=(0.5,) * 3),
                         _gen())
    # 32 px at half scale is 16 px: the rest of the 24 px crop is padding
    assert bool((y[:, 16:, :] == 255).all() and (y[:, :, 16:] == 255).all())
    assert bool((x[:, :, 16:, :] == 0).all() and (x[:, :, :, 16:] == 0).all())
    assert bool((y[:, :16, :16] != 255).all())


def test_segmentation_crops_avoid_one_class_filling_the_crop():
    # left half class 1, right half class 2: a narrow crop is all one class unless it straddles the middle
    labels = torch.ones(40, 32, 32, dtype=torch.uint8)
    labels[:, :, 16:] = 2
    images = torch.zeros(40, 3, 32, 32, dtype=torch.uint8)
    free = segment_batch(images, labels, _transform(crop=(32, 8), ratio_range=(1.0, 1.0), hflip=0.0), _gen())[1]
    checked = segment_batch(images, labels, _transform(crop=(32, 8), ratio_range=(1.0, 1.0), hflip=0.0,
                                                       cat_max_ratio=0.75), _gen())[1]

    def mixed(y):
        return sum(len(torch.unique(t)) > 1 for t in y)

    assert mixed(checked) > mixed(free) + 10


def test_photometric_batch_keeps_grey_grey_in_range_and_varies_per_image():
    grey = torch.arange(0, 256, dtype=torch.float32).view(1, 1, 16, 16).repeat(64, 3, 1, 1)
    out = photometric_batch(grey, _gen())
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=1e-3)
    torch.testing.assert_close(out[:, 1], out[:, 2], rtol=0, atol=1e-3)
    changed = sum(not torch.allclose(o, grey[0]) for o in out)
    assert 16 < changed < 64
    colour = torch.rand(64, 3, 8, 8, generator=_gen(2)) * 255
    hue_or_saturation = photometric_batch(colour, _gen(1))
    assert sum(not torch.allclose(a, b) for a, b in zip(hue_or_saturation, colour)) > 32


# ------------------------------------------------------------------------------------------
# the loader and the trainer
# ------------------------------------------------------------------------------------------
def test_loader_reseeds_per_epoch_and_drops_the_last_incomplete_batch():
    ds = build_dataset(DATA, "train", mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    loader = in_memory_loader(ds, SequentialSampler(ds), 16, BatchRecipe(32, EMBEDDED_MEAN, EMBEDDED_STD, hflip=0.5))
    assert isinstance(loader, InMemoryBatches) and len(loader) == 2
    loader.set_seed(1)
    first = [x for x, _ in loader]
    loader.set_seed(1)
    again = [x for x, _ in loader]
    loader.set_seed(2)
    other = [x for x, _ in loader]
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def _config(out, **kw) -> TrainConfig:
    base = dict(model="vit_micro_patch8_64", data=DATA, output=str(out), img_size=32, epochs=2, batch_size=8,
                lr=1e-3, warmup_epochs=0, progress=False, tensorboard=False, random_resized_crop=True, hflip=0.5,
                color_jitter=0.4, reprob=0.25)
    base.update(kw)
    return TrainConfig(**base)


def test_killed_then_resumed_in_memory_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    full = train(_config(tmp_path / "full"))
    assert full["metrics"]["data_wait"] < 1.0

    with killed_before_saving_epoch(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "cut"))
    torch.manual_seed(4321)
    train(TrainConfig(resume=str(tmp_path / "cut"), progress=False, tensorboard=False))
    a = ckpt.read_state_dict(tmp_path / "full" / "last")
    b = ckpt.read_state_dict(tmp_path / "cut" / "last")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_in_memory_path_trains_like_the_loader_path_without_augmentation(tmp_path):
    # the same images in the same order, no random step: the same weights either way, up to the
    # float rounding of the two normalisation paths carried through an epoch of updates (measured
    # up to 1.1e-5 on one CPU; a different crop, flip or order moves weights by orders more)
    kw = dict(random_resized_crop=False, hflip=0.0, color_jitter=0.0, reprob=0.0, epochs=1)
    train(_config(tmp_path / "mem", in_memory=True, **kw))
    train(_config(tmp_path / "loader", in_memory=False, **kw))
    a = ckpt.read_state_dict(tmp_path / "mem" / "last")
    b = ckpt.read_state_dict(tmp_path / "loader" / "last")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=5e-5)


def test_in_memory_on_for_files_is_refused(image_folder, tmp_path):
    with pytest.raises(BioattnError, match="--in-memory on makes batches of images held in memory"):
        train(_config(tmp_path / "run", data=str(image_folder), in_memory=True))


def test_area_of_the_draws_is_uniform_in_log_ratio():
    boxes = random_resized_crop_boxes(20000, 256, 256, _gen(7))
    aspect = (boxes[:, 3].double() / boxes[:, 2].double()).log()
    # log-uniform in [log 3/4, log 4/3]: symmetric about 0
    assert abs(float(aspect.mean())) < 0.02 and float(aspect.abs().max()) <= math.log(4 / 3) + 0.02
