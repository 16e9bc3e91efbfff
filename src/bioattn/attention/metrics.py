"""Saliency metrics of the MIT saliency benchmark.

The seven metrics compared by Bylinskii et al., "What do different evaluation metrics tell us
about saliency models?" (TPAMI 2019), written from their definitions:

========== ===================================================================== ===========
key        definition                                                            better
========== ===================================================================== ===========
auc_judd   ROC area; thresholds at the saliency values of fixated pixels,        higher (1)
           negatives are all non-fixated pixels
auc_borji  ROC area; thresholds every ``step`` on the [0, 1]-rescaled map,       higher (1)
           negatives drawn uniformly from non-fixated pixels, averaged over
           ``n_splits`` draws
sauc       as ``auc_borji``, negatives drawn from fixations on other images      higher (1)
nss        mean of the z-scored saliency map at fixated pixels                   higher
cc         Pearson correlation between saliency map and fixation density map     higher (1)
sim        sum of the pixel-wise minimum of both maps, each normalised to sum 1  higher (1)
kl         sum(G * log(eps + G / (S + eps))), both normalised to sum 1           lower (0)
========== ===================================================================== ===========

Conventions (shared by every metric):

* Maps are numpy arrays or torch tensors of shape (H, W) (leading dimensions of size 1 are
  dropped). The saliency map is resized to the fixation map's size with bilinear interpolation
  (antialiased when shrinking), which keeps a non-negative map non-negative. The MATLAB code of
  the benchmark resizes with bicubic interpolation instead, so scores of maps that need resizing
  differ slightly from it.
* A fixation point map is nonzero at fixated pixels; a fixation density map is a non-negative
  map such as the fixations blurred with a Gaussian.
* Undefined scores are ``nan``: an empty fixation map (all AUCs and NSS), an empty density map
  (CC, SIM, KL), an empty ``other_fixations`` map (sAUC), or no non-fixated pixel to serve as a
  negative (AUC-Judd, AUC-Borji). :func:`average_scores` skips these and counts them.
* A constant saliency map (an all-zero one included) predicts every location equally: its AUCs
  are 0.5, its NSS and CC are 0, and SIM and KL treat it as the uniform distribution.
* Saliency maps with nan/inf values, negative saliency or density values for SIM and KL, and
  mismatched fixation map shapes raise :class:`~bioattn.errors.BioattnError`.
* The scores are deterministic. AUC-Judd uses no jitter: tied saliency values are handled
  exactly (a threshold keeps every pixel whose value is at least the threshold), whereas the
  MATLAB code adds random noise of order 1e-7 to break ties. AUC-Borji and sAUC draw their
  negatives from ``rng`` (a seed or a ``numpy.random.Generator``), seeded with 0 by default.
* NSS divides by the sample standard deviation (n - 1 in the denominator), as the benchmark's
  MATLAB code does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BioattnError

#: Machine epsilon of double precision (MATLAB's ``eps``), used by the KL divergence.
EPS = 2.2204e-16

#: Metric keys in the order :func:`score_all` returns them.
METRICS = ("auc_judd", "auc_borji", "sauc", "nss", "cc", "sim", "kl")

# A map whose range is below this fraction of its largest magnitude counts as constant: resizing a
# constant map can leave differences of a few units in the last place, which must not be z-scored.
_CONSTANT_RTOL = 1e-10
# Tolerance when comparing values with the AUC-Borji/sAUC thresholds k * step, so that a value
# equal to a threshold in exact arithmetic (0.3 against 3 * 0.1) counts as reaching it.
_THRESHOLD_ATOL = 1e-12


# ------------------------------------------------------------------------------------------
# input handling
# ------------------------------------------------------------------------------------------
def _as_map(a, what: str) -> np.ndarray:
    """``a`` as a 2-D float64 numpy array (torch tensors and leading size-1 dims accepted)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.float64)
    elif not (np.issubdtype(a.dtype, np.number)):
        raise BioattnError(f"{what} must be a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise BioattnError(f"{what} must be a 2-D (H, W) map, got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise BioattnError(f"{what} is empty (shape {tuple(a.shape)})")
    if not np.isfinite(a).all():
        raise BioattnError(f"{what} contains nan or inf values")
    return a


def resize_map(saliency, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D map to ``shape`` = (H, W) with bilinear interpolation (antialiased when shrinking).

    Returns float64; the map itself (as float64) when it already has that shape.
    """
    s = _as_map(saliency, "saliency map")
    shape = (int(shape[0]), int(shape[1]))
    if s.shape == shape:
        return s
    shrink = shape[0] < s.shape[0] or shape[1] < s.shape[1]
    t = torch.from_numpy(np.ascontiguousarray(s))[None, None]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=shrink)
    return out[0, 0].numpy()


def _points(fixation_points, what: str = "fixation map") -> np.ndarray:
    return _as_map(fixation_points, what) != 0


def _check_same_shape(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    if a.shape != b.shape:
        raise BioattnError(
            f"{what_a} has shape {a.shape} but {what_b} has shape {b.shape}; they must match"
        )


def _is_constant(s: np.ndarray) -> bool:
    lo, hi = float(s.min()), float(s.max())
    scale = max(abs(lo), abs(hi))
    return hi - lo <= _CONSTANT_RTOL * scale


def _rescale01(s: np.ndarray) -> np.ndarray:
    """Min-max rescaling to [0, 1]; a constant map becomes all zeros."""
    if _is_constant(s):
        return np.zeros_like(s)
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo)


def _as_distribution(m: np.ndarray, what: str, empty_is_uniform: bool) -> np.ndarray | None:
    """``m`` normalised to sum 1; ``None`` (or uniform) when it sums to zero."""
    if (m < 0).any():
        raise BioattnError(
            f"{what} has negative values; SIM and KL treat maps as distributions, so they need "
            "non-negative maps"
        )
    total = m.sum()
    if total <= 0:
        if empty_is_uniform:
            return np.full_like(m, 1.0 / m.size)
        return None
    return m / total


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


# ------------------------------------------------------------------------------------------
# location-based metrics
# ------------------------------------------------------------------------------------------
def auc_judd(saliency, fixation_points) -> float:
    """AUC-Judd: ROC area with thresholds at the saliency values of the fixated pixels.

    For each distinct saliency value ``t`` found at a fixated pixel (from high to low), the
    true-positive rate is the fraction of fixated pixels with saliency >= ``t`` and the
    false-positive rate the fraction of non-fixated pixels with saliency >= ``t``; the curve
    runs from (0, 0) through these points to (1, 1) and is integrated with the trapezoid rule.
    Because only fixated values serve as thresholds, the score can exceed the plain ROC area.
    A constant map scores 0.5. ``nan`` when there is no fixation or no non-fixated pixel.
    """
    fix = _points(fixation_points)
    s = resize_map(saliency, fix.shape)
    return _auc_judd(s, fix)


def _auc_judd(s: np.ndarray, fix: np.ndarray) -> float:
    n_fix = int(fix.sum())
    n_neg = fix.size - n_fix
    if n_fix == 0 or n_neg == 0:
        return math.nan
    if _is_constant(s):
        return 0.5
    pos = np.sort(s[fix])  # ascending
    neg = np.sort(s[~fix])
    thresholds = np.unique(pos)[::-1]  # distinct fixated values, descending
    # count of values >= t for each threshold, via binary search on the sorted arrays
    tp = (n_fix - np.searchsorted(pos, thresholds, side="left")) / n_fix
    fp = (n_neg - np.searchsorted(neg, thresholds, side="left")) / n_neg
    tp = np.concatenate(([0.0], tp, [1.0]))
    fp = np.concatenate(([0.0], fp, [1.0]))
    return _trapezoid(fp, tp)


def _auc_stepped(pos: np.ndarray, neg: np.ndarray, step: float) -> float:
    """Mean ROC area over splits (rows of ``neg``), thresholds k * step from the top value to 0.

    Every split uses the thresholds up to the largest value of all splits: thresholds above a
    split's own largest value add points at (0, 0), which add no area.
    """
    top = max(float(pos.max()), float(neg.max()))
    k_max = int(math.floor(top / step + 1e-9))
    thresholds = np.arange(k_max, -1, -1, dtype=np.float64) * step - _THRESHOLD_ATOL
    tp = (pos[None, :] >= thresholds[:, None]).mean(axis=1)  # (T,)
    fp = (neg[:, None, :] >= thresholds[None, :, None]).mean(axis=2)  # (splits, T)
    n_splits = neg.shape[0]
    tp = np.concatenate(([0.0], tp, [1.0]))
    fp = np.concatenate((np.zeros((n_splits, 1)), fp, np.ones((n_splits, 1))), axis=1)
    areas = np.sum((fp[:, 1:] - fp[:, :-1]) * (tp[1:] + tp[:-1]) / 2.0, axis=1)
    return float(areas.mean())


def _check_split_args(n_splits: int, step: float) -> None:
    if int(n_splits) != n_splits or n_splits < 1:
        raise BioattnError(f"n_splits must be a positive integer, got {n_splits}")
    if not (0.0 < step <= 1.0):
        raise BioattnError(f"step must be in (0, 1], got {step}")


def auc_borji(
    saliency,
    fixation_points,
    n_splits: int = 100,
    step: float = 0.1,
    rng=0,
    negatives: str = "nonfixated",
) -> float:
    """AUC-Borji: ROC area against uniformly sampled negatives, averaged over ``n_splits`` draws.

    The saliency map is rescaled to [0, 1]. Each split draws as many negative pixels as there
    are fixated pixels, uniformly with replacement; thresholds run over k * ``step`` from the
    largest positive or negative value down to 0; the true-positive rate is the fraction of
    fixated pixels at or above the threshold and the false-positive rate that of the drawn
    negatives. ``negatives="nonfixated"`` (default) draws from the non-fixated pixels;
    ``negatives="all"`` draws from every pixel, as the benchmark's MATLAB code does.
    ``rng`` is a seed or a ``numpy.random.Generator``. A constant map scores 0.5; ``nan`` when
    there is no fixation or nothing to draw negatives from.
    """
    fix = _points(fixation_points)
    s = resize_map(saliency, fix.shape)
    return _auc_borji(s, fix, n_splits, step, _generator(rng), negatives)


def _auc_borji(s, fix, n_splits, step, gen, negatives) -> float:
    _check_split_args(n_splits, step)
    if negatives not in ("nonfixated", "all"):
        raise BioattnError(f"negatives must be 'nonfixated' or 'all', got '{negatives}'")
    n_fix = int(fix.sum())
    if n_fix == 0:
        return math.nan
    s01 = _rescale01(s)
    pool = s01[~fix] if negatives == "nonfixated" else s01.ravel()
    if pool.size == 0:
        return math.nan
    pos = s01[fix]
    draws = gen.integers(0, pool.size, size=(int(n_splits), n_fix))
    return _auc_stepped(pos, pool[draws], step)


def sauc(
    saliency,
    fixation_points,
    other_fixations,
    n_splits: int = 100,
    step: float = 0.1,
    rng=0,
) -> float:
    """Shuffled AUC: as :func:`auc_borji`, with negatives at fixations from other images.

    ``other_fixations`` is a map of the fixation map's shape, nonzero where other images of
    the data set were fixated (which captures the centre bias shared by all images). Each split
    draws min(#fixations, #other fixations) of those pixels without replacement, so a map that
    only captures the centre bias scores near 0.5. ``nan`` when either map is empty.
    """
    fix = _points(fixation_points)
    other = _points(other_fixations, "other_fixations map")
    _check_same_shape(other, fix, "other_fixations map", "fixation map")
    s = resize_map(saliency, fix.shape)
    return _sauc(s, fix, other, n_splits, step, _generator(rng))


def _sauc(s, fix, other, n_splits, step, gen) -> float:
    _check_split_args(n_splits, step)
    n_fix = int(fix.sum())
    n_other = int(other.sum())
    if n_fix == 0 or n_other == 0:
        return math.nan
    s01 = _rescale01(s)
    pool = s01[other]
    n_draw = min(n_fix, n_other)
    draws = np.stack([gen.permutation(n_other)[:n_draw] for _ in range(int(n_splits))])
    return _auc_stepped(s01[fix], pool[draws], step)


def nss(saliency, fixation_points) -> float:
    """Normalized Scanpath Saliency: mean of the z-scored saliency map at fixated pixels.

    z = (S - mean(S)) / std(S) with the sample standard deviation (n - 1), as in the
    benchmark's MATLAB code. A constant map scores 0 (it singles out no location);
    ``nan`` when there is no fixation.
    """
    fix = _points(fixation_points)
    s = resize_map(saliency, fix.shape)
    return _nss(s, fix)


def _nss(s, fix) -> float:
    if not fix.any():
        return math.nan
    if _is_constant(s):
        return 0.0
    z = (s - s.mean()) / s.std(ddof=1)
    return float(z[fix].mean())


# ------------------------------------------------------------------------------------------
# distribution-based metrics
# ------------------------------------------------------------------------------------------
def cc(saliency, fixation_density) -> float:
    """Pearson correlation coefficient between the saliency map and the fixation density map.

    0 when either map is constant (no linear relation can be measured; an all-zero saliency map
    included); ``nan`` when the density map is all zeros.
    """
    d = _as_map(fixation_density, "fixation density map")
    s = resize_map(saliency, d.shape)
    return _cc(s, d)


def _cc(s, d) -> float:
    if not d.any():
        return math.nan
    if _is_constant(s) or _is_constant(d):
        return 0.0
    sc = s - s.mean()
    dc = d - d.mean()
    value = float((sc * dc).sum() / math.sqrt(float((sc * sc).sum()) * float((dc * dc).sum())))
    return min(1.0, max(-1.0, value))


def sim(saliency, fixation_density) -> float:
    """Similarity (histogram intersection): sum over pixels of min(S, G), each summing to 1.

    In [0, 1], 1 for identical distributions. An all-zero saliency map counts as uniform;
    ``nan`` when the density map is all zeros. The benchmark's MATLAB code also rescales each map
    to [0, 1] before normalising, which changes the score of maps whose minimum is not 0; this
    function follows the published definition and normalises the maps as they are.
    """
    d = _as_map(fixation_density, "fixation density map")
    s = resize_map(saliency, d.shape)
    return _sim(s, d)


def _distributions(s, d):
    """The saliency and fixation-density maps as distributions (each summing to 1), or None
    when the density map is all zeros. An all-zero saliency map counts as uniform."""
    g = _as_distribution(d, "fixation density map", empty_is_uniform=False)
    if g is None:
        return None
    return _as_distribution(s, "saliency map", empty_is_uniform=True), g


def _sim(s, d) -> float:
    pair = _distributions(s, d)
    return math.nan if pair is None else float(np.minimum(*pair).sum())


def kl(saliency, fixation_density) -> float:
    """KL divergence of the saliency distribution S from the fixation distribution G.

    sum(G * log(EPS + G / (S + EPS))) with both maps normalised to sum 1 and EPS = 2.2204e-16
    (MATLAB's ``eps``). 0 for identical distributions; predicting 0 where G > 0 costs about
    G * 36. An all-zero saliency map counts as uniform; ``nan`` when the density is all zeros.
    """
    d = _as_map(fixation_density, "fixation density map")
    s = resize_map(saliency, d.shape)
    return _kl(s, d)


def _kl(s, d) -> float:
    pair = _distributions(s, d)
    if pair is None:
        return math.nan
    p, g = pair
    return float(np.sum(g * np.log(EPS + g / (p + EPS))))


# ------------------------------------------------------------------------------------------
# all metrics at once, and averages over images
# ------------------------------------------------------------------------------------------
def score_all(
    saliency,
    fixation_points,
    fixation_density=None,
    other_fixations=None,
    *,
    n_splits: int = 100,
    step: float = 0.1,
    rng=0,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one image, as ``{key: score}``.

    The saliency map is resized once to the fixation map's size. CC, SIM and KL need
    ``fixation_density`` (same shape as ``fixation_points``) and sAUC needs ``other_fixations``;
    without them those scores are ``nan``. AUC-Borji and then sAUC draw from ``rng`` (a seed or
    a generator), so the same seed gives the same scores.
    """
    fix = _points(fixation_points)
    s = resize_map(saliency, fix.shape)
    gen = _generator(rng)
    out = {
        "auc_judd": _auc_judd(s, fix),
        "auc_borji": _auc_borji(s, fix, n_splits, step, gen, "nonfixated"),
        "sauc": math.nan,
        "nss": _nss(s, fix),
        "cc": math.nan,
        "sim": math.nan,
        "kl": math.nan,
    }
    if other_fixations is not None:
        other = _points(other_fixations, "other_fixations map")
        _check_same_shape(other, fix, "other_fixations map", "fixation map")
        out["sauc"] = _sauc(s, fix, other, n_splits, step, gen)
    if fixation_density is not None:
        d = _as_map(fixation_density, "fixation density map")
        _check_same_shape(d, fix, "fixation density map", "fixation map")
        out["cc"] = _cc(s, d)
        out["sim"] = _sim(s, d)
        out["kl"] = _kl(s, d)
    return out


def average_scores(scores: Iterable[Mapping[str, float]]) -> dict[str, dict]:
    """Average per-image score dicts, skipping undefined (nan) scores and counting them.

    Returns ``{"mean": {key: mean}, "n": {key: images averaged}, "n_nan": {key: images
    skipped}}`` over every key that appears; a mean over no image is ``nan``.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    nans: dict[str, int] = {}
    for item in scores:
        for key, value in item.items():
            sums.setdefault(key, 0.0)
            counts.setdefault(key, 0)
            nans.setdefault(key, 0)
            value = float(value)
            if math.isnan(value):
                nans[key] += 1
            else:
                sums[key] += value
                counts[key] += 1
    order = [k for k in METRICS if k in sums] + [k for k in sums if k not in METRICS]
    return {
        "mean": {k: (sums[k] / counts[k] if counts[k] else math.nan) for k in order},
        "n": {k: counts[k] for k in order},
        "n_nan": {k: nans[k] for k in order},
    }
