"""The embedded set's task options: ``seg`` (same images, marked for segmentation) and ``multi``
(one to three objects per image, for multi-label classification)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bioattn.data import embedded as emb
from bioattn.data.embedded import (
    CLASS_NAMES,
    EMBEDDED_TASKS,
    EmbeddedDataset,
    EmbeddedMultiLabel,
    EmbeddedSpec,
    cache_path,
    generate,
    generate_split,
    load_embedded,
    preview,
)
from bioattn.errors import BioattnError

MULTI = EmbeddedSpec(size=64, n_train=600, n_val=20, n_test=20, seed=4, task="multi")
TINY_MULTI = EmbeddedSpec(size=32, n_train=30, n_val=12, n_test=10, seed=2, task="multi")
FIELDS = ("images", "labels", "masks", "boxes", "n_distractors")


@pytest.fixture(scope="module")
def multi() -> emb.EmbeddedArrays:
    return generate_split(MULTI, "train", workers=1)


# ------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, task, pair", [
    ("embedded:seg", "seg", False),
    ("embedded:seg,pair", "seg", True),
    ("embedded:multi", "multi", False),
    ("embedded:seg,pair,domain=sketch,size=96,train=500", "seg", True),
    ("embedded:multi,domain=photo,size=32,seed=3", "multi", False),
])
def test_task_specs_parse_and_round_trip(text, task, pair):
    spec = EmbeddedSpec.parse(text)
    assert spec.task == task and spec.pair is pair
    assert spec.multi is (task == "multi")
    assert str(spec) == text and EmbeddedSpec.parse(str(spec)) == spec


def test_task_option_order_does_not_matter():
    assert EmbeddedSpec.parse("embedded:pair,seg") == EmbeddedSpec.parse("embedded:seg,pair")
    assert str(EmbeddedSpec.parse("embedded:size=48,multi")) == "embedded:multi,size=48"
    assert EMBEDDED_TASKS == ("seg", "multi")
    assert EmbeddedSpec().task is None and str(EmbeddedSpec()) == "embedded"


def test_multi_spec_counts_objects():
    assert EmbeddedSpec(task="multi").n_objects == 3
    assert EmbeddedSpec(task="seg").n_objects == 1
    assert EmbeddedSpec(task="seg", pair=True).n_objects == 2


@pytest.mark.parametrize("text, message", [
    ("embedded:multi,pair", "'multi' and 'pair' exclude each other"),
    ("embedded:seg,multi", r"two tasks in 'embedded:seg,multi': 'seg' and 'multi' \(choose one\)"),
    ("embedded:seg,seg", "option 'seg' given twice"),
    ("embedded:multi=3", "'multi' takes no value"),
    ("embedded:seg=yes", "'seg' takes no value"),
    ("embedded:det", r"unknown embedded option 'det' \(known: pair, domain, size, train, val, test, seed, "
                     r"seg, multi\)"),
])
def test_bad_task_specs(text, message):
    with pytest.raises(BioattnError, match=message):
        EmbeddedSpec.parse(text)


def test_bad_task_in_direct_construction():
    for bad in ("detection", "", 1):
        with pytest.raises(BioattnError, match=r"unknown embedded task .* \(choose from seg, multi\)"):
            EmbeddedSpec(task=bad)


# ------------------------------------------------------------------------------------------
# seg: the plain spec's images, key and cache
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("plain", ["embedded:size=32,train=20,val=8,test=8,seed=6",
                                   "embedded:pair,size=32,train=20,val=8,test=8,seed=6",
                                   "embedded:pair,domain=cartoon,size=32,train=20,val=8,test=8"])
def test_seg_has_the_plain_key_and_pixels(plain):
    base = EmbeddedSpec.parse(plain)
    seg = EmbeddedSpec(**{**base.record(), "task": "seg"})
    assert seg != base and seg.task == "seg"
    assert seg.key == base.key and seg.record() == base.record()
    a, b = generate_split(base, "val", workers=1), generate_split(seg, "val", workers=1)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_seg_reads_the_plain_cache(tmp_path, monkeypatch):
    base = EmbeddedSpec(size=32, n_train=16, n_val=8, n_test=8, seed=11)
    seg = EmbeddedSpec.parse(str(base).replace("embedded:", "embedded:seg,"))
    assert seg.task == "seg"
    first = load_embedded(base, "val", cache_dir=tmp_path)
    assert cache_path(seg, tmp_path) == cache_path(base, tmp_path)

    def no_generation(*args, **kwargs):
        raise AssertionError("the plain spec's cache should have been used")

    monkeypatch.setattr(generate, "render", no_generation)
    again = load_embedded(seg, "val", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.images, first.images)


# ------------------------------------------------------------------------------------------
# multi: generation
# ------------------------------------------------------------------------------------------
def test_multi_has_its_own_key():
    keys = {EmbeddedSpec(task="multi").key, EmbeddedSpec().key, EmbeddedSpec(pair=True).key,
            EmbeddedSpec(task="multi", domain="sketch").key, EmbeddedSpec(task="multi", seed=1).key}
    assert len(keys) == 5
    assert "-multi-" in EmbeddedSpec(task="multi").key
    assert EmbeddedSpec(task="multi").record()["task"] == "multi"


def test_multi_arrays_shapes(multi):
    n, s = MULTI.n_train, MULTI.size
    assert multi.images.shape == (n, s, s, 3)
    assert multi.labels.shape == (n, 3) and multi.labels.dtype == np.int64
    assert multi.masks.shape == (n, 3, s, s) and multi.masks.dtype == bool
    assert multi.boxes.shape == (n, 3, 4)
    assert multi.n_objects.shape == (n,) and multi.n_objects.dtype == np.int64
    assert multi.multi and not multi.pair
    np.testing.assert_array_equal(multi.targets, multi.labels[:, 0])


def test_multi_objects_are_the_first_n_with_masks_and_boxes(multi):
    count = multi.n_objects
    assert set(np.unique(count)) == {1, 2, 3}
    present = np.arange(3)[None] < count[:, None]
    assert ((multi.labels >= 0) == present).all()
    assert (multi.labels[~present] == -1).all()
    assert (multi.masks.any(axis=(2, 3)) == present).all()          # a mask for each object only
    assert (multi.boxes[~present] == 0).all()
    for masks, boxes, n_obj in zip(multi.masks, multi.boxes, count):
        for mask, (x0, y0, x1, y1) in zip(masks[:n_obj], boxes[:n_obj]):
            assert mask[y0:y1, x0:x1].sum() == mask.sum()
            assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()


def test_multi_objects_do_not_overlap_and_have_distinct_classes(multi):
    m = multi.masks
    assert not (m[:, 0] & m[:, 1]).any() and not (m[:, 0] & m[:, 2]).any() and not (m[:, 1] & m[:, 2]).any()
    for labels, n_obj in zip(multi.labels, multi.n_objects):
        assert len(set(labels[:n_obj])) == n_obj
    area = m.reshape(len(multi), 3, -1).mean(axis=2)
    assert area.max() <= emb.MAX_OBJECT_AREA
    assert area[m.any(axis=(2, 3))].min() > 0.005
    assert (area[m.any(axis=(2, 3))] < 0.05).mean() > 0.3          # plenty of small objects


def test_multi_counts_are_roughly_uniform_and_classes_balanced(multi):
    share = np.bincount(multi.n_objects, minlength=4)[1:] / len(multi)
    assert np.abs(share - 1 / 3).max() < 0.06, share               # 600 images: sd ~0.019
    # the first object's classes are balanced as in the single variant
    assert np.bincount(multi.labels[:, 0], minlength=10).tolist() == [MULTI.n_train // 10] * 10
    # every class is about as frequent among the images' label sets
    freq = multi.multi_hot().mean(axis=0)
    expected = multi.n_objects.mean() / len(CLASS_NAMES)
    assert np.abs(freq - expected).max() < 0.06, freq


def test_multi_masks_have_their_class_shape(multi):
    """Masks match their labels: a disk fills pi/4 of its box, a ring is empty at the centre of
    its box, a square and a plus are full there, in whichever slot the object is."""
    fill, centre, label = [], [], []
    for masks, boxes, labels, n_obj in zip(multi.masks, multi.boxes, multi.labels, multi.n_objects):
        for mask, (x0, y0, x1, y1), c in zip(masks[:n_obj], boxes[:n_obj], labels[:n_obj]):
            fill.append(mask.sum() / ((x1 - x0) * (y1 - y0)))
            centre.append(mask[(y0 + y1) // 2, (x0 + x1) // 2])
            label.append(c)
    fill, centre, label = np.array(fill), np.array(centre), np.array(label)
    assert abs(fill[label == CLASS_NAMES.index("disk")].mean() - np.pi / 4) < 0.06
    for name in ("disk", "square", "plus"):
        assert centre[label == CLASS_NAMES.index(name)].all(), name
    assert not centre[label == CLASS_NAMES.index("ring")].any()


def test_multi_objects_are_visible(multi):
    contrast = []
    for image, masks, n_obj in zip(multi.images[:80].astype(float), multi.masks[:80], multi.n_objects[:80]):
        for mask in masks[:n_obj]:
            grown = mask.copy()
            for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1), (0, 2), (0, -2), (1, 2), (1, -2)):
                grown |= np.roll(mask, shift, axis=axis)
            ring = grown & ~mask
            contrast.append(np.linalg.norm(image[mask].mean(0) - image[ring].mean(0)))
    assert np.median(contrast) > 50


def test_multi_is_deterministic_whatever_workers_and_range(multi):
    spec = EmbeddedSpec(size=64, n_train=300, n_val=10, n_test=10, seed=4, task="multi")  # several chunks
    one = generate_split(spec, "train", workers=1)
    two = generate_split(spec, "train", workers=2)
    part = generate_split(spec, "train", 100, 230, workers=1)
    for field in (*FIELDS, "n_objects"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field), err_msg=field)
        np.testing.assert_array_equal(getattr(part, field), getattr(one, field)[100:230], err_msg=field)
    other = generate_split(EmbeddedSpec(**{**spec.record(), "seed": 5}), "train", 0, 30, workers=1)
    assert not np.array_equal(other.labels, one.labels[:30])


def test_multi_scenes_are_the_same_in_every_domain():
    plain = generate_split(TINY_MULTI, "train", workers=1)
    sketch = generate_split(EmbeddedSpec(**{**TINY_MULTI.record(), "domain": "sketch"}), "train", workers=1)
    for field in ("labels", "masks", "boxes", "n_distractors", "n_objects"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(sketch, field), err_msg=field)
    assert not np.array_equal(plain.images, sketch.images)


def test_multi_cache_round_trip(tmp_path):
    loaded = load_embedded(TINY_MULTI, "test", cache_dir=tmp_path)
    fresh = generate_split(TINY_MULTI, "test", workers=1)
    for field in (*FIELDS, "n_objects"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(fresh, field), err_msg=field)
    manifest = json.loads((cache_path(TINY_MULTI, tmp_path) / "manifest.json").read_text())
    assert manifest["spec"]["task"] == "multi"
    assert "n_objects" in manifest["splits"]["test"]["files"]


def test_multi_preview(tmp_path):
    out = preview(TINY_MULTI, tmp_path / "multi.png", n=6)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# multi-label dataset
# ------------------------------------------------------------------------------------------
def test_multi_hot_targets(multi):
    ds = EmbeddedMultiLabel(multi)
    assert len(ds) == len(multi) and ds.num_classes == 10 and ds.multilabel
    for i in (0, 1, 2, 3, 50):
        x, y = ds[i]
        assert y.dtype == torch.float32 and y.shape == (10,)
        assert set(torch.nonzero(y).flatten().tolist()) == set(multi.labels[i][multi.labels[i] >= 0].tolist())
        torch.testing.assert_close(x, EmbeddedDataset(multi)[i][0])
    assert ds.label_matrix.sum(axis=1).tolist() == multi.n_objects.tolist()
    y = ds[0][1]
    y += 5                                           # the caller's tensor is its own
    assert ds.label_matrix[0].max() == 1


def test_multi_hot_of_single_and_pair_arrays():
    single = generate_split(EmbeddedSpec(size=32, n_train=10, n_val=4, n_test=4), "val", workers=1)
    hot = single.multi_hot()
    assert (hot.sum(axis=1) == 1).all() and (hot.argmax(axis=1) == single.labels).all()
    pair = generate_split(EmbeddedSpec(size=32, n_train=10, n_val=4, n_test=4, pair=True), "val", workers=1)
    assert (pair.multi_hot().sum(axis=1) == 2).all()
