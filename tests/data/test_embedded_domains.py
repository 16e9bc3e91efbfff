"""The embedded data set's domains: the same scenes drawn in four styles (``embedded:domain=NAME``)."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from bioattn.cli import main
from bioattn.data import build_dataset
from bioattn.data import embedded as emb
from bioattn.data.embedded import (
    CLASS_NAMES,
    EMBEDDED_DOMAINS,
    EmbeddedSpec,
    cache_path,
    generate,
    generate_split,
    load_embedded,
    looks,
    streams,
)
from bioattn.errors import BioattnError

SCENE_FIELDS = ("labels", "masks", "boxes", "n_distractors")
SMALL = EmbeddedSpec(size=64, n_train=400, n_val=40, n_test=30, seed=5)
TINY = "embedded:size=32,train=20,val=10,test=10,seed=3"
N = 60


def _with_domain(spec: EmbeddedSpec, domain: str | None) -> EmbeddedSpec:
    return EmbeddedSpec(**{**spec.record(), "domain": domain})


@pytest.fixture(scope="module")
def drawn() -> dict[str | None, emb.EmbeddedArrays]:
    """The first images of SMALL's train split in the original look (None) and every domain."""
    return {d: generate_split(_with_domain(SMALL, d), "train", 0, N, workers=1)
            for d in (None, *EMBEDDED_DOMAINS)}


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        out = out | np.roll(out, 1, 0) | np.roll(out, -1, 0) | np.roll(out, 1, 1) | np.roll(out, -1, 1)
    return out


# ------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------
def test_every_domain_name_draws_with_its_own_look():
    # each name a spec accepts selects a look of its own class, none of them the original look
    kinds = {domain: type(looks.LOOKS[domain]) for domain in EMBEDDED_DOMAINS}
    assert len(set(kinds.values())) == len(EMBEDDED_DOMAINS)
    assert type(looks.LOOKS[None]) not in kinds.values()
    with pytest.raises(BioattnError, match="unknown embedded domain 'oil'"):
        EmbeddedSpec(domain="oil")


@pytest.mark.parametrize("domain", EMBEDDED_DOMAINS)
def test_each_domain_parses(domain):
    spec = EmbeddedSpec.parse(f"embedded:domain={domain}")
    assert spec == EmbeddedSpec(domain=domain)
    assert str(spec) == f"embedded:domain={domain}" and EmbeddedSpec.parse(str(spec)) == spec
    other = EmbeddedSpec.parse(f"embedded:size=96,domain={domain},train=500,pair")
    assert other == EmbeddedSpec(size=96, n_train=500, pair=True, domain=domain)
    assert EmbeddedSpec.parse(str(other)) == other
    assert f"-{domain}-" in spec.key and spec.record()["domain"] == domain


def test_every_domain_has_its_own_key():
    keys = {EmbeddedSpec(domain=d).key for d in (None, *EMBEDDED_DOMAINS)}
    keys |= {EmbeddedSpec(domain=d, pair=True).key for d in (None, *EMBEDDED_DOMAINS)}
    assert len(keys) == 10


@pytest.mark.parametrize("text, message", [
    ("embedded:domain=watercolour", "unknown embedded domain 'watercolour' "
                                    r"\(choose from photo, cartoon, sketch, painting\)"),
    ("embedded:domain=Photo", "unknown embedded domain 'Photo'"),
    ("embedded:domain=", "option 'domain' needs a value"),
    ("embedded:domain", "option 'domain' needs a value"),
    ("embedded:domain=sketch,domain=photo", "given twice"),
    ("embedded:style=sketch", r"unknown embedded option 'style' \(known: pair, domain, size"),
])
def test_bad_domains(text, message):
    with pytest.raises(BioattnError, match=message):
        EmbeddedSpec.parse(text)


def test_bad_domain_in_direct_construction():
    for bad in ("cartoons", "", 3):
        with pytest.raises(BioattnError, match="choose from photo, cartoon, sketch, painting"):
            EmbeddedSpec(domain=bad)


# ------------------------------------------------------------------------------------------
# the specs without a domain are as before domains existed
# ------------------------------------------------------------------------------------------
# recorded from the generator before domains were added: cache key, then per split the
# digests of the first 16 images, masks, labels and boxes. The images' digest depends on the
# CPU's float rounding (the same code gives "8165ba52613301b2" for the default spec's first
# training images on a second CPU, with every mask, label and box equal): each split's images
# must match one of the digests recorded on those CPUs
OTHER_CPU_IMAGES = {("embedded", "train"): "8165ba52613301b2"}
BEFORE_DOMAINS = {
    "embedded": ("embedded-v2-single-64px-b099182bf9a2", {
        "train": ("9697f796ff614759", "764bbf1e080f8598", "2622ef2c2abeddf3", "c7e919790a7d82e5"),
        "val": ("815a7f1c93e1cf0e", "d4e2bb0d5a8de9d6", "9a994e7b2d847d31", "54d7b491295e59df"),
        "test": ("0f160a4a42dcf1b0", "380807992d955c79", "2d2091b452b9a84c", "075b55b3205e4b6e"),
    }),
    "embedded:pair": ("embedded-v2-pair-64px-4fa84dd51eea", {
        "train": ("124318d839780996", "4c724b029922b9b4", "77bc471aa95a066b", "403b4be8b6b9427b"),
        "val": ("616aebef0dd9154f", "af8f378299769dc9", "c57653b9d89b17ad", "46ea96d35a0ab8de"),
        "test": ("0da78309ec10af2d", "5cabb686e88f29e7", "fc93cc0ffc4710be", "9959b4fa75f8a0ea"),
    }),
}


@pytest.mark.parametrize("text", sorted(BEFORE_DOMAINS))
def test_specs_without_domain_are_unchanged(text, tmp_path):
    key, digests = BEFORE_DOMAINS[text]
    spec = EmbeddedSpec.parse(text)
    assert spec.domain is None and str(spec) == text
    assert spec.key == key
    assert cache_path(spec, tmp_path) == tmp_path / "embedded" / key
    assert "domain" not in spec.record()          # so manifests written before domains still match
    for split, expected in digests.items():
        arrays = generate_split(spec, split, 0, 16, workers=1)
        got = tuple(_digest(getattr(arrays, f)) for f in ("images", "masks", "labels", "boxes"))
        assert got[1:] == expected[1:], split
        assert got[0] in {expected[0], OTHER_CPU_IMAGES.get((text, split))}, split


def test_default_look_is_not_a_domain(drawn):
    for domain in EMBEDDED_DOMAINS:
        assert not np.array_equal(drawn[None].images, drawn[domain].images), domain


# ------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------
def test_same_scenes_in_every_domain(drawn):
    """Classes, masks, boxes and distractor counts are the original look's in every domain."""
    for domain in EMBEDDED_DOMAINS:
        for field in SCENE_FIELDS:
            np.testing.assert_array_equal(getattr(drawn[domain], field), getattr(drawn[None], field),
                                          err_msg=f"{domain} {field}")
        assert drawn[domain].class_names == CLASS_NAMES


def test_domains_differ_in_pixels(drawn):
    for a, b in itertools.combinations(EMBEDDED_DOMAINS, 2):
        diff = np.abs(drawn[a].images.astype(np.int16) - drawn[b].images).mean()
        assert diff > 20, (a, b, diff)                  # of 255: clearly other pictures


@pytest.mark.parametrize("domain", EMBEDDED_DOMAINS)
def test_domains_are_deterministic(domain, drawn):
    spec = EmbeddedSpec(size=64, n_train=300, n_val=10, n_test=10, seed=5, domain=domain)  # 3 chunks
    one = generate_split(spec, "train", workers=1)
    two = generate_split(spec, "train", workers=2)
    part = generate_split(spec, "train", 130, 170, workers=1)
    for field in ("images", *SCENE_FIELDS):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field), err_msg=field)
        np.testing.assert_array_equal(getattr(part, field), getattr(one, field)[130:170], err_msg=field)
    other_seed = generate_split(EmbeddedSpec(n_train=20, seed=6, domain=domain), "train", workers=1)
    assert not np.array_equal(other_seed.images, one.images[:20])
    # the domain's own numbers, like the scene's, depend on the index only
    whole = streams.draw_style(spec, "val", 0, 8, looks.LOOKS[domain].layout(1))
    sub = streams.draw_style(spec, "val", 3, 6, looks.LOOKS[domain].layout(1))
    for key, value in sub.items():
        np.testing.assert_array_equal(value, whole[key][3:6], err_msg=key)


@pytest.mark.parametrize("domain", EMBEDDED_DOMAINS)
def test_objects_stay_visible(domain, drawn):
    """The object's rim (mask pixels next to the outside) differs clearly from the ring of
    pixels two to four pixels outside it, in every domain: the shape shows."""
    arrays = drawn[domain]
    contrast = []
    for image, mask in zip(arrays.images.astype(float), arrays.masks):
        rim = mask & _grow(~mask, 1)
        ring = _grow(mask, 4) & ~_grow(mask, 2)
        contrast.append(np.linalg.norm(image[rim].mean(0) - image[ring].mean(0)))
    assert np.median(contrast) > 80 and min(contrast) > 30, (np.median(contrast), min(contrast))


def test_domain_styles(drawn):
    """What sets each style apart, as described in the module."""
    photo, cartoon, sketch, painting = (drawn[d].images.astype(np.float32) / 255 for d in EMBEDDED_DOMAINS)
    original = drawn[None].images.astype(np.float32) / 255
    # sketch: greyscale, on light paper
    assert (sketch[..., 0] == sketch[..., 1]).all() and (sketch[..., 1] == sketch[..., 2]).all()
    assert np.median(sketch) > 0.85
    # cartoon: plain background (one colour covers much of each image), saturated fills
    for image in drawn["cartoon"].images:
        _, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        assert counts.max() > 0.3 * 64 * 64
    masks = drawn["cartoon"].masks
    inside = np.stack([img[m].mean(0) for img, m in zip(cartoon, masks)])
    assert np.median(inside.max(1) - inside.min(1)) > 0.4          # far from grey
    # painting: blurred, so its sharpest steps between neighbouring pixels (99th percentile per
    # image) are far below the other looks' (about 0.18 against 0.5 and more)
    def sharpest(images):
        steps = np.abs(np.diff(images, axis=2)).max(-1).reshape(len(images), -1)
        return np.percentile(steps, 99, axis=1)
    assert sharpest(painting).max() < 0.5 * min(np.median(sharpest(x)) for x in (original, photo, cartoon, sketch))
    # photo: shaded, so far from flat inside the object
    masks = drawn[None].masks
    spread = [np.std(img[m].mean(-1)) for img, m in zip(photo, masks)]
    flat = [np.std(img[m].mean(-1)) for img, m in zip(original, masks)]
    assert np.median(spread) > 1.5 * np.median(flat)


@pytest.mark.parametrize("size", [32, 224])
def test_domains_at_other_sizes(size):
    spec = EmbeddedSpec(size=size, n_train=12, n_val=4, n_test=4, seed=9)
    plain = generate_split(spec, "train", workers=1)
    for domain in EMBEDDED_DOMAINS:
        styled = generate_split(_with_domain(spec, domain), "train", workers=1)
        assert styled.images.shape == (12, size, size, 3)
        for field in SCENE_FIELDS:
            np.testing.assert_array_equal(getattr(styled, field), getattr(plain, field), err_msg=field)


def test_pair_with_domain():
    pair = EmbeddedSpec(size=64, n_train=40, n_val=4, n_test=4, seed=2, pair=True)
    plain = generate_split(pair, "train", workers=1)
    for domain in EMBEDDED_DOMAINS:
        styled = generate_split(_with_domain(pair, domain), "train", workers=1)
        assert styled.pair and styled.labels.shape == (40, 2)
        for field in SCENE_FIELDS:
            np.testing.assert_array_equal(getattr(styled, field), getattr(plain, field), err_msg=field)
        assert not np.array_equal(styled.images, plain.images)


# ------------------------------------------------------------------------------------------
# cache, data sets, preview
# ------------------------------------------------------------------------------------------
def test_each_domain_is_cached_under_its_own_key(tmp_path, monkeypatch):
    specs = {d: EmbeddedSpec.parse(TINY + (f",domain={d}" if d else "")) for d in (None, *EMBEDDED_DOMAINS)}
    for domain, spec in specs.items():
        loaded = load_embedded(spec, "val", cache_dir=tmp_path)
        np.testing.assert_array_equal(loaded.images, generate_split(spec, "val", workers=1).images)
        manifest = json.loads((cache_path(spec, tmp_path) / "manifest.json").read_text())
        assert manifest["key"] == spec.key and manifest["spec"].get("domain") == domain
    folders = sorted(p.name for p in (tmp_path / "embedded").iterdir())
    assert folders == sorted(spec.key for spec in specs.values())

    def no_generation(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(generate, "render", no_generation)
    images = [np.asarray(load_embedded(spec, "test", cache_dir=tmp_path).images) for spec in specs.values()]
    for a, b in itertools.combinations(images, 2):
        assert not np.array_equal(a, b)


def test_build_dataset_passes_the_domain_through(tmp_path):
    sets = {d: build_dataset(f"{TINY},domain={d}", "train", cache_dir=tmp_path) for d in EMBEDDED_DOMAINS}
    plain = build_dataset(TINY, "train", cache_dir=tmp_path)
    for domain, ds in sets.items():
        assert ds.classes == plain.classes == list(CLASS_NAMES) and ds.num_classes == len(CLASS_NAMES)
        np.testing.assert_array_equal(ds.targets, plain.targets)
        expected = generate_split(EmbeddedSpec.parse(f"{TINY},domain={domain}"), "train", workers=1)
        np.testing.assert_array_equal(ds.arrays.images, expected.images)
        x, y = ds[0]
        assert x.shape == (3, 32, 32) and y == plain.targets[0]


def test_cli_preview_of_a_domain(tmp_path, capsys):
    for domain in EMBEDDED_DOMAINS:
        png = tmp_path / f"{domain}.png"
        assert main(["data", "preview", "--data", f"{TINY},domain={domain}", "--out", str(png),
                     "--n", "4"]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "preview", "--data", "embedded:domain=oil", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "photo, cartoon, sketch, painting" in err
