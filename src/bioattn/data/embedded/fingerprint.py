"""The generator's fingerprint, recorded in every cache manifest: a cache whose manifest carries
another fingerprint was drawn by another generator (which may draw other images for the same
spec) and is made again.

The fingerprint is a digest of what the generator draws, not of its source text: the sha256 of
:data:`GENERATOR_VERSION` and of every array of a canonical sample, the first eight training
images of each spec of :data:`SAMPLE_SPECS` (one object, two, one to three, and each of the four
domains; 32 and 48 pixels). Moving code between modules, renaming or documenting it leaves the
fingerprint, and with it every cache, as it is; a change to the pixels, masks, boxes or labels
of the sample gives a new one, and so does a numpy that computes other pixels. A change that
leaves the sample alone but alters other images must bump :data:`GENERATOR_VERSION` (which
changes every spec's cache key as well).

Caches written while the fingerprint was a digest of the generator's source (then one module)
carry that digest. :data:`SOURCE_DIGESTS` maps the sample digest of a generator to the source
digest its caches carry, and :func:`generator_digest` answers with the latter: those caches stay
valid as long as the generator draws the same sample.
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from .scene import render
from .spec import EMBEDDED_DOMAINS, GENERATOR_VERSION, EmbeddedSpec

SAMPLE_IMAGES = 8
SAMPLE_SPECS: tuple[EmbeddedSpec, ...] = tuple(
    EmbeddedSpec(size=size, n_train=SAMPLE_IMAGES, n_val=1, n_test=1, **options)
    for size in (32, 48)
    for options in ({}, {"pair": True}, {"task": "multi"}, *({"domain": d} for d in EMBEDDED_DOMAINS))
)
# sample digest -> the source digest that caches of the same output carry
SOURCE_DIGESTS: dict[str, str] = {"92724f698db78100": "ca6bfafe0bd59a5d"}


def sample_digest() -> str:
    """The digest of :data:`GENERATOR_VERSION` and of every array of the canonical sample,
    drawn now (16 hex digits)."""
    digest = hashlib.sha256(json.dumps({"version": GENERATOR_VERSION}).encode())
    for spec in SAMPLE_SPECS:
        arrays = render(spec, "train", 0, SAMPLE_IMAGES)
        for field in sorted(arrays):
            array = np.ascontiguousarray(arrays[field])
            digest.update(f"{spec.key}/{field}/{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@functools.cache
def generator_digest() -> str:
    """The fingerprint recorded in cache manifests: :func:`sample_digest`, or the source digest
    that :data:`SOURCE_DIGESTS` gives for it."""
    drawn = sample_digest()
    return SOURCE_DIGESTS.get(drawn, drawn)
