"""A scene: the objects' classes, sizes and non-overlapping positions, the distractor fragments
around them, each painted in the spec's look; with the objects' masks and boxes."""

from __future__ import annotations

import numpy as np

from .canvas import Instances, Layer, lerp, pick_first_ok, window_side
from .looks import LOOKS
from .spec import CLASS_NAMES, MAX_DISTRACTORS, MIN_DISTRACTORS, TEXTURE_NAMES, EmbeddedSpec
from .streams import draw, draw_style, first_labels

# Object and fragment radii as fractions of the image side. Every shape fits in the disk of
# radius 1 of its local frame; the largest, the disk, covers pi * 0.92**2 * 0.25**2 ~ 0.17 of
# the image, which leaves room for pixelation at 32 px.
_OBJECT_RADIUS = (0.14, 0.25)
_PAIR_OBJECT_RADIUS = (0.12, 0.20)
_MULTI_OBJECT_RADIUS = (0.10, 0.21)    # below a quarter of the side less a pixel (see _place_objects)
_DISTRACTOR_RADIUS = (0.07, 0.14)


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


def _object_layout(spec: EmbeddedSpec, split: str, lo: int, hi: int, rnd: dict[str, np.ndarray]):
    """The objects of images ``lo`` to ``hi``: their classes ``(n, n_obj)`` (-1 where absent),
    which are present, their radii and centres in pixels, and the radius range of the variant."""
    s, n_obj, n = spec.size, spec.n_objects, hi - lo
    k = len(CLASS_NAMES)
    rows = np.arange(n)
    labels = np.empty((n, n_obj), np.int64)
    labels[:, 0] = first_labels(spec, split, np.arange(lo, hi))
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
    radius = lerp(*r_range, obj[..., 0]) * s              # (n, n_obj), pixels
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
        centres[:, 1] = cand[rows, pick_first_ok(ok, dist)]
        stuck = ~ok.any(axis=1)           # fall back to opposite corners
        centres[stuck, 0] = margin[stuck, 0, None]
        centres[stuck, 1] = (s - margin[stuck, 1])[:, None]
    return labels, present, radius, centres, r_range


def render(spec: EmbeddedSpec, split: str, lo: int, hi: int,
           with_distractors: bool = True) -> dict[str, np.ndarray]:
    """Draw the given images, all at once: background, then the distractor fragments layer by
    layer, then the object(s), in the look of the spec's domain. ``with_distractors=False``
    leaves the fragments out and changes nothing else (to check what they add)."""
    s, n_obj, n = spec.size, spec.n_objects, hi - lo
    rnd = draw(spec, split, lo, hi)
    look = LOOKS[spec.domain]
    style = draw_style(spec, split, lo, hi, look.layout(n_obj))
    k, n_tex = len(CLASS_NAMES), len(TEXTURE_NAMES)
    rows = np.arange(n)

    # --- objects: classes, sizes and non-overlapping positions
    labels, present, radius, centres, r_range = _object_layout(spec, split, lo, hi, rnd)
    obj = rnd["obj"]                                       # (n, n_obj, 7)

    # --- background (N, C, s, s), in the look of the domain
    canvas = look.background(rnd, style, s)
    noise_grids = rnd["noise_grids"]
    w_obj = window_side(r_range[1] * s, s)
    w_dis = window_side(_DISTRACTOR_RADIUS[1] * s, s)

    # --- distractors: smaller shapes cut by a half-plane, kept off the objects when possible
    n_dis = MIN_DISTRACTORS + np.floor(
        rnd["n_dis"][:, 0] * (MAX_DISTRACTORS - MIN_DISTRACTORS + 1)).astype(np.int64)
    for d in range(MAX_DISTRACTORS):
        p = rnd["dis"][:, d]                               # (n, 10)
        r_d = lerp(*_DISTRACTOR_RADIUS, p[:, 1]) * s
        cand = rnd["dis_positions"][:, d] * s              # (n, M, 2)
        gap = (np.linalg.norm(cand[:, :, None, :] - centres[:, None, :, :], axis=-1)
               - (0.95 * radius[:, None, :] + 0.6 * r_d[:, None, None]))
        if spec.multi:                                     # absent objects leave room
            gap = np.where(present[:, None, :], gap, np.inf)
        gap = gap.min(axis=-1)
        pos = cand[rows, pick_first_ok(gap >= 0, gap)]
        sub = np.flatnonzero((d < n_dis) & with_distractors)
        if len(sub) == 0:
            continue
        classes = np.minimum((p[sub, 0] * k).astype(np.int64), k - 1)
        inst = Instances(classes, pos[sub, 0], pos[sub, 1], r_d[sub], p[sub, 2] * 2 * np.pi,
                         w_dis, s, image_rows=sub)
        cut = (p[sub, 3] * 2 * np.pi, lerp(-0.35, 0.35, p[sub, 4]))
        look.paint(canvas, Layer(
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
        inst = Instances(labels[pick, j], centres[pick, j, 0], centres[pick, j, 1], radius[pick, j],
                         p[:, 1] * 2 * np.pi, w_obj, s, image_rows=sub)
        sdf = inst.sdf()
        look.paint(canvas, Layer(
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
