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

The modules, from the spec to the pixels and on to their users: :mod:`.spec` (what a spec
names), :mod:`.arrays` (a split as arrays), :mod:`.streams` (the random numbers),
:mod:`.shapes` (the classes' signed distances), :mod:`.canvas` (painting shapes),
:mod:`.looks` (the original look and the four domains), :mod:`.scene` (one chunk of images),
:mod:`.generate` (chunks over a process pool), :mod:`.fingerprint` (what identifies the
generator's output), :mod:`.cache`, :mod:`.dataset` (torch data sets) and :mod:`.preview`.
"""

from ..stats import EMBEDDED_MEAN, EMBEDDED_STD
from .arrays import EmbeddedArrays
from .cache import cache_path, cache_root, ensure_cached, load_embedded
from .dataset import EmbeddedDataset, EmbeddedMultiLabel
from .fingerprint import generator_digest
from .generate import generate_split
from .preview import preview
from .spec import (
    CLASS_NAMES,
    EMBEDDED_DOMAINS,
    EMBEDDED_TASKS,
    GENERATOR_VERSION,
    MAX_DISTRACTORS,
    MAX_OBJECT_AREA,
    MIN_DISTRACTORS,
    MULTI_MAX_OBJECTS,
    SPLITS,
    TEXTURE_NAMES,
    EmbeddedSpec,
    is_embedded,
)

__all__ = [
    "CLASS_NAMES", "TEXTURE_NAMES", "SPLITS", "EMBEDDED_DOMAINS", "GENERATOR_VERSION", "generator_digest",
    "EMBEDDED_MEAN", "EMBEDDED_STD",
    "EMBEDDED_TASKS", "MULTI_MAX_OBJECTS", "MAX_OBJECT_AREA", "MIN_DISTRACTORS", "MAX_DISTRACTORS",
    "EmbeddedSpec", "EmbeddedArrays", "EmbeddedDataset", "EmbeddedMultiLabel", "generate_split", "load_embedded",
    "ensure_cached", "cache_root", "cache_path", "preview", "is_embedded",
]
