"""The random numbers of the generator: one stream per seed and split (and per domain for a
style's own numbers), in which every image owns a fixed slice, so that an image depends only on
the seed, the split and its index."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .spec import CLASS_NAMES, EMBEDDED_DOMAINS, MAX_DISTRACTORS, EmbeddedSpec

_N_MULTI_LAYOUTS = 32   # candidate layouts (a position per object) of the multi variant
_N_COLOUR_CANDIDATES = 6     # object colours are drawn until they stand out from their surround
_N_POSITION_CANDIDATES = 16
_N_DISTRACTOR_POSITIONS = 8
_BACKGROUND_GRID = 4          # control points of the smooth colour field, per side
_DETAIL_GRID = 9              # control points of the brightness ripples on it
_NOISE_GRID = 6               # control points of the "noise" texture, per window side

_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
_STREAM_IMAGE = 0x1A6E        # first word of each seed sequence, one per random stream
_STREAM_LABELS = 0x1AB5
_STREAM_GRAIN = 0x16A1
_STREAM_STYLE = 0x1D0A        # the domain's own numbers (brush, paper, palette); one per domain
_DOMAIN_CODES = {name: code for code, name in enumerate(EMBEDDED_DOMAINS, start=1)}
_GRAIN_OFFSETS = 1 << 16


def first_labels(spec: EmbeddedSpec, split: str, indices: np.ndarray) -> np.ndarray:
    """Balanced classes: each block of K consecutive indices holds every class once, in an order
    drawn per block."""
    k = len(CLASS_NAMES)
    blocks = indices // k
    out = np.empty(len(indices), np.int64)
    for block in np.unique(blocks):
        rng = np.random.default_rng(
            np.random.SeedSequence([_STREAM_LABELS, spec.seed, _SPLIT_CODES[split], int(block)]))
        perm = rng.permutation(k)
        sel = blocks == block
        out[sel] = perm[indices[sel] % k]
    return out


def draw_layout(n_obj: int, multi: bool = False) -> dict[str, tuple[int, ...]]:
    """Shapes of the uniform numbers each image draws, in drawing order. The multi variant's own
    numbers come last, so that the other variants keep theirs."""
    layout = {
        "obj": (n_obj, 7),
        "obj_colours": (n_obj, 2, _N_COLOUR_CANDIDATES, 3),
        "positions": (_N_POSITION_CANDIDATES, 2),
        "second_label": (1,),
        "n_dis": (1,),
        "dis": (MAX_DISTRACTORS, 10),
        "dis_colours": (MAX_DISTRACTORS, 2, 3),
        "dis_positions": (MAX_DISTRACTORS, _N_DISTRACTOR_POSITIONS, 2),
        "background": (_BACKGROUND_GRID, _BACKGROUND_GRID, 3),
        "detail": (_DETAIL_GRID, _DETAIL_GRID),
        "noise_grids": (n_obj + MAX_DISTRACTORS, _NOISE_GRID, _NOISE_GRID),
    }
    if multi:
        layout["count"] = (1,)
        layout["class_order"] = (len(CLASS_NAMES),)
        layout["multi_layouts"] = (_N_MULTI_LAYOUTS, n_obj, 2)
        layout["quadrants"] = (4,)
    return layout


def _stream(spec: EmbeddedSpec, split: str, kind: int) -> np.random.PCG64:
    return np.random.PCG64(np.random.SeedSequence([kind, spec.seed, _SPLIT_CODES[split]]))


def draw(spec: EmbeddedSpec, split: str, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Every random number of images ``lo:hi``, laid out by :func:`draw_layout`, plus pixel grain.

    Each split has one stream of uniform numbers in which image ``i`` owns the ``k`` numbers
    from position ``i * k`` on (a PCG64 generator jumps there directly), so an image's numbers
    depend only on the seed, the split and its index. Its grain is a window of a fixed random
    byte sequence of the split, at an offset given by its last number.
    """
    layout = draw_layout(spec.n_objects, spec.multi)
    sizes = [math.prod(shape) for shape in layout.values()]
    k, n, plane = sum(sizes) + 1, hi - lo, 3 * spec.size * spec.size
    numbers = _stream(spec, split, _STREAM_IMAGE)
    numbers.advance(lo * k)
    uniforms = np.random.Generator(numbers).random((n, k))
    out, start = {}, 0
    for (key, shape), size in zip(layout.items(), sizes):
        out[key] = uniforms[:, start:start + size].reshape(n, *shape)
        start += size
    grain_bytes = np.random.Generator(_stream(spec, split, _STREAM_GRAIN)).integers(
        0, 256, plane + _GRAIN_OFFSETS, dtype=np.uint8)
    offsets = (uniforms[:, -1] * _GRAIN_OFFSETS).astype(np.int64)
    out["grain"] = sliding_window_view(grain_bytes, plane)[offsets].reshape(n, 3, spec.size, spec.size)
    return out


def draw_style(spec: EmbeddedSpec, split: str, lo: int, hi: int,
               layout: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The domain's own uniform numbers for images ``lo:hi``, float32, laid out by ``layout``:
    a stream per seed, split and domain in which image ``i`` owns the numbers from ``i * k`` on,
    as in :func:`draw` (so they too depend only on the seed, the split and the index)."""
    if not layout:
        return {}
    sizes = [math.prod(shape) for shape in layout.values()]
    k, n = sum(sizes), hi - lo
    numbers = np.random.PCG64(np.random.SeedSequence(
        [_STREAM_STYLE, spec.seed, _SPLIT_CODES[split], _DOMAIN_CODES[spec.domain]]))
    numbers.advance(lo * k)                               # one 64-bit step per double
    uniforms = np.random.Generator(numbers).random((n, k)).astype(np.float32)
    out, start = {}, 0
    for (key, shape), size in zip(layout.items(), sizes):
        out[key] = uniforms[:, start:start + size].reshape(n, *shape)
        start += size
    return out
