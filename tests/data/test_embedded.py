"""The embedded shapes data set: generation, cache, torch dataset, preview and CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from bioattn.cli import main
from bioattn.data import embedded as emb
from bioattn.data.embedded import (
    CLASS_NAMES,
    EmbeddedDataset,
    EmbeddedSpec,
    cache_path,
    generate,
    generate_split,
    load_embedded,
    preview,
    scene,
    streams,
)
from bioattn.errors import BioattnError

SMALL = EmbeddedSpec(size=64, n_train=400, n_val=40, n_test=30, seed=5)
PAIR = EmbeddedSpec(size=64, n_train=120, n_val=20, n_test=20, seed=5, pair=True)
TINY = EmbeddedSpec(size=32, n_train=24, n_val=12, n_test=10, seed=1)


@pytest.fixture(scope="module")
def train() -> emb.EmbeddedArrays:
    return generate_split(SMALL, "train", workers=1)


@pytest.fixture(scope="module")
def pair_train() -> emb.EmbeddedArrays:
    return generate_split(PAIR, "train", workers=1)


def _assert_same(a: emb.EmbeddedArrays, b: emb.EmbeddedArrays) -> None:
    for field in ("images", "labels", "masks", "boxes", "n_distractors"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


# ------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------
def test_parse_forms():
    assert EmbeddedSpec.parse("embedded") == EmbeddedSpec()
    assert EmbeddedSpec.parse("embedded:pair") == EmbeddedSpec(pair=True)
    assert EmbeddedSpec.parse("embedded:size=128,train=5000,val=500,test=500,seed=3") == EmbeddedSpec(
        size=128, n_train=5000, n_val=500, n_test=500, seed=3)
    assert EmbeddedSpec.parse("embedded:pair,size=96") == EmbeddedSpec(size=96, pair=True)
    spec = EmbeddedSpec(size=96, n_val=7, pair=True)
    assert EmbeddedSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text, message", [
    ("embedded:colour=3", "unknown embedded option 'colour'"),
    ("embedded:size=big", "must be an integer"),
    ("embedded:size=16", "between 32 and 224"),
    ("embedded:size=225", "between 32 and 224"),
    ("embedded:train=0", "at least 1"),
    ("embedded:seed=-1", "seed"),
    ("embedded:size=64,size=96", "given twice"),
    ("embedded:pair=1", "takes no value"),
    ("embedded:size", "needs a value"),
    ("embedded:", "empty option list"),
    ("imagenet", "not an embedded data spec"),
])
def test_parse_errors(text, message):
    with pytest.raises(BioattnError, match=message):
        EmbeddedSpec.parse(text)


def test_spec_validates_direct_construction_and_key():
    with pytest.raises(BioattnError, match="between 32 and 224"):
        EmbeddedSpec(size=500)
    with pytest.raises(BioattnError, match="integer"):
        EmbeddedSpec(n_train=1.5)
    keys = {EmbeddedSpec().key, EmbeddedSpec(seed=1).key, EmbeddedSpec(pair=True).key,
            EmbeddedSpec(n_val=10).key, EmbeddedSpec(size=96).key}
    assert len(keys) == 5
    assert EmbeddedSpec().key == EmbeddedSpec.parse("embedded").key


# ------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------
def test_arrays_shapes_and_types(train):
    n, s = SMALL.n_train, SMALL.size
    assert train.images.shape == (n, s, s, 3) and train.images.dtype == np.uint8
    assert train.labels.shape == (n,) and train.labels.dtype == np.int64
    assert train.masks.shape == (n, s, s) and train.masks.dtype == bool
    assert train.boxes.shape == (n, 4)
    assert train.class_names == CLASS_NAMES and len(CLASS_NAMES) >= 10


def test_deterministic_whatever_workers_and_range():
    spec = EmbeddedSpec(size=64, n_train=300, n_val=10, n_test=10, seed=2)  # several work chunks
    one = generate_split(spec, "train", workers=1)
    two = generate_split(spec, "train", workers=2)
    _assert_same(one, two)
    part = generate_split(spec, "train", 100, 230, workers=1)
    _assert_same(part, emb.EmbeddedArrays(**{f: getattr(one, f)[100:230] for f in
                                            ("images", "labels", "masks", "boxes", "n_distractors")}))


def test_random_numbers_depend_only_on_the_image_index():
    whole = streams.draw(SMALL, "val", 0, 12)
    part = streams.draw(SMALL, "val", 5, 9)
    for key, value in part.items():
        np.testing.assert_array_equal(value, whole[key][5:9], err_msg=key)
    other = streams.draw(SMALL, "test", 5, 9)
    assert not np.array_equal(other["obj"], part["obj"])
    assert not np.array_equal(other["grain"], part["grain"])


def test_seeds_and_splits_differ(train):
    other_seed = generate_split(EmbeddedSpec(size=64, n_train=400, seed=6), "train", 0, 20, workers=1)
    assert not np.array_equal(other_seed.images, train.images[:20])
    val = generate_split(SMALL, "val", 0, 20, workers=1)
    assert not np.array_equal(val.images, train.images[:20])


def test_boxes_are_tight_around_masks_and_objects_small(train):
    s = SMALL.size
    for mask, (x0, y0, x1, y1) in zip(train.masks, train.boxes):
        assert mask.any()
        assert 0 <= x0 < x1 <= s and 0 <= y0 < y1 <= s
        assert mask[y0:y1, x0:x1].sum() == mask.sum()        # the box encloses the mask
        assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()   # and is tight
        assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
    area = train.masks.reshape(len(train), -1).mean(axis=1)
    assert area.max() <= emb.MAX_OBJECT_AREA
    assert area.min() > 0.01                                  # still visible at 64 px


@pytest.mark.parametrize("size", [32, 224])
def test_other_sizes(size):
    spec = EmbeddedSpec(size=size, n_train=60, n_val=4, n_test=4, seed=9)
    arrays = generate_split(spec, "train", workers=1)
    assert arrays.images.shape == (60, size, size, 3)
    assert (arrays.masks.reshape(60, -1).mean(axis=1) <= emb.MAX_OBJECT_AREA).all()
    for mask, (x0, y0, x1, y1) in zip(arrays.masks, arrays.boxes):
        assert mask.any() and mask[y0:y1, x0:x1].sum() == mask.sum()


def test_every_class_appears_balanced(train):
    counts = np.bincount(train.labels, minlength=len(CLASS_NAMES))
    assert counts.min() == counts.max() == SMALL.n_train // len(CLASS_NAMES)


def test_masks_have_the_class_shape(train):
    """Disks fill pi/4 of their box whatever the rotation; rings and crescents are hollow or
    dented at the box centre, squares and disks are filled there."""
    fill = train.masks.sum(axis=(1, 2)) / np.prod(train.boxes[:, 2:] - train.boxes[:, :2], axis=1)
    disk = train.labels == CLASS_NAMES.index("disk")
    assert abs(fill[disk].mean() - np.pi / 4) < 0.05
    cy = (train.boxes[:, 1] + train.boxes[:, 3]) // 2
    cx = (train.boxes[:, 0] + train.boxes[:, 2]) // 2
    centre = train.masks[np.arange(len(train)), cy, cx]
    for name in ("disk", "square", "plus"):
        assert centre[train.labels == CLASS_NAMES.index(name)].all(), name
    assert not centre[train.labels == CLASS_NAMES.index("ring")].any()


def test_object_pixels_show_the_object(train):
    """The object stands out: its mean colour differs clearly from the band of pixels around it."""
    contrast = []
    for image, mask in zip(train.images[:100].astype(float), train.masks[:100]):
        grown = mask.copy()
        for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1), (0, 2), (0, -2), (1, 2), (1, -2)):
            grown |= np.roll(mask, shift, axis=axis)
        ring = grown & ~mask
        contrast.append(np.linalg.norm(image[mask].mean(0) - image[ring].mean(0)))
    assert np.median(contrast) > 50     # of 255: clearly visible on its surround


def test_light_objects_on_a_dark_field(train):
    """Objects are light (each channel of their colours >= 0.5 before grain) on a field whose
    control points stay below 0.35, so shape is a brightness edge whatever the hue."""
    images = train.images[:100].astype(float) / 255
    masks = train.masks[:100]
    inside = np.stack([img[m].mean(0) for img, m in zip(images, masks)])
    assert inside.min() > 0.45                       # texture mixes stay among light colours
    without = scene.render(SMALL, "train", 0, 100, with_distractors=False)
    field = without["images"].astype(float) / 255
    outside = np.stack([img[~m].mean() for img, m in zip(field, masks)])
    assert outside.max() < 0.4                      # ripples add at most 0.03 around the field
    assert (inside.mean(1) - outside).min() > 0.2


def test_at_least_four_distractors_are_drawn(train):
    assert (train.n_distractors >= emb.MIN_DISTRACTORS).all()
    assert (train.n_distractors <= emb.MAX_DISTRACTORS).all()
    with_d = scene.render(SMALL, "train", 0, 40, with_distractors=True)
    without = scene.render(SMALL, "train", 0, 40, with_distractors=False)
    np.testing.assert_array_equal(with_d["images"], train.images[:40])
    np.testing.assert_array_equal(without["masks"], with_d["masks"])
    changed = (np.abs(with_d["images"].astype(int) - without["images"]).max(axis=-1) > 20)
    changed &= ~with_d["masks"]
    share = changed.reshape(40, -1).mean(axis=1)
    assert share.min() > 0.01 and share.mean() > 0.04     # fragments cover part of every scene


def test_colour_does_not_predict_the_class(train):
    """A nearest-class-mean classifier on the mean colour inside the mask is near chance."""
    colours = np.stack([img[m].mean(axis=0) for img, m in zip(train.images, train.masks)]) / 255
    labels = train.labels
    fit, test = slice(0, 200), slice(200, 400)
    means = np.stack([colours[fit][labels[fit] == k].mean(axis=0) for k in range(len(CLASS_NAMES))])
    guess = np.linalg.norm(colours[test][:, None] - means[None], axis=-1).argmin(axis=1)
    accuracy = (guess == labels[test]).mean()
    assert accuracy < 0.22, accuracy            # chance is 0.10
    # one-way analysis of variance per channel: class means differ no more than chance allows
    k, n = len(CLASS_NAMES), len(labels)
    class_means = np.stack([colours[labels == c].mean(axis=0) for c in range(k)])
    between = sum((labels == c).sum() * (class_means[c] - colours.mean(axis=0)) ** 2
                  for c in range(k)) / (k - 1)
    within = ((colours - class_means[labels]) ** 2).sum(axis=0) / (n - k)
    assert (between / within).max() < 3.5, between / within   # F(9, 390) 99.9% point ~ 3.2


def test_pair_variant(pair_train):
    n, s = PAIR.n_train, PAIR.size
    assert pair_train.labels.shape == (n, 2)
    assert pair_train.masks.shape == (n, 2, s, s)
    assert pair_train.boxes.shape == (n, 2, 4)
    assert (pair_train.labels[:, 0] != pair_train.labels[:, 1]).all()
    assert not (pair_train.masks[:, 0] & pair_train.masks[:, 1]).any()
    assert pair_train.masks.any(axis=(2, 3)).all()
    assert (pair_train.masks.reshape(n, 2, -1).mean(axis=2) <= emb.MAX_OBJECT_AREA).all()
    for masks, boxes in zip(pair_train.masks, pair_train.boxes):
        for mask, (x0, y0, x1, y1) in zip(masks, boxes):
            assert mask[y0:y1, x0:x1].sum() == mask.sum()
    assert set(pair_train.labels[:, 1]) == set(range(len(CLASS_NAMES)))
    ds = EmbeddedDataset(pair_train)
    x, y = ds[3]
    assert y == pair_train.labels[3, 0] and ds.arrays is pair_train


def test_generate_split_errors():
    with pytest.raises(BioattnError, match="unknown split"):
        generate_split(TINY, "dev")
    with pytest.raises(BioattnError, match="outside"):
        generate_split(TINY, "val", 5, 13)
    with pytest.raises(BioattnError, match="workers"):
        generate_split(TINY, "val", workers=0)


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------
def test_cache_is_written_once_then_read(tmp_path, monkeypatch):
    first = load_embedded(TINY, "val", cache_dir=tmp_path)
    fresh = generate_split(TINY, "val", workers=1)
    _assert_same(first, fresh)
    folder = cache_path(TINY, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"]["train"]["n"] == TINY.n_train
    assert len(manifest["splits"]["val"]["files"]["images"]["sha256"]) == 64
    assert not [p for p in folder.parent.iterdir() if p.name != folder.name]  # no leftovers

    def no_generation(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(generate, "render", no_generation)
    for split in ("train", "val", "test"):
        again = load_embedded(TINY, split, cache_dir=tmp_path)
        assert isinstance(again.images, np.memmap) and len(again) == TINY.split_size(split)
    _assert_same(load_embedded(TINY, "val", cache_dir=tmp_path), fresh)


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOATTN_CACHE", str(tmp_path / "env-cache"))
    load_embedded(TINY, "test")
    assert (tmp_path / "env-cache" / "embedded" / TINY.key / "manifest.json").is_file()


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete", "manifest", "other_generator"])
def test_damaged_cache_is_rebuilt(tmp_path, caplog, damage):
    original = load_embedded(TINY, "train", cache_dir=tmp_path)
    expected = emb.EmbeddedArrays(**{f: np.array(getattr(original, f)) for f in
                                     ("images", "labels", "masks", "boxes", "n_distractors")})
    del original
    folder = cache_path(TINY, tmp_path)
    target = folder / "train_images.npy"
    if damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[-7] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-500])
    elif damage == "delete":
        target.unlink()
    elif damage == "manifest":
        (folder / "manifest.json").write_text("{not json")
    else:  # same spec, written by a generator whose code differs from this one
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["generator_digest"] = "0" * 16
        (folder / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="bioattn.data"):
        rebuilt = load_embedded(TINY, "train", cache_dir=tmp_path)
    warnings = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    _assert_same(rebuilt, expected)
    caplog.clear()
    load_embedded(TINY, "train", cache_dir=tmp_path)
    assert not caplog.records                                 # healthy again


def test_load_rejects_unknown_split(tmp_path):
    with pytest.raises(BioattnError, match="unknown split"):
        load_embedded(TINY, "holdout", cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# torch dataset
# ------------------------------------------------------------------------------------------
def test_dataset_normalises(train):
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    ds = EmbeddedDataset(train, mean=mean, std=std)
    assert len(ds) == SMALL.n_train and ds.classes == list(CLASS_NAMES)
    x, y = ds[7]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert isinstance(y, int) and y == train.labels[7]
    expected = (torch.from_numpy(train.images[7]).permute(2, 0, 1).float() / 255
                - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    xs = torch.stack([EmbeddedDataset(train)[i][0] for i in range(64)])
    assert abs(xs.mean().item()) < 0.3 and 0.7 < xs.std().item() < 1.3   # default statistics fit


def test_dataset_transform_on_uint8(train):
    from torchvision.transforms import v2

    seen = []

    def record(img):
        seen.append(img.dtype)
        return v2.RandomHorizontalFlip(p=1.0)(img)

    plain, flipped = EmbeddedDataset(train)[2][0], EmbeddedDataset(train, transform=record)[2][0]
    assert seen == [torch.uint8]
    torch.testing.assert_close(flipped, plain.flip(-1))


def test_dataset_rejects_bad_statistics(train):
    with pytest.raises(BioattnError, match="3 values"):
        EmbeddedDataset(train, mean=(0.5, 0.5))
    with pytest.raises(BioattnError, match="positive"):
        EmbeddedDataset(train, std=(0.2, 0.0, 0.2))


# ------------------------------------------------------------------------------------------
# preview and CLI
# ------------------------------------------------------------------------------------------
def _has_colour(png, rgb, tolerance: int = 40) -> bool:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    return bool((np.abs(pixels - np.array(rgb)).max(axis=-1) < tolerance).any())


def test_preview_draws_the_images_with_their_outlines(tmp_path):
    cyan, magenta = (0x00, 0xE5, 0xFF), (0xFF, 0x2B, 0xD6)  # first and second object's outline
    single = preview(TINY, tmp_path / "single.png", n=5)
    pair = preview(PAIR, tmp_path / "pair.png", n=5)
    more = preview(TINY, tmp_path / "more.png", n=16)
    for png in (single, pair, more):
        with Image.open(png) as img:
            assert img.format == "PNG" and min(img.size) > 100
    assert _has_colour(single, cyan) and not _has_colour(single, magenta)
    assert _has_colour(pair, cyan) and _has_colour(pair, magenta)
    # sixteen images need a larger grid than five
    assert np.prod(Image.open(more).size) > np.prod(Image.open(single).size)
    with pytest.raises(BioattnError, match="at least 1"):
        preview(TINY, tmp_path / "none.png", n=0)


def test_cli_generate_and_preview(tmp_path, capsys):
    spec = "embedded:size=32,train=12,val=6,test=6,seed=4"
    assert main(["data", "generate", "--data", spec, "--cache", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    folder = cache_path(EmbeddedSpec.parse(spec), tmp_path)
    assert str(folder) in out and "generated in" in out and (folder / "manifest.json").is_file()
    assert main(["data", "generate", "--data", spec, "--cache", str(tmp_path)]) == 0
    assert "found in the cache" in capsys.readouterr().out
    png = tmp_path / "grid.png"
    assert main(["data", "preview", "--data", spec, "--out", str(png), "--n", "4"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_spec(capsys):
    assert main(["data", "preview", "--data", "embedded:size=8", "--out", "x.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "between 32 and 224" in err and "\n" not in err
