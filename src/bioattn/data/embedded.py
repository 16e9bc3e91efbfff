"""The embedded data set: procedurally generated shapes in clutter, made on the fly, no download.

Each image shows one object (two in the pair variant, one to three in the multi-object variant)
whose class is its *shape* only:
colour and texture are drawn per instance from the same distribution for every class. The object
sits at a random position, scale and rotation on a dark, smooth random colour field strewn with at
least four distractor fragments (smaller shapes cut by a half-plane), so that local features
mislead and a model has to look at the right place. As in Cluttered MNIST, objects and fragments
are light (random hue, each channel in [0.5, 1]) on the dark field: shape shows as a brightness
edge that a linear patch embedding can pick up, while colour says nothing about the class.
Every image comes with the object's mask and box.

Spec options name a *task* too (:data:`EMBEDDED_TASKS`): ``multi`` draws one to three objects
of distinct classes per image (the number uniform; radii 0.10 to 0.21 of the side, so that three
fit apart), for multi-label classification (:class:`EmbeddedMultiLabel`: multi-hot targets), the
first object's class balanced as in the single variant; ``seg`` only marks that the data serve
segmentation: it changes no image, and a ``seg`` spec shares its cache with the same spec
without it.

The same scenes can be drawn in four styles, the *domains* of :data:`EMBEDDED_DOMAINS`
(``embedded:domain=NAME``): ``photo`` (the look above made richer: a mottled, unevenly lit
ground, shaded shapes with drop shadows and highlights), ``cartoon`` (flat saturated fills with
dark outlines on a plain pale background), ``sketch`` (greyscale pencil contours and hatching
on light paper) and ``painting`` (blotchy colours, brush streaks, soft blurred edges). For a
given seed, split and index every domain shows the same classes, positions, sizes, rotations,
distractors, masks and boxes: only the style differs, so that what is learnt of a shape in some
domains can be tested in another (leave-one-domain-out). Specs without a domain keep the
original look, cache key and pictures. The domains differ in their pixel statistics too (sketch
and cartoon are light on average); that is part of the shift, and data sets normalise every
domain with the same :data:`EMBEDDED_MEAN` / :data:`EMBEDDED_STD`.

Images are a pure function of ``(seed, split, index)``: the result is the same whatever the number
of worker processes or the range requested. :func:`load_embedded` generates a spec once into a
cache folder (``$BIOATTN_CACHE``, default ``~/.cache/bioattn``) of ``.npy`` files that are
memory-mapped on later loads and checked against the sha256 sums of a manifest.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import Dataset

from ..errors import BioattnError
from ..fileio import atomic_dir, atomic_write
from .stats import EMBEDDED_MEAN, EMBEDDED_STD

log = logging.getLogger("bioattn.data")

CLASS_NAMES: tuple[str, ...] = (
    "disk", "ring", "square", "triangle", "star", "plus", "crescent", "L-shape", "T-shape", "heart",
)
TEXTURE_NAMES: tuple[str, ...] = ("solid", "stripes", "checker", "noise", "split", "gradient")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# The styles the same scenes can be drawn in (``embedded:domain=NAME``); see the "looks"
# section below. Without a domain, images keep the original look.
EMBEDDED_DOMAINS: tuple[str, ...] = ("photo", "cartoon", "sketch", "painting")
# What the data serve besides classifying one object (``embedded:seg``, ``embedded:multi``).
EMBEDDED_TASKS: tuple[str, ...] = ("seg", "multi")
MULTI_MAX_OBJECTS = 3          # objects per image of the multi variant: 1 to 3, uniformly

# Bumped whenever the pictures for a given spec change; part of the cache key.
GENERATOR_VERSION = 2


MIN_SIZE, MAX_SIZE = 32, 224
MAX_OBJECT_AREA = 0.2          # fraction of the image an object may cover
MIN_DISTRACTORS, MAX_DISTRACTORS = 4, 8

# Object and fragment radii as fractions of the image side. Every shape fits in the disk of
# radius 1 of its local frame; the largest, the disk, covers pi * 0.92**2 * 0.25**2 ~ 0.17 of
# the image, which leaves room for pixelation at 32 px.
_OBJECT_RADIUS = (0.14, 0.25)
_PAIR_OBJECT_RADIUS = (0.12, 0.20)
_MULTI_OBJECT_RADIUS = (0.10, 0.21)    # below a quarter of the side less a pixel (see _place_objects)
_N_MULTI_LAYOUTS = 32   # candidate layouts (a position per object) of the multi variant
_DISTRACTOR_RADIUS = (0.07, 0.14)
_N_COLOUR_CANDIDATES = 6     # object colours are drawn until they stand out from their surround
_MIN_CONTRAST = 0.4           # RGB distance in [0, 1] units
_BACKGROUND_LEVELS = (0.0, 0.35)   # range of each channel of the background's control points
_FOREGROUND_LEVELS = (0.5, 1.0)    # range of each channel of object and fragment colours
_TEXTURE_CONTRAST = 0.5       # a texture mixes an instance's first colour with this fraction of
                              # the way to its second one, so the silhouette stays whole
_N_POSITION_CANDIDATES = 16
_N_DISTRACTOR_POSITIONS = 8
_BACKGROUND_GRID = 4          # control points of the smooth colour field, per side
_DETAIL_GRID = 9              # control points of the brightness ripples on it
_NOISE_GRID = 6               # control points of the "noise" texture, per window side
_PIXEL_GRAIN = 0.02            # amplitude of the uniform pixel noise

_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
_STREAM_IMAGE = 0x1A6E        # first word of each seed sequence, one per random stream
_STREAM_LABELS = 0x1AB5
_STREAM_GRAIN = 0x16A1
_STREAM_STYLE = 0x1D0A        # the domain's own numbers (brush, paper, palette); one per domain
_DOMAIN_CODES = {name: code for code, name in enumerate(EMBEDDED_DOMAINS, start=1)}
_GRAIN_OFFSETS = 1 << 16
_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = 1


# ------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------
def is_embedded(spec: str) -> bool:
    """Whether a data spec names the embedded data set (``embedded`` or ``embedded:<options>``)."""
    return spec == "embedded" or spec.startswith("embedded:")


@dataclass(frozen=True)
class EmbeddedSpec:
    """What to generate: image side in pixels, split sizes, seed, one object or two, the style
    (``domain``, one of :data:`EMBEDDED_DOMAINS`; None keeps the original look) and the task
    (``task``, one of :data:`EMBEDDED_TASKS` or None).

    Every domain draws the same scenes for the same seed, split and index (classes, positions,
    sizes, rotations, distractors, masks and boxes); only the pixels' style differs.

    ``task="multi"`` (spec option ``multi``) draws one to three objects per image (the number
    uniform per image), of distinct classes, none overlapping another: its own images and cache.
    ``task="seg"`` (option ``seg``) changes no image: a ``seg`` spec has the key, the cache and
    the pictures of the same spec without it, and only tells the data's user it is for
    segmentation. ``multi`` excludes ``pair`` (it has its own layout) and ``seg``.
    """

    size: int = 64
    n_train: int = 20000
    n_val: int = 2000
    n_test: int = 2000
    seed: int = 0
    pair: bool = False
    domain: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        for name in ("size", "n_train", "n_val", "n_test", "seed"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise BioattnError(f"embedded spec: {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise BioattnError(f"embedded spec: size must be between {MIN_SIZE} and {MAX_SIZE}, "
                               f"got {self.size}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 1:
                raise BioattnError(f"embedded spec: {name} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0 or self.seed >= 2**32:
            raise BioattnError(f"embedded spec: seed must be in [0, 2**32), got {self.seed}")
        if not isinstance(self.pair, (bool, np.bool_)):
            raise BioattnError(f"embedded spec: pair must be True or False, got {self.pair!r}")
        object.__setattr__(self, "pair", bool(self.pair))
        if self.domain is not None and (not isinstance(self.domain, str)
                                        or self.domain not in EMBEDDED_DOMAINS):
            raise BioattnError(f"unknown embedded domain {self.domain!r} "
                               f"(choose from {', '.join(EMBEDDED_DOMAINS)})")
        if self.task is not None and (not isinstance(self.task, str) or self.task not in EMBEDDED_TASKS):
            raise BioattnError(f"unknown embedded task {self.task!r} (choose from {', '.join(EMBEDDED_TASKS)})")
        if self.multi and self.pair:
            raise BioattnError("embedded spec: 'multi' and 'pair' exclude each other "
                               f"('multi' draws 1 to {MULTI_MAX_OBJECTS} objects per image)")

    # option name in spec strings -> field
    _OPTIONS: ClassVar[dict[str, str]] = {
        "size": "size", "train": "n_train", "val": "n_val", "test": "n_test", "seed": "seed",
    }
    _FLAGS: ClassVar[tuple[str, ...]] = ("pair", *EMBEDDED_TASKS)

    @classmethod
    def parse(cls, text: str) -> EmbeddedSpec:
        """Parse ``embedded[:OPTION,...]`` where OPTION is ``pair``, ``seg``, ``multi``,
        ``domain=NAME`` (NAME in :data:`EMBEDDED_DOMAINS`) or ``NAME=INT`` with NAME in size,
        train, val, test, seed (e.g. ``embedded:pair,size=96,train=5000``,
        ``embedded:domain=sketch,train=1200``, ``embedded:seg,pair`` or ``embedded:multi``)."""
        if not isinstance(text, str):
            raise BioattnError(f"an embedded data spec is a string, got {text!r}")
        text = text.strip()
        head, sep, rest = text.partition(":")
        if head != "embedded":
            raise BioattnError(f"not an embedded data spec: '{text}' (expected 'embedded[:options]')")
        if sep and not rest:
            raise BioattnError(f"empty option list in '{text}'")
        kwargs: dict = {}
        for item in rest.split(",") if rest else []:
            item = item.strip()
            name, eq, value = item.partition("=")
            name = name.strip()
            if name in cls._FLAGS:
                if eq:
                    raise BioattnError(f"'{name}' takes no value in '{text}' (write just '{name}')")
                if name in EMBEDDED_TASKS:
                    if kwargs.get("task", name) != name:
                        raise BioattnError(f"two tasks in '{text}': '{kwargs['task']}' and '{name}' (choose one)")
                    field, parsed = "task", name
                else:
                    field, parsed = "pair", True
            elif name == "domain":
                if not eq or not value.strip():
                    raise BioattnError(f"option 'domain' needs a value in '{text}' "
                                       f"(one of {', '.join(EMBEDDED_DOMAINS)})")
                field, parsed = "domain", value.strip()
            elif name in cls._OPTIONS:
                if not eq or not value.strip():
                    raise BioattnError(f"option '{name}' needs a value in '{text}' (e.g. {name}=64)")
                try:
                    parsed = int(value.strip())
                except ValueError:
                    raise BioattnError(f"option '{name}' must be an integer, got '{value.strip()}'") from None
                field = cls._OPTIONS[name]
            else:
                known = ", ".join(["pair", "domain", *cls._OPTIONS, *EMBEDDED_TASKS])
                raise BioattnError(f"unknown embedded option '{name or item}' (known: {known})")
            if field in kwargs:
                raise BioattnError(f"option '{name}' given twice in '{text}'")
            kwargs[field] = parsed
        return cls(**kwargs)

    def __str__(self) -> str:
        opts = [] if self.task is None else [self.task]
        if self.pair:
            opts.append("pair")
        if self.domain is not None:
            opts.append(f"domain={self.domain}")
        default = EmbeddedSpec()
        for name, field in self._OPTIONS.items():
            if getattr(self, field) != getattr(default, field):
                opts.append(f"{name}={getattr(self, field)}")
        return "embedded" + (":" + ",".join(opts) if opts else "")

    @property
    def key(self) -> str:
        """Cache folder name: readable prefix plus a hash of every parameter and the generator
        version, so that any change gets its own folder."""
        payload = json.dumps({**self.record(), "version": GENERATOR_VERSION}, sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
        kind = "multi" if self.multi else "pair" if self.pair else "single"
        style = f"-{self.domain}" if self.domain is not None else ""
        return f"embedded-v{GENERATOR_VERSION}-{kind}{style}-{self.size}px-{digest}"

    def record(self) -> dict:
        """The parameters that decide the pictures, as a dict, for the cache key and manifest.
        ``domain`` is left out when it is None, so that specs without a domain keep the key (and
        caches) they had before domains existed; ``task`` is left out unless it is ``multi``
        (``seg`` changes no picture, and specs without a task keep their key)."""
        fields = dataclasses.asdict(self)
        if self.domain is None:
            del fields["domain"]
        if not self.multi:
            del fields["task"]
        return fields

    def split_size(self, split: str) -> int:
        _check_split(split)
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    @property
    def multi(self) -> bool:
        """Whether images hold one to three objects (``task == "multi"``)."""
        return self.task == "multi"

    @property
    def n_objects(self) -> int:
        """Objects per image (the most, for ``multi``)."""
        return MULTI_MAX_OBJECTS if self.multi else 2 if self.pair else 1


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise BioattnError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")


# ------------------------------------------------------------------------------------------
# arrays
# ------------------------------------------------------------------------------------------
@dataclass
class EmbeddedArrays:
    """One split as numpy arrays (memory-mapped when loaded from the cache).

    ``images`` uint8 (N, H, W, 3); ``labels`` int64 (N,), (N, 2) for pairs or (N, 3) for multi;
    ``masks`` bool (N, H, W), (N, 2, H, W) or (N, 3, H, W); ``boxes`` int64 (N, 4), (N, 2, 4) or
    (N, 3, 4) as pixel ``x0, y0, x1, y1`` with exclusive ends (the mask lies in
    ``mask[y0:y1, x0:x1]``); ``n_distractors`` int64 (N,). Multi only: ``n_objects`` int64 (N,),
    1 to 3; the objects are the first ``n_objects`` of each row, and the absent ones have label
    -1, an empty mask and the box ``0, 0, 0, 0``.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    n_distractors: np.ndarray
    n_objects: np.ndarray | None = None
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def pair(self) -> bool:
        """Whether every image holds two objects."""
        return self.labels.ndim == 2 and self.n_objects is None

    @property
    def multi(self) -> bool:
        """Whether images hold one to three objects."""
        return self.n_objects is not None

    @property
    def targets(self) -> np.ndarray:
        """Classification target per image: the (first) object's class."""
        return self.labels[:, 0] if self.labels.ndim == 2 else self.labels

    def multi_hot(self) -> np.ndarray:
        """float32 (N, K): 1 for every class shown in the image (multi-label targets)."""
        labels = self.labels if self.labels.ndim == 2 else self.labels[:, None]
        out = np.zeros((len(labels), len(self.class_names)), np.float32)
        rows, slots = np.nonzero(labels >= 0)
        out[rows, labels[rows, slots]] = 1
        return out


def _field_layout(spec: EmbeddedSpec) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """dtype and per-image shape of each array."""
    s = spec.size
    obj = (spec.n_objects,) if spec.n_objects > 1 else ()
    layout = {
        "images": (np.dtype(np.uint8), (s, s, 3)),
        "labels": (np.dtype(np.int64), obj),
        "masks": (np.dtype(bool), (*obj, s, s)),
        "boxes": (np.dtype(np.int64), (*obj, 4)),
        "n_distractors": (np.dtype(np.int64), ()),
    }
    if spec.multi:
        layout["n_objects"] = (np.dtype(np.int64), ())
    return layout


def _empty_arrays(spec: EmbeddedSpec, n: int) -> dict[str, np.ndarray]:
    return {field: np.zeros((n, *shape), dtype) for field, (dtype, shape) in _field_layout(spec).items()}


# ------------------------------------------------------------------------------------------
# shapes: signed distances in the object's local frame (unit radius, y up); < 0 inside
# ------------------------------------------------------------------------------------------
def _box(x, y, hx, hy):
    return np.maximum(np.abs(x) - hx, np.abs(y) - hy)


def _radius(u, v):
    return np.sqrt(u * u + v * v)


def _sdf_disk(u, v):
    return _radius(u, v) - 0.92


def _sdf_ring(u, v):
    return np.abs(_radius(u, v) - 0.70) - 0.24


def _sdf_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - 0.68


_COS30 = math.cos(math.pi / 6)


def _sdf_triangle(u, v):
    # equilateral, circumradius 0.98, apex up: inradius 0.49
    side = _COS30 * np.abs(u) + 0.5 * v
    return np.maximum(side, -v) - 0.49


_STAR_TIP, _STAR_INNER, _STAR_POINTS = 0.98, 0.45, 5
_STAR_SECTOR = 2 * math.pi / _STAR_POINTS
# Edge of the star inside one half-sector: from the tip (tip, 0) to the inner vertex.
_ex = _STAR_INNER * math.cos(_STAR_SECTOR / 2) - _STAR_TIP
_ey = _STAR_INNER * math.sin(_STAR_SECTOR / 2)
_en = math.hypot(_ex, _ey)
_STAR_NORMAL = (_ey / _en, -_ex / _en)   # points away from the centre


def _sdf_star(u, v):
    r = _radius(u, v)
    angle = np.arctan2(u, v)  # 0 along +v: a tip points up
    folded = np.abs(np.mod(angle + _STAR_SECTOR / 2, _STAR_SECTOR) - _STAR_SECTOR / 2)
    x, y = r * np.cos(folded), r * np.sin(folded)
    return _STAR_NORMAL[0] * (x - _STAR_TIP) + _STAR_NORMAL[1] * y


def _sdf_plus(u, v):
    return np.minimum(_box(u, v, 0.92, 0.30), _box(u, v, 0.30, 0.92))


def _sdf_crescent(u, v):
    return np.maximum(_radius(u, v) - 0.92, 0.74 - _radius(u - 0.42, v))


def _sdf_l_shape(u, v):
    return np.minimum(_box(u + 0.40, v, 0.26, 0.66), _box(u, v + 0.40, 0.66, 0.26))


def _sdf_t_shape(u, v):
    return np.minimum(_box(u, v - 0.45, 0.70, 0.24), _box(u, v + 0.055, 0.24, 0.745))


_HEART_A, _HEART_C = 0.70, -0.0725   # diamond |u| + |v - c| <= a with two disks on its top edges


def _sdf_heart(u, v):
    diamond = (np.abs(u) + np.abs(v - _HEART_C) - _HEART_A) * (1 / math.sqrt(2))
    lobes = _radius(np.abs(u) - _HEART_A / 2, v - (_HEART_C + _HEART_A / 2)) - _HEART_A / math.sqrt(2)
    return np.minimum(diamond, lobes)


_SHAPES: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _sdf_disk, _sdf_ring, _sdf_square, _sdf_triangle, _sdf_star,
    _sdf_plus, _sdf_crescent, _sdf_l_shape, _sdf_t_shape, _sdf_heart,
)
assert len(_SHAPES) == len(CLASS_NAMES)


# ------------------------------------------------------------------------------------------
# random numbers: one stream per split, a fixed slice of it per image
# ------------------------------------------------------------------------------------------
def _first_labels(spec: EmbeddedSpec, split: str, indices: np.ndarray) -> np.ndarray:
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


def _layout(n_obj: int, multi: bool = False) -> dict[str, tuple[int, ...]]:
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


def _draw(spec: EmbeddedSpec, split: str, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Every random number of images ``lo:hi``, laid out by :func:`_layout`, plus pixel grain.

    Each split has one stream of uniform numbers in which image ``i`` owns the ``k`` numbers
    from position ``i * k`` on (a PCG64 generator jumps there directly), so an image's numbers
    depend only on the seed, the split and its index. Its grain is a window of a fixed random
    byte sequence of the split, at an offset given by its last number.
    """
    layout = _layout(spec.n_objects, spec.multi)
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


# ------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------
def _interp_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Left control point and weight of the right one, per output pixel, for linear
    interpolation of n_in control points spread across n_out pixels."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    return lo, (pos - lo).astype(np.float32)


def _upsample(grids: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of (..., a, b) control grids to (..., h, w)."""
    lo, f = _interp_taps(h, grids.shape[-2])
    f = f[:, None]
    rows = grids[..., lo, :] * (1 - f) + grids[..., lo + 1, :] * f
    lo, f = _interp_taps(w, grids.shape[-1])
    return rows[..., lo] * (1 - f) + rows[..., lo + 1] * f


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The interpolation of :func:`_interp_taps` as a (n_out, n_in) matrix."""
    lo, f = _interp_taps(n_out, n_in)
    out = np.zeros((n_out, n_in), np.float32)
    out[np.arange(n_out), lo] = 1 - f
    out[np.arange(n_out), lo + 1] = f
    return out


_ROW_BLOCK = 32


def _background(colours: np.ndarray, detail: np.ndarray, size: int) -> np.ndarray:
    """Smooth colour field (N, a, a, 3) plus brightness ripples (N, b, b), both bilinearly
    interpolated from their control points: (N, 3, size, size).

    Computed as ``W @ blockdiag(colours[c], detail) @ W.T`` with ``W = [W_a | W_b]``, the left
    product in blocks of 32 output rows: small matrix products, which BLAS runs on one thread
    (a multi-threaded BLAS inside every pool worker would only compete for the same cores).
    """
    n, a, b = len(colours), colours.shape[1], detail.shape[1]
    weights = np.concatenate([_interp_matrix(size, a), _interp_matrix(size, b)], axis=1)
    grid = np.zeros((n, 3, a + b, a + b), np.float32)
    grid[:, :, :a, :a] = np.moveaxis(colours, -1, 1)
    grid[:, :, a:, a:] = detail[:, None]
    blocks = -(-size // _ROW_BLOCK)
    left = np.zeros((blocks * _ROW_BLOCK, a + b), np.float32)
    left[:size] = weights
    right = grid @ weights.T                                          # (n, 3, a+b, size)
    field = left.reshape(blocks, _ROW_BLOCK, a + b) @ right[:, :, None]  # (n, 3, blocks, 32, size)
    field = field.reshape(n, 3, blocks * _ROW_BLOCK, size)
    return field if blocks * _ROW_BLOCK == size else np.ascontiguousarray(field[:, :, :size])


def _lerp(lo: float, hi: float, u):
    return lo + (hi - lo) * u


class _Instances:
    """Shapes to draw, one per image of the chunk, each computed in a square window of ``w``
    pixels. A window holds its whole shape, or the part of it inside the image: it is centred on
    the shape, then slid inside the image (``2 * radius + 4 <= w <= size``)."""

    def __init__(self, classes, cx, cy, radius, angle, w, size, image_rows=None):
        self.classes = np.asarray(classes, np.int64)
        self.angle, self.size = angle, size
        # which image of the chunk each instance belongs to
        self.image_rows = np.arange(len(self.classes)) if image_rows is None else image_rows
        self.cx, self.cy = np.asarray(cx, np.float64), np.asarray(cy, np.float64)
        self.radius = np.asarray(radius, np.float64)
        self.w = w
        self.x0 = np.clip(np.floor(self.cx).astype(np.int64) - w // 2, 0, size - w)
        self.y0 = np.clip(np.floor(self.cy).astype(np.int64) - w // 2, 0, size - w)
        grid = np.arange(w, dtype=np.float64) + 0.5
        # pixel offsets from the centre, y down: (N, 1, w) and (N, w, 1)
        self.dx = (self.x0[:, None] + grid - self.cx[:, None]).astype(np.float32)[:, None, :]
        self.dy = (self.y0[:, None] + grid - self.cy[:, None]).astype(np.float32)[:, :, None]
        c = np.cos(angle).astype(np.float32)[:, None, None]
        s = np.sin(angle).astype(np.float32)[:, None, None]
        inv_r = (1 / self.radius).astype(np.float32)[:, None, None]
        self.u = (c * self.dx + s * self.dy) * inv_r
        self.v = (s * self.dx - c * self.dy) * inv_r

    def moved(self, dx=0.0, dy=0.0, scale=1.0, turn=0.0) -> _Instances:
        """The same shapes shifted by ``(dx, dy)`` pixels, scaled and turned (radians), each in
        its own window of the same side (``scale`` must leave the shape inside it)."""
        return _Instances(self.classes, self.cx + dx, self.cy + dy, self.radius * scale,
                          self.angle + turn, self.w, self.size, self.image_rows)

    def _window_view(self, canvas: np.ndarray):
        """Writeable view of every window of ``canvas`` (images, [C,] size, size) and the index
        picking this instance's ones: ``view[index]`` is (N, [C,] w, w)."""
        axes = (canvas.ndim - 2, canvas.ndim - 1)
        view = sliding_window_view(canvas, (self.w, self.w), axis=axes, writeable=True)
        channels = (slice(None),) * (canvas.ndim - 3)
        return view, (self.image_rows, *channels, self.y0, self.x0)

    def gather(self, canvas: np.ndarray) -> np.ndarray:
        """Copy of each instance's window: (N, [C,] w, w)."""
        view, index = self._window_view(canvas)
        return view[index]

    def scatter(self, canvas: np.ndarray, values: np.ndarray) -> None:
        """Write (N, [C,] w, w) into each instance's window (one instance per image)."""
        view, index = self._window_view(canvas)
        view[index] = values

    def sdf(self, cut_angle=None, cut_offset=None) -> np.ndarray:
        """Signed distance in pixels, (N, w, w); optionally keeping one side of a line."""
        n, w = len(self.classes), self.w
        out = np.empty((n, w, w), np.float32)
        for k in np.unique(self.classes):
            sel = self.classes == k
            out[sel] = _SHAPES[k](self.u[sel], self.v[sel])
        if cut_angle is not None:
            nx = np.cos(cut_angle).astype(np.float32)[:, None, None]
            ny = np.sin(cut_angle).astype(np.float32)[:, None, None]
            off = np.asarray(cut_offset, np.float32)[:, None, None]
            np.maximum(out, nx * self.u + ny * self.v - off, out=out)
        return out * self.radius.astype(np.float32)[:, None, None]

    def texture(self, kinds, params, noise_grids) -> np.ndarray:
        """Mix factor in [0, 1] between an instance's two colours, (N, w, w)."""
        n, w = len(self.classes), self.w
        out = np.zeros((n, w, w), np.float32)
        r = self.radius.astype(np.float32)
        angle, scale, phase, phase2 = (params[:, i].astype(np.float32) for i in range(4))
        for kind in np.unique(kinds):
            name = TEXTURE_NAMES[kind]
            sel = kinds == kind
            if name == "solid":
                continue
            ca = np.cos(angle[sel] * 2 * np.pi)[:, None, None]
            sa = np.sin(angle[sel] * 2 * np.pi)[:, None, None]
            dx, dy, rs = self.dx[sel], self.dy[sel], r[sel][:, None, None]
            along = ca * dx + sa * dy
            if name == "stripes":
                period = rs * _lerp(0.35, 0.9, scale[sel])[:, None, None]
                wave = np.sin(along * (2 * np.pi / period) + phase[sel][:, None, None] * 2 * np.pi)
                t = 0.5 + wave * np.maximum(period / (2 * np.pi), 0.5)
            elif name == "checker":
                cell = rs * _lerp(0.3, 0.7, scale[sel])[:, None, None]
                across = ca * dy - sa * dx
                wave = (np.sin(along * (np.pi / cell) + phase[sel][:, None, None] * 2 * np.pi)
                        * np.sin(across * (np.pi / cell) + phase2[sel][:, None, None] * 2 * np.pi))
                t = 0.5 + wave * np.maximum(cell / 2, 0.5)
            elif name == "noise":
                field = _upsample(noise_grids[sel].astype(np.float32), w, w)
                t = 0.5 + (field - 0.5) * 3
            elif name == "split":
                t = 0.5 + along - (phase[sel] - 0.5)[:, None, None] * 0.6 * rs
            else:  # gradient
                t = 0.5 + along / (1.9 * rs)
            out[sel] = np.clip(t, 0, 1)
        return out


def _blend(instances: _Instances, canvas: np.ndarray, alpha, colour) -> None:
    """Paint ``colour`` ((N, C, w, w) or (N, C, 1, 1)) over each instance's window with
    coverage ``alpha`` (N, w, w)."""
    window = instances.gather(canvas)                     # (N, C, w, w)
    window += alpha[:, None] * (colour - window)
    instances.scatter(canvas, window)


def _composite(instances: _Instances, canvas: np.ndarray, alpha, c1, c2, mix) -> None:
    """Paint each instance, coloured ``c1 + _TEXTURE_CONTRAST * mix * (c2 - c1)``, with
    coverage ``alpha``."""
    colour = c1[:, :, None, None] + mix[:, None] * (_TEXTURE_CONTRAST * (c2 - c1))[:, :, None, None]
    _blend(instances, canvas, alpha, colour)


def _window_side(max_radius: float, size: int) -> int:
    """Side of the square windows holding shapes of radius up to ``max_radius`` pixels with
    their anti-aliased rim, whatever the sub-pixel position of the centre."""
    return min(size, 2 * math.ceil(max_radius + 2))


def _pick_first_ok(ok: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per row, the first column where ``ok``, else the column with the best score."""
    return np.where(ok.any(axis=1), ok.argmax(axis=1), score.argmax(axis=1))


def _chunk_size(size: int) -> int:
    return max(8, int(128 * (64 / size) ** 2))


@dataclass
class _Layer:
    """One shape per image of some rows of the chunk (a layer of fragments, or one object of
    every image), with everything a look needs to paint it."""

    inst: _Instances
    sdf: np.ndarray               # signed distance in pixels, (N, w, w)
    slot: int                     # the shape's place among an image's shapes: objects first
    texture_kinds: np.ndarray     # (N,) index into TEXTURE_NAMES
    texture_params: np.ndarray    # (N, 4)
    noise_grid: np.ndarray        # (N, _NOISE_GRID, _NOISE_GRID)
    colours: np.ndarray           # fragments: (N, 2, 3) uniforms; objects: (N, 2, candidates, 3)
    is_object: bool
    cut: tuple[np.ndarray, np.ndarray] | None = None   # fragments: the half-plane kept

    @property
    def rows(self) -> np.ndarray:
        return self.inst.image_rows

    def texture(self) -> np.ndarray:
        return self.inst.texture(self.texture_kinds, self.texture_params, self.noise_grid)

    def sdf_of(self, inst: _Instances) -> np.ndarray:
        """The signed distance of this layer's shapes placed as ``inst`` (e.g. moved)."""
        return inst.sdf() if self.cut is None else inst.sdf(*self.cut)


def _place_objects(radius: np.ndarray, margin: np.ndarray, span: np.ndarray, present: np.ndarray,
                   layouts: np.ndarray, quadrants: np.ndarray, s: int) -> np.ndarray:
    """Centres (n, n_obj, 2) of the multi variant's objects: the first of the candidate layouts
    (uniforms (n, L, n_obj, 2), one position per object) where the present objects keep clear of
    each other (unit disks 2 pixels apart), so that a layout is uniform among the clear ones.

    Large objects sometimes find no clear candidate; such an image puts each object inside its
    own quadrant of the image (drawn by ranking the uniforms ``quadrants`` (n, 4)), at the first
    candidate's relative position there: clear by construction, as the object radii stay below
    a quarter of the side less a pixel."""
    n, n_obj = present.shape
    cand = margin[:, None, :, None] + layouts * span[:, None, :, None]              # (n, L, n_obj, 2)
    dist = np.linalg.norm(cand[:, :, :, None, :] - cand[:, :, None, :, :], axis=-1)  # (n, L, n_obj, n_obj)
    need = radius[:, None, :, None] + radius[:, None, None, :] + 2.0
    both = present[:, None, :, None] & present[:, None, None, :] & ~np.eye(n_obj, dtype=bool)
    gap = np.where(both, dist - need, np.inf).min(axis=(2, 3))                       # (n, L)
    ok = gap >= 0
    centres = cand[np.arange(n), ok.argmax(axis=1)]
    stuck = ~ok.any(axis=1)
    corner = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float64)[np.argsort(quadrants, axis=1)[:, :n_obj]]
    in_quadrant = (corner * (s / 2) + margin[:, :, None]
                   + layouts[:, 0] * (s / 2 - 2 * margin[:, :, None]))              # (n, n_obj, 2)
    centres[stuck] = in_quadrant[stuck]
    return centres


def _render_chunk(spec: EmbeddedSpec, split: str, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Images ``lo:hi`` of a split as arrays (the unit of work of the process pool)."""
    return _render(spec, split, lo, hi, with_distractors=True)


def _render(spec: EmbeddedSpec, split: str, lo: int, hi: int,
            with_distractors: bool = True) -> dict[str, np.ndarray]:
    """Draw the given images, all at once: background, then the distractor fragments layer by
    layer, then the object(s), in the look of the spec's domain. ``with_distractors=False``
    leaves the fragments out and changes nothing else (to check what they add)."""
    s, n_obj, n = spec.size, spec.n_objects, hi - lo
    rnd = _draw(spec, split, lo, hi)
    look = _LOOKS[spec.domain]
    style = _draw_style(spec, split, lo, hi, look.layout(n_obj))
    k, n_tex = len(CLASS_NAMES), len(TEXTURE_NAMES)
    rows = np.arange(n)

    # --- objects: classes, sizes and non-overlapping positions
    labels = np.empty((n, n_obj), np.int64)
    labels[:, 0] = _first_labels(spec, split, np.arange(lo, hi))
    if spec.pair:
        step = 1 + np.floor(rnd["second_label"][:, 0] * (k - 1)).astype(np.int64)
        labels[:, 1] = (labels[:, 0] + step) % k
    present = np.ones((n, n_obj), bool)
    if spec.multi:
        count = 1 + np.minimum((rnd["count"][:, 0] * n_obj).astype(np.int64), n_obj - 1)
        present = np.arange(n_obj)[None, :] < count[:, None]
        # the other objects' classes: a random order of the classes, the first one's put first
        order_keys = rnd["class_order"].copy()
        order_keys[rows, labels[:, 0]] = -1
        labels[:, 1:] = np.argsort(order_keys, axis=1, kind="stable")[:, 1:n_obj]
        labels[~present] = -1
    r_range = _MULTI_OBJECT_RADIUS if spec.multi else _PAIR_OBJECT_RADIUS if spec.pair else _OBJECT_RADIUS
    obj = rnd["obj"]                                       # (n, n_obj, 7)
    radius = _lerp(*r_range, obj[..., 0]) * s              # (n, n_obj), pixels
    margin = radius + 1.0                                  # shapes fit in the unit disk
    span = s - 2 * margin
    if spec.multi:
        centres = _place_objects(radius, margin, span, present, rnd["multi_layouts"], rnd["quadrants"], s)
    else:
        centres = np.empty((n, n_obj, 2))
        centres[:, 0] = margin[:, :1] + rnd["positions"][:, 0] * span[:, :1]
    if spec.pair:
        cand = margin[:, 1, None, None] + rnd["positions"][:, 1:] * span[:, 1, None, None]
        dist = np.linalg.norm(cand - centres[:, :1], axis=-1)
        ok = dist >= (radius[:, 0] + radius[:, 1] + 2.0)[:, None]
        centres[:, 1] = cand[rows, _pick_first_ok(ok, dist)]
        stuck = ~ok.any(axis=1)           # fall back to opposite corners
        centres[stuck, 0] = margin[stuck, 0, None]
        centres[stuck, 1] = (s - margin[stuck, 1])[:, None]

    # --- background (N, C, s, s), in the look of the domain
    canvas = look.background(rnd, style, s)
    noise_grids = rnd["noise_grids"]
    w_obj = _window_side(r_range[1] * s, s)
    w_dis = _window_side(_DISTRACTOR_RADIUS[1] * s, s)

    # --- distractors: smaller shapes cut by a half-plane, kept off the objects when possible
    n_dis = MIN_DISTRACTORS + np.floor(
        rnd["n_dis"][:, 0] * (MAX_DISTRACTORS - MIN_DISTRACTORS + 1)).astype(np.int64)
    for d in range(MAX_DISTRACTORS):
        p = rnd["dis"][:, d]                               # (n, 10)
        r_d = _lerp(*_DISTRACTOR_RADIUS, p[:, 1]) * s
        cand = rnd["dis_positions"][:, d] * s              # (n, M, 2)
        gap = (np.linalg.norm(cand[:, :, None, :] - centres[:, None, :, :], axis=-1)
               - (0.95 * radius[:, None, :] + 0.6 * r_d[:, None, None]))
        if spec.multi:                                     # absent objects leave room
            gap = np.where(present[:, None, :], gap, np.inf)
        gap = gap.min(axis=-1)
        pos = cand[rows, _pick_first_ok(gap >= 0, gap)]
        sub = np.flatnonzero((d < n_dis) & with_distractors)
        if len(sub) == 0:
            continue
        classes = np.minimum((p[sub, 0] * k).astype(np.int64), k - 1)
        inst = _Instances(classes, pos[sub, 0], pos[sub, 1], r_d[sub], p[sub, 2] * 2 * np.pi,
                          w_dis, s, image_rows=sub)
        cut = (p[sub, 3] * 2 * np.pi, _lerp(-0.35, 0.35, p[sub, 4]))
        look.paint(canvas, _Layer(
            inst, inst.sdf(*cut), n_obj + d,
            np.minimum((p[sub, 5] * n_tex).astype(np.int64), n_tex - 1), p[sub, 6:10],
            noise_grids[sub, n_obj + d], rnd["dis_colours"][sub, d], is_object=False, cut=cut,
        ), style)

    # --- objects on top, coloured to stand out from what surrounds them
    masks = np.zeros((n, n_obj, s, s), bool)
    for j in range(n_obj):
        # the images showing object j: all of them, but in the multi variant
        sub = np.flatnonzero(present[:, j]) if spec.multi else None
        pick = slice(None) if sub is None else sub
        if sub is not None and len(sub) == 0:
            continue
        p = obj[pick, j]
        inst = _Instances(labels[pick, j], centres[pick, j, 0], centres[pick, j, 1], radius[pick, j],
                          p[:, 1] * 2 * np.pi, w_obj, s, image_rows=sub)
        sdf = inst.sdf()
        look.paint(canvas, _Layer(
            inst, sdf, j, np.minimum((p[:, 2] * n_tex).astype(np.int64), n_tex - 1), p[:, 3:7],
            noise_grids[pick, j], rnd["obj_colours"][pick, j], is_object=True,
        ), style)
        inst.scatter(masks[:, j], sdf <= 0)

    images = look.finish(canvas, rnd, style)
    rows_any, cols_any = masks.any(axis=3), masks.any(axis=2)      # (n, n_obj, s)
    boxes = np.stack([cols_any.argmax(-1), rows_any.argmax(-1),
                      s - cols_any[..., ::-1].argmax(-1), s - rows_any[..., ::-1].argmax(-1)], axis=-1)
    boxes[~present] = 0
    out = {"images": images, "labels": labels, "masks": masks, "boxes": boxes.astype(np.int64),
           "n_distractors": n_dis if with_distractors else np.zeros(n, np.int64)}
    if spec.multi:
        out["n_objects"] = present.sum(axis=1).astype(np.int64)
    if n_obj == 1:
        for key in ("labels", "masks", "boxes"):
            out[key] = out[key][:, 0]
    return out


# ------------------------------------------------------------------------------------------
# looks: how a scene's shapes are painted. The original look (no domain) and the domains.
# ------------------------------------------------------------------------------------------
def _draw_style(spec: EmbeddedSpec, split: str, lo: int, hi: int,
                layout: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The domain's own uniform numbers for images ``lo:hi``, float32, laid out by ``layout``:
    a stream per seed, split and domain in which image ``i`` owns the numbers from ``i * k`` on,
    as in :func:`_draw` (so they too depend only on the seed, the split and the index)."""
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


def _contrasting_colours(layer: _Layer, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An object's two colours: of its candidates (light, as fragments), the first that stands
    out from the band of pixels just outside it, else the one that stands out most."""
    sdf, rows = layer.sdf, np.arange(len(layer.sdf))
    band = ((sdf > 0) & (sdf <= 2.5)).astype(np.float32)
    under = layer.inst.gather(canvas)                        # (n, 3, w, w)
    around = np.einsum("ncij,nij->nc", under, band) / np.maximum(
        band.sum(axis=(1, 2)), 1)[:, None]
    picked = []
    for c in range(2):
        cand = _lerp(*_FOREGROUND_LEVELS, layer.colours[:, c])   # (n, C, 3)
        dist = np.linalg.norm(cand - around[:, None, :], axis=-1)
        picked.append(cand[rows, _pick_first_ok(dist >= _MIN_CONTRAST, dist)].astype(np.float32))
    return picked[0], picked[1]


def _layer_colours(layer: _Layer, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A shape's two colours as in the original look: fragments' drawn, objects' contrasting."""
    if layer.is_object:
        return _contrasting_colours(layer, canvas)
    colours = _lerp(*_FOREGROUND_LEVELS, layer.colours).astype(np.float32)
    return colours[:, 0], colours[:, 1]


def _to_uint8(canvas: np.ndarray, grain: np.ndarray | None, amplitude: float) -> np.ndarray:
    """(N, C, s, s) in [0, 1] to uint8 (N, s, s, C), with uniform grain of ``amplitude`` from
    random bytes ``grain`` (None: no grain): after adding 0.5 and clipping to [0, 255.5), the
    conversion's truncation is the floor."""
    levels = amplitude * 255
    canvas *= 255
    if grain is None:
        canvas += np.float32(0.5)
    else:
        canvas += grain * np.float32(2 * levels / 255) + np.float32(0.5 - levels)
    np.clip(canvas, 0, 255.49, out=canvas)
    return canvas.astype(np.uint8).transpose(0, 2, 3, 1).copy()


def _offsets_from_centre(layer: _Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel of the windows, the offset from the shape's centre in units of its radius,
    (N, 1, w) and (N, w, 1), and the radius in pixels (N, 1, 1)."""
    r = layer.inst.radius.astype(np.float32)[:, None, None]
    return layer.inst.dx / r, layer.inst.dy / r, r


# Light falls from the upper left (image x right, y down), as a unit vector towards the light.
_LIGHT = (-math.sqrt(0.5), -math.sqrt(0.5))
_INK = np.array([0.06, 0.05, 0.08], np.float32)    # cartoon outlines


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(N,) hue, saturation and value in [0, 1] to (N, 3) RGB."""
    k = (np.array([5, 3, 1], np.float32) + hue[:, None] * 6) % 6
    return value[:, None] * (1 - saturation[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))


def _blur(canvas: np.ndarray, passes: int) -> np.ndarray:
    """``passes`` times the separable [1, 2, 1] / 4 filter over the last two axes (edges
    repeated): a Gaussian of standard deviation ``sqrt(passes / 2)`` pixels."""
    quarter, half = np.float32(0.25), np.float32(0.5)
    for _ in range(passes):
        for axis in (canvas.ndim - 1, canvas.ndim - 2):
            def part(index, axis=axis):
                return (slice(None),) * axis + (index,)
            out = np.empty_like(canvas)
            out[part(slice(1, -1))] = ((canvas[part(slice(None, -2))] + canvas[part(slice(2, None))]) * quarter
                                       + canvas[part(slice(1, -1))] * half)
            out[part(0)] = canvas[part(0)] * (1 - quarter) + canvas[part(1)] * quarter
            out[part(-1)] = canvas[part(-1)] * (1 - quarter) + canvas[part(-2)] * quarter
            canvas = out
    return canvas


class _Look:
    """The original look (no domain): light shapes, textured with two colours, on a dark
    smooth colour field with brightness ripples, and uniform pixel grain."""

    def layout(self, n_obj: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the uniform numbers the look draws per image, besides the scene's own."""
        return {}

    def background(self, rnd: dict, style: dict, s: int) -> np.ndarray:
        """The canvas before any shape is painted, (N, C, s, s) float32 in [0, 1]."""
        return _background(_lerp(*_BACKGROUND_LEVELS, rnd["background"]), (rnd["detail"] - 0.5) * 0.25, s)

    def paint(self, canvas: np.ndarray, layer: _Layer, style: dict) -> None:
        c1, c2 = _layer_colours(layer, canvas)
        _composite(layer.inst, canvas, np.clip(0.5 - layer.sdf, 0, 1), c1, c2, layer.texture())

    def finish(self, canvas: np.ndarray, rnd: dict, style: dict) -> np.ndarray:
        """The painted canvas as uint8 images (N, s, s, 3)."""
        return _to_uint8(canvas, rnd["grain"], _PIXEL_GRAIN)


class _PhotoLook(_Look):
    """"photo": the original look made richer. The ground gets a fine mottled texture and an
    illumination ramp; every shape casts a soft drop shadow, is shaded as a bevelled solid lit
    from the upper left (bright rim towards the light, dark rim away from it, a gentle ramp
    across it) and has a soft specular highlight."""

    def layout(self, n_obj):
        return {"mottle": (12, 12), "ramp": (2,)}

    def background(self, rnd, style, s):
        field = super().background(rnd, style, s)
        field += ((_upsample(style["mottle"], s, s) - 0.5) * 0.14)[:, None]
        angle = style["ramp"][:, 0] * 2 * np.pi
        pos = (np.arange(s, dtype=np.float32) + 0.5) / s - 0.5
        along = (np.cos(angle)[:, None, None] * pos[None, None, :]
                 + np.sin(angle)[:, None, None] * pos[None, :, None])      # (N, s, s) in [-0.71, 0.71]
        field *= (1 + along * _lerp(0.3, 0.8, style["ramp"][:, 1])[:, None, None])[:, None]
        return np.clip(field, 0, 1, out=field)

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        r = inst.radius.astype(np.float32)[:, None, None]
        # drop shadow, down and to the right, away from the light
        offset = 0.14 * inst.radius
        shadow = inst.moved(offset, offset)
        s_sdf = layer.sdf_of(shadow)
        px = inst.size / 64
        darkness = 0.5 * np.clip((1.5 * px - s_sdf) / (3 * px), 0, 1)
        window = shadow.gather(canvas)
        window *= 1 - darkness[:, None]
        shadow.scatter(canvas, window)
        # textured colour, then shading
        c1, c2 = _layer_colours(layer, canvas)
        mix = layer.texture()
        colour = c1[:, :, None, None] + mix[:, None] * (_TEXTURE_CONTRAST * (c2 - c1))[:, :, None, None]
        gy, gx = np.gradient(sdf, axis=(1, 2))
        norm = np.maximum(np.sqrt(gx * gx + gy * gy), 1e-3)
        facing = (gx * _LIGHT[0] + gy * _LIGHT[1]) / norm                 # outward normal . light
        rim = 1 - np.clip(-sdf / (0.35 * r), 0, 1)
        u, v, _ = _offsets_from_centre(layer)
        towards = np.clip(u * _LIGHT[0] + v * _LIGHT[1], -1, 1)
        shade = 1 + 0.45 * rim * facing + 0.18 * towards
        spot = np.exp(-((u - 0.4 * _LIGHT[0]) ** 2 + (v - 0.4 * _LIGHT[1]) ** 2) / 0.08)
        colour = colour * shade[:, None] + (0.35 * spot)[:, None] * (1 - colour)
        _blend(inst, canvas, np.clip(0.5 - sdf, 0, 1), np.clip(colour, 0, 1))


class _CartoonLook(_Look):
    """"cartoon": flat, saturated fills (random hue) with a dark outline and a hard-edged cel
    shadow on the side away from the light, on a plain pale background; no grain."""

    def layout(self, n_obj):
        return {"paper": (3,), "fill": (n_obj + MAX_DISTRACTORS, 3)}

    def background(self, rnd, style, s):
        colour = _lerp(0.72, 0.96, style["paper"])                       # (N, 3)
        return np.broadcast_to(colour[:, :, None, None], (len(colour), 3, s, s)).copy()

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        px = inst.size / 64
        hsv = style["fill"][layer.rows, layer.slot]                     # (N, 3)
        fill = _hsv_to_rgb(hsv[:, 0], _lerp(0.75, 1.0, hsv[:, 1]), _lerp(0.8, 1.0, hsv[:, 2]))
        u, v, r = _offsets_from_centre(layer)
        towards = (u * _LIGHT[0] + v * _LIGHT[1]) * r                     # pixels towards the light
        shade = 1 - 0.22 * np.clip(0.5 - (towards + 0.3 * r), 0, 1)
        colour = fill[:, :, None, None] * shade[:, None]
        _blend(inst, canvas, np.clip(0.5 - sdf, 0, 1), colour)
        width = 1.7 * px
        outline = np.clip(width / 2 + 0.5 - np.abs(sdf), 0, 1)
        _blend(inst, canvas, outline, _INK[None, :, None, None])

    def finish(self, canvas, rnd, style):
        return _to_uint8(canvas, None, 0.0)


class _SketchLook(_Look):
    """"sketch": grey pencil strokes on light paper. Each shape's contour is drawn twice, once
    exactly and once slightly off (shifted, scaled, turned), with a pressure that varies along
    it; some shapes are hatched inside with parallel lines. A shape hides the strokes beneath
    it (its inside is paper). Greyscale: the three channels are equal."""

    def layout(self, n_obj):
        n_shapes = n_obj + MAX_DISTRACTORS
        return {"paper": (1,), "fibres": (16, 16), "stroke": (n_shapes, 8),
                "pressure": (n_shapes, 5, 5)}

    def background(self, rnd, style, s):
        paper = _lerp(0.87, 0.97, style["paper"][:, 0])
        field = paper[:, None, None] + (_upsample(style["fibres"], s, s) - 0.5) * 0.05
        return field[:, None].astype(np.float32)                        # (N, 1, s, s)

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        px = inst.size / 64
        p = style["stroke"][layer.rows, layer.slot]                     # (N, 8)
        paper = _lerp(0.87, 0.97, style["paper"][layer.rows, 0])
        _blend(inst, canvas, np.clip(0.5 - sdf, 0, 1), paper[:, None, None, None])
        width = 1.1 * px
        line = np.clip(width / 2 + 0.5 - np.abs(sdf), 0, 1)
        again = inst.moved((p[:, 0] - 0.5) * 1.6 * px, (p[:, 1] - 0.5) * 1.6 * px,
                           scale=1 + (p[:, 2] - 0.5) * 0.08, turn=(p[:, 3] - 0.5) * 0.12)
        second = np.clip(width / 2 + 0.5 - np.abs(layer.sdf_of(again)), 0, 1)
        pressure = _lerp(0.55, 0.85, p[:, 4])[:, None, None] * (
            0.55 + 0.45 * _upsample(style["pressure"][layer.rows, layer.slot], inst.w, inst.w))
        # hatching: parallel lines inside, off the contour
        angle = p[:, 5] * np.pi
        along = np.cos(angle)[:, None, None] * inst.dx + np.sin(angle)[:, None, None] * inst.dy
        period = _lerp(2.5, 4.0, p[:, 6])[:, None, None] * px
        to_line = np.abs(np.mod(along / period, 1) - 0.5) * period
        hatch = np.clip(0.4 * px + 0.5 - to_line, 0, 1) * np.clip(-sdf - 1.5 * px, 0, 1)
        strength = np.clip(_lerp(-0.3, 0.6, p[:, 7]), 0, None)[:, None, None]   # a third unhatched
        keep = (1 - pressure * line) * (1 - 0.7 * pressure * second) * (1 - strength * hatch)
        window = inst.gather(canvas)
        window *= keep[:, None]
        inst.scatter(canvas, window)

    def finish(self, canvas, rnd, style):
        grey = _to_uint8(canvas, rnd["grain"][:, :1], 0.015)             # (N, s, s, 1)
        return np.repeat(grey, 3, axis=-1)


class _PaintingLook(_Look):
    """"painting": colours laid on in blotches and brush strokes. The ground is a smooth field
    of mid tones (lighter than the original look's) with strong colour blotches; each shape is
    painted with its colours plus per-channel blotches, with a wobbly, soft edge; coloured brush
    streaks (horizontal or vertical per image) then modulate the whole canvas, which is finally
    blurred (edges soften over about two pixels)."""

    def layout(self, n_obj):
        n_shapes = n_obj + MAX_DISTRACTORS
        return {"blotches": (3, 6, 6), "streaks": (3, 24, 6), "direction": (1,),
                "shape_blotches": (n_shapes, 3, 4, 4), "wobble": (n_shapes, 5, 5)}

    def background(self, rnd, style, s):
        field = _background(_lerp(0.15, 0.5, rnd["background"]), (rnd["detail"] - 0.5) * 0.25, s)
        field += (_upsample(style["blotches"], s, s) - 0.5) * 0.4
        return np.clip(field, 0, 1, out=field)

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        px = inst.size / 64
        c1, c2 = _layer_colours(layer, canvas)
        mix = layer.texture()
        colour = c1[:, :, None, None] + mix[:, None] * (_TEXTURE_CONTRAST * (c2 - c1))[:, :, None, None]
        blotches = _upsample(style["shape_blotches"][layer.rows, layer.slot], inst.w, inst.w)
        colour = np.clip(colour + (blotches - 0.5) * 0.3, 0, 1)
        wobble = (_upsample(style["wobble"][layer.rows, layer.slot], inst.w, inst.w) - 0.5) * 2.5 * px
        _blend(inst, canvas, np.clip(0.5 - (sdf + wobble) / (1.5 * px), 0, 1), colour)

    def finish(self, canvas, rnd, style):
        s = canvas.shape[-1]
        vertical = style["direction"][:, 0] < 0.5
        streaks = np.empty_like(canvas)                                   # (N, 3, s, s)
        streaks[~vertical] = _upsample(style["streaks"][~vertical], s, s)   # along x
        streaks[vertical] = _upsample(style["streaks"][vertical].swapaxes(-1, -2), s, s)
        canvas *= 1 + (streaks - 0.5) * 0.4
        canvas = _blur(canvas, max(1, round(2 * s / 64)))
        return _to_uint8(np.clip(canvas, 0, 1), rnd["grain"], 0.01)


_LOOKS: dict[str | None, _Look] = {
    None: _Look(), "photo": _PhotoLook(), "cartoon": _CartoonLook(), "sketch": _SketchLook(),
    "painting": _PaintingLook(),
}
assert set(_LOOKS) == {None, *EMBEDDED_DOMAINS}


# ------------------------------------------------------------------------------------------
# generation over a process pool
# ------------------------------------------------------------------------------------------
def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (not Linux)
        return os.cpu_count() or 1


def _render_job(job) -> dict[str, np.ndarray]:
    return _render_chunk(*job)


def _iter_chunks(spec: EmbeddedSpec, split: str, start: int, stop: int,
                 workers: int | None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Rendered pieces covering ``start:stop``, in order, as ``(offset from start, arrays)``.

    Work is cut on a fixed grid of chunk boundaries (a function of the spec only), so every image
    comes out of the same computation whatever the range and the number of workers.
    """
    if stop <= start:
        return
    size = _chunk_size(spec.size)
    jobs = []
    for lo in range(start // size * size, stop, size):
        jobs.append((spec, split, lo, min(lo + size, spec.split_size(split))))
    workers = _available_cpus() if workers is None else workers
    if workers < 1:
        raise BioattnError(f"workers must be at least 1, got {workers}")
    workers = min(workers, len(jobs))
    if workers <= 1 or multiprocessing.current_process().daemon:
        results = map(_render_job, jobs)
        pool = None
    else:
        # fork: workers need only numpy, and start in milliseconds instead of re-importing torch
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with warnings.catch_warnings():
            # the children run numpy code only, which is safe after fork
            warnings.filterwarnings("ignore", message=".*multi-threaded.*fork", category=DeprecationWarning)
            pool = multiprocessing.get_context(method).Pool(workers)
        results = pool.imap(_render_job, jobs)
    try:
        for (_, _, lo, hi), arrays in zip(jobs, results):
            a, b = max(lo, start), min(hi, stop)
            yield a - start, {key: value[a - lo:b - lo] for key, value in arrays.items()}
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def generate_split(spec: EmbeddedSpec, split: str, start: int = 0, stop: int | None = None,
                   workers: int | None = None) -> EmbeddedArrays:
    """Images ``start:stop`` of a split, computed now (no cache). ``workers`` processes (default:
    one per available CPU) share the work; the result does not depend on it."""
    n = spec.split_size(split)
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise BioattnError(f"range {start}:{stop} is outside the {split} split (0:{n})")
    out = _empty_arrays(spec, stop - start)
    for offset, arrays in _iter_chunks(spec, split, start, stop, workers):
        for key, value in arrays.items():
            out[key][offset:offset + len(value)] = value
    return EmbeddedArrays(**out)


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$BIOATTN_CACHE``, else ``~/.cache/bioattn``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("BIOATTN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bioattn"


def cache_path(spec: EmbeddedSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding the generated files of ``spec``."""
    return cache_root(cache_dir) / "embedded" / spec.key


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_name(split: str, field: str) -> str:
    return f"{split}_{field}.npy"


def _write_cache(spec: EmbeddedSpec, folder: Path, workers: int | None) -> None:
    splits = {}
    for split in SPLITS:
        n = spec.split_size(split)
        files = {
            field: np.lib.format.open_memmap(folder / _file_name(split, field), mode="w+",
                                             dtype=dtype, shape=(n, *shape))
            for field, (dtype, shape) in _field_layout(spec).items()
        }
        for offset, arrays in _iter_chunks(spec, split, 0, n, workers):
            for field, value in arrays.items():
                files[field][offset:offset + len(value)] = value
        entries = {}
        for field, array in files.items():
            array.flush()
            path = folder / _file_name(split, field)
            entries[field] = {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
        files.clear()
        splits[split] = {"n": n, "files": entries}
    manifest = {
        "format": _MANIFEST_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "generator_digest": generator_digest(),
        "key": spec.key,
        "spec": spec.record(),
        "class_names": list(CLASS_NAMES),
        "splits": splits,
    }
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


@functools.cache
def generator_digest() -> str:
    """Fingerprint of this module's code: a cache written by any other version of the generator
    (which may draw other images for the same spec) is not trusted. Comments, docstrings and
    layout are left out, so editing those keeps the cache."""
    return code_digest(Path(__file__).read_text(encoding="utf-8"))


def code_digest(source: str) -> str:
    """A digest of Python ``source`` that ignores comments, docstrings and layout."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def _read_manifest(spec: EmbeddedSpec, folder: Path) -> dict:
    """The folder's manifest, or an exception saying why it cannot be trusted."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable manifest ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        raise ValueError("manifest of an unknown format")
    if manifest.get("spec") != spec.record() or manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError("manifest describes another spec")
    if manifest.get("generator_digest") != generator_digest():
        raise ValueError("written by another version of the generator")
    if not isinstance(manifest.get("splits"), dict) or set(manifest["splits"]) != set(SPLITS):
        raise ValueError("manifest lacks splits")
    return manifest


def _open_split(spec: EmbeddedSpec, folder: Path, manifest: dict, split: str) -> EmbeddedArrays:
    """Check the split's files against the manifest and memory-map them (ValueError if bad)."""
    entry = manifest["splits"][split]
    files = entry.get("files") if isinstance(entry, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"manifest lacks the {split} files")
    n = spec.split_size(split)
    arrays = {}
    for field, (dtype, shape) in _field_layout(spec).items():
        info = files.get(field)
        if not isinstance(info, dict):
            raise ValueError(f"manifest lacks {split} {field}")
        path = folder / _file_name(split, field)
        if not path.is_file():
            raise ValueError(f"missing file {path.name}")
        if path.stat().st_size != info.get("bytes"):
            raise ValueError(f"{path.name} has the wrong size")
        if _sha256(path) != info.get("sha256"):
            raise ValueError(f"checksum mismatch in {path.name}")
        try:
            array = np.load(path, mmap_mode="c")  # copy-on-write: writable, cache untouched
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path.name} is unreadable ({exc.__class__.__name__})") from None
        if array.shape != (n, *shape) or array.dtype != dtype:
            raise ValueError(f"{path.name} holds {array.dtype}{array.shape}, expected "
                             f"{dtype}{(n, *shape)}")
        arrays[field] = array
    return EmbeddedArrays(**arrays)


def ensure_cached(spec: EmbeddedSpec, cache_dir: str | os.PathLike | None = None,
                  workers: int | None = None, force: bool = False) -> Path:
    """Generate ``spec`` into the cache unless a valid copy is there; return its folder.

    A folder that fails its checks (unreadable manifest, missing file, wrong checksum) is
    rebuilt, with a one-line warning. Files are written to a temporary folder then renamed.
    """
    folder = cache_path(spec, cache_dir)
    if not force and folder.exists():
        try:
            manifest = _read_manifest(spec, folder)
            for split in SPLITS:
                _open_split(spec, folder, manifest, split)
            return folder
        except ValueError as exc:
            log.warning("embedded data cache %s is damaged (%s); generating it again", folder, exc)
    _build(spec, folder, workers)
    return folder


def _build(spec: EmbeddedSpec, folder: Path, workers: int | None) -> None:
    try:
        atomic_dir(folder, lambda tmp: _write_cache(spec, tmp, workers))
    except OSError as exc:
        raise BioattnError(f"cannot write the embedded data cache at {folder}: {exc}") from None


def load_embedded(spec: EmbeddedSpec, split: str, cache_dir: str | os.PathLike | None = None,
                  workers: int | None = None) -> EmbeddedArrays:
    """One split of ``spec``, memory-mapped from the cache (generated there on first use)."""
    _check_split(split)
    folder = cache_path(spec, cache_dir)
    if folder.exists():
        try:
            return _open_split(spec, folder, _read_manifest(spec, folder), split)
        except ValueError as exc:
            log.warning("embedded data cache %s is damaged (%s); generating it again", folder, exc)
    _build(spec, folder, workers)
    try:
        return _open_split(spec, folder, _read_manifest(spec, folder), split)
    except ValueError as exc:  # pragma: no cover  (a file changed under our feet)
        raise BioattnError(f"embedded data cache {folder} is unreadable right after writing it: "
                           f"{exc}") from None


# ------------------------------------------------------------------------------------------
# torch dataset
# ------------------------------------------------------------------------------------------
class EmbeddedDataset(Dataset):
    """(normalised float image CHW, class) pairs from :class:`EmbeddedArrays`.

    ``transform``, if given, receives the uint8 CHW tensor (e.g. a torchvision v2 random flip)
    and returns a uint8 tensor or a float tensor in [0, 1]; normalisation by ``mean``/``std``
    (per channel, [0, 1] units) comes after it. For pairs the target is the first object's
    class; ``dataset.arrays`` keeps everything.
    """

    def __init__(self, arrays: EmbeddedArrays, mean: Sequence[float] = EMBEDDED_MEAN,
                 std: Sequence[float] = EMBEDDED_STD, transform: Callable | None = None):
        if len(mean) != 3 or len(std) != 3:
            raise BioattnError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise BioattnError(f"std must be positive, got {tuple(std)}")
        self.arrays = arrays
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.classes = list(arrays.class_names)
        self.targets = np.asarray(arrays.targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.array(self.arrays.images[index], copy=True)).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        return (x - self.mean) / self.std, int(self.targets[index])


class EmbeddedMultiLabel(EmbeddedDataset):
    """(normalised float image CHW, multi-hot float target (K,)) pairs: the target is 1 for the
    class of every object in the image (multi-label classification; for the multi variant,
    ``embedded:multi``, one to three distinct classes). Images, ``transform``, ``mean`` and
    ``std`` are as in :class:`EmbeddedDataset`; ``label_matrix`` holds every target (N, K)."""

    multilabel = True

    def __init__(self, arrays: EmbeddedArrays, mean: Sequence[float] = EMBEDDED_MEAN,
                 std: Sequence[float] = EMBEDDED_STD, transform: Callable | None = None):
        super().__init__(arrays, mean=mean, std=std, transform=transform)
        self.label_matrix = arrays.multi_hot()
        self.num_classes = len(self.classes)

    def __getitem__(self, index: int):
        x, _ = super().__getitem__(index)
        return x, torch.from_numpy(self.label_matrix[index].copy())


# ------------------------------------------------------------------------------------------
# preview
# ------------------------------------------------------------------------------------------
_OUTLINES = ("#00e5ff", "#ff2bd6", "#ffd000")


def preview(spec: EmbeddedSpec, out_png: str | os.PathLike, n: int = 16, split: str = "val") -> Path:
    """Write a PNG grid of the first ``n`` images of a split, object outlines drawn on them and
    class names as titles (several objects: first cyan, second magenta, third yellow)."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_split(split)
    if n < 1:
        raise BioattnError(f"n must be at least 1, got {n}")
    n = min(n, spec.split_size(split))
    arrays = generate_split(spec, split, 0, n)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.9 * cols, 2.05 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(arrays.images[i], interpolation="nearest")
        several = arrays.labels.ndim == 2
        masks = arrays.masks[i] if several else arrays.masks[i][None]
        labels = arrays.labels[i] if several else arrays.labels[i][None]
        for j, (mask, label) in enumerate(zip(masks, labels)):
            if label >= 0:
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[_OUTLINES[j]], linewidths=1.0)
        ax.set_title(" + ".join(CLASS_NAMES[c] for c in labels if c >= 0), fontsize=8)
    outlines = {2: "first cyan, second magenta", 3: "first cyan, second magenta, third yellow"}
    title = f"{spec} ({split})" + (f"   outlines: {outlines[spec.n_objects]}" if spec.n_objects > 1 else "")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out_png)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    return out


__all__ = [
    "CLASS_NAMES", "TEXTURE_NAMES", "SPLITS", "EMBEDDED_DOMAINS", "GENERATOR_VERSION", "generator_digest",
    "EMBEDDED_MEAN", "EMBEDDED_STD",
    "EMBEDDED_TASKS", "MULTI_MAX_OBJECTS",
    "EmbeddedSpec", "EmbeddedArrays", "EmbeddedDataset", "EmbeddedMultiLabel", "generate_split", "load_embedded",
    "ensure_cached", "cache_root", "cache_path", "preview",
]
