"""The embedded generator's output, cache keys and fingerprint against the values recorded in
``embedded_reference.json`` (eight small specs: one object, two, one to three, ``seg`` and the
four domains; the sha256 of every array of every split). Code that only moves, renames or
documents the generator must reproduce all of them, so that caches on disk stay valid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bioattn.data.embedded import EmbeddedSpec, cache_path, fingerprint, generate_split, generator_digest, load_embedded

REFERENCE = json.loads(Path(__file__).with_name("embedded_reference.json").read_text(encoding="utf-8"))


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("text", sorted(REFERENCE["specs"]))
def test_arrays_and_cache_key_match_the_reference(text):
    spec = EmbeddedSpec.parse(text)
    expected = REFERENCE["specs"][text]
    assert spec.key == expected["key"]
    for split, digests in expected["splits"].items():
        arrays = generate_split(spec, split, workers=1)
        fields = {name: value for name, value in vars(arrays).items() if isinstance(value, np.ndarray)}
        assert {name: _sha256(value) for name, value in fields.items()} == digests, split


def test_fingerprint_matches_the_reference_and_is_recorded_in_the_manifest(tmp_path):
    assert generator_digest() == REFERENCE["generator_digest"]
    spec = EmbeddedSpec.parse(sorted(REFERENCE["specs"])[0])
    load_embedded(spec, "val", cache_dir=tmp_path)
    manifest = json.loads((cache_path(spec, tmp_path) / "manifest.json").read_text())
    assert manifest["generator_digest"] == REFERENCE["generator_digest"]


def test_fingerprint_follows_what_is_drawn(monkeypatch):
    drawn = fingerprint.sample_digest()
    assert fingerprint.SOURCE_DIGESTS.get(drawn, drawn) == generator_digest()
    real = fingerprint.render

    def one_level_off(*args, **kwargs):
        arrays = real(*args, **kwargs)
        arrays["images"] = arrays["images"] ^ np.uint8(1)
        return arrays

    monkeypatch.setattr(fingerprint, "render", one_level_off)
    changed = fingerprint.sample_digest()
    assert changed != drawn and changed not in fingerprint.SOURCE_DIGESTS
