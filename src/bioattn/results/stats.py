"""The paired statistics the claims are decided by (numpy, scipy and statsmodels; no torch).

Every claim compares outcomes measured on the same images (two models on one test set, or one
model at two glimpses), so every test here is paired, and the image is the unit of resampling:

* :func:`mcnemar` - two accuracies on the same images: McNemar's exact test on the discordant
  images (statsmodels), reported with its mid-p value (the exact p less half the probability of
  the observed split), which keeps the exact test's error rate closer to the nominal one;
* :func:`paired_bootstrap` - any statistic that is a function of per-image column totals (a
  difference of means over conditions, of AUCs or map shares, a ratio of summed errors as in
  mCE, an mIoU from summed intersections and unions): images are resampled with replacement
  (every column of an image moving together), the percentile interval and
  a two-sided bootstrap p-value against zero are read from the resampled statistics;
* :func:`signed_rank` - a per-image score against zero (steering): Wilcoxon's signed-rank test,
  or a one-sample t-test, over images (never over the prompts of one image);
* :func:`tost` - equivalence within a margin declared up front (two one-sided paired t-tests,
  statsmodels' ``ttost_paired``), and :func:`inside` the rule that the whole interval lies
  within the margin;
* :func:`holm` - Holm's step-down correction over the page's family of claims (statsmodels);
* :func:`mcnemar_detectable` and :func:`paired_detectable` - the smallest difference a test of
  ``n`` images detects with 80% power, from the measured discordance (McNemar) or the per-image
  standard deviation of the differences (statsmodels' power solvers).

Results are :class:`Test` records; differences of accuracies and shares are in the units their
columns are in (the callers scale fractions to points).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_paired

from ..errors import BioattnError

ALPHA = 0.05
POWER = 0.8
CONFIDENCE = 0.95
# bootstrap resamples: the Monte Carlo error of a p-value near 0.05 is about 0.002
RESAMPLES = 10_000
# the bootstrap's random seed: a verdict recomputed from the same records is the same verdict
BOOTSTRAP_SEED = 0
# the weights drawn at once (a resamples x images matrix of at most this many counts)
_WEIGHTS = 2_000_000


@dataclass(frozen=True)
class Test:
    """One test's outcome: the ``estimate`` with its ``low``-``high`` interval, the two-sided
    ``p`` value (None where the test gives none), the ``test``'s name and the ``n`` images."""

    estimate: float
    low: float
    high: float
    p: float | None
    test: str
    n: int


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape or a.ndim != 1:
        raise BioattnError(f"{what} needs two outcome vectors of one length, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise BioattnError(f"{what} needs at least one image")


def mcnemar_table(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> np.ndarray:
    """The 2x2 table of two correctness vectors on the same images: rows ``a`` right / wrong,
    columns ``b`` right / wrong (``[[both, a only], [b only, neither]]``)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    _check_pair(a, b, "McNemar's test")
    return np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])


def mcnemar_p(table: np.ndarray, mid: bool = True) -> float:
    """McNemar's exact two-sided p-value of a 2x2 table (statsmodels), or its mid-p value: the
    exact p less the probability of the observed split of the discordant images."""
    table = np.asarray(table)
    b, c = int(table[0, 1]), int(table[1, 0])
    if b + c == 0:
        return 1.0
    exact = float(sm_mcnemar(table, exact=True).pvalue)
    if not mid:
        return exact
    return float(min(1.0, max(0.0, exact - scipy_stats.binom.pmf(min(b, c), b + c, 0.5))))


def mcnemar(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray, scale: float = 100.0,
            resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Test:
    """The difference of two accuracies on the same images (``a`` minus ``b``, times ``scale``):
    McNemar's mid-p value and the paired bootstrap's percentile interval."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    table = mcnemar_table(a, b)
    columns = np.stack([a, b], axis=1).astype(float)
    boot = paired_bootstrap(columns, lambda t, n: scale * (t[..., 0] - t[..., 1]) / n, resamples, seed)
    return Test(boot.estimate, boot.low, boot.high, mcnemar_p(table), "McNemar mid-p", int(a.size))


def bootstrap_distribution(columns: np.ndarray, statistic: Callable[[np.ndarray, int], np.ndarray],
                           resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``statistic(totals, n)`` on ``resamples`` resamples of the rows (images) of ``columns``
    ``(n, k)``: each resample draws ``n`` images with replacement, and its column totals are the
    rows weighted by how often each image was drawn, so the columns of an image always move together."""
    columns = np.asarray(columns, float)
    if columns.ndim != 2 or columns.shape[0] == 0:
        raise BioattnError(f"the bootstrap needs an (images, columns) array with images, got {columns.shape}")
    n = columns.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, min(1000, _WEIGHTS // n))
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(size, n), dtype=np.int64) + n * np.arange(size)[:, None]
        weights = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(float)
        out.append(np.asarray(statistic(weights @ columns, n), float))
    return np.concatenate(out)


def paired_bootstrap(columns: np.ndarray, statistic: Callable[[np.ndarray, int], np.ndarray],
                     resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     confidence: float = CONFIDENCE) -> Test:
    """A statistic of per-image columns ``(n, k)`` that is a function of their totals
    (``statistic(totals, n)``, vectorised over leading axes) with its percentile interval and
    the two-sided bootstrap p-value of the null value zero (twice the smaller share of resampled
    statistics on either side of zero, counting the observed one)."""
    columns = np.asarray(columns, float)
    n = columns.shape[0] if columns.ndim == 2 else 0
    dist = bootstrap_distribution(columns, statistic, resamples, seed)
    estimate = float(statistic(columns.sum(axis=0), n))
    dist = dist[np.isfinite(dist)]
    if dist.size == 0 or not math.isfinite(estimate):
        return Test(estimate, math.nan, math.nan, None, "paired bootstrap", n)
    tail = (1 - confidence) / 2
    low, high = np.quantile(dist, [tail, 1 - tail])
    below = (np.sum(dist <= 0) + 1) / (dist.size + 1)
    above = (np.sum(dist >= 0) + 1) / (dist.size + 1)
    return Test(estimate, float(low), float(high), float(min(1.0, 2 * min(below, above))), "paired bootstrap", n)


def mean_difference(a: np.ndarray, b: np.ndarray, scale: float = 1.0, resamples: int = RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> Test:
    """The mean over images of ``a - b`` (per-image values, times ``scale``) by the paired bootstrap."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    _check_pair(a, b, "the paired bootstrap")
    return paired_bootstrap(np.stack([a, b], axis=1), lambda t, n: scale * (t[..., 0] - t[..., 1]) / n,
                            resamples, seed)


def signed_rank(values: Sequence[float] | np.ndarray, method: str = "wilcoxon", scale: float = 1.0,
                resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Test:
    """Per-image scores against zero: the mean (times ``scale``) with its bootstrap interval, and
    the p-value of Wilcoxon's signed-rank test (``method="wilcoxon"``) or of a one-sample t-test
    (``"t"``) over the images."""
    x = np.asarray(values, float)
    p, name = signed_rank_p(x, method)
    boot = paired_bootstrap(x[:, None], lambda t, n: scale * t[..., 0] / n, resamples, seed)
    return Test(boot.estimate, boot.low, boot.high, p, name, int(x.size))


def signed_rank_p(values: Sequence[float] | np.ndarray, method: str = "wilcoxon") -> tuple[float, str]:
    """The two-sided p-value of per-image scores against zero, and the test's name: Wilcoxon's
    signed-rank test (``"wilcoxon"``, zero scores left out) or a one-sample t-test (``"t"``)."""
    x = np.asarray(values, float)
    if x.ndim != 1 or x.size == 0:
        raise BioattnError(f"the per-image test needs one score per image, got shape {x.shape}")
    if method == "wilcoxon":
        return (1.0 if not np.any(x != 0) else float(scipy_stats.wilcoxon(x).pvalue)), "Wilcoxon signed-rank"
    if method == "t":
        return (1.0 if np.all(x == x[0]) else float(scipy_stats.ttest_1samp(x, 0.0).pvalue)), "one-sample t"
    raise BioattnError(f"unknown per-image test '{method}' (known: wilcoxon, t)")


def tost(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """The p-value of two one-sided paired t-tests that the mean of ``a - b`` lies within
    ``(-margin, margin)`` (statsmodels' ``ttost_paired``; the larger of the two p-values)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    _check_pair(a, b, "the equivalence test")
    if not margin > 0:
        raise BioattnError(f"an equivalence margin must be positive, got {margin}")
    d = a - b
    if np.all(d == d[0]):  # no spread: the mean itself decides
        return 0.0 if abs(d[0]) < margin else 1.0
    return float(ttost_paired(a, b, -margin, margin)[0])


def inside(low: float, high: float, margin: float) -> bool:
    """Whether the whole interval ``[low, high]`` lies strictly inside ``(-margin, margin)``."""
    return -margin < low and high < margin


def one_sided_below(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """The p-value of a paired t-test that the mean of ``a - b`` is below ``margin`` (the null:
    it is ``margin`` or more)."""
    d = np.asarray(a, float) - np.asarray(b, float) - margin
    if d.size == 0:
        raise BioattnError("the one-sided test needs at least one image")
    if np.all(d == d[0]):
        return 0.0 if d[0] < 0 else 1.0
    return float(scipy_stats.ttest_1samp(d, 0.0, alternative="less").pvalue)


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm's step-down adjusted p-values of a family of tests (statsmodels' ``multipletests``)."""
    if not len(p_values):
        return []
    return [float(p) for p in multipletests(np.asarray(p_values, float), alpha=alpha, method="holm")[1]]


def mcnemar_detectable(n: int, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest difference of two paired accuracies (a fraction) that McNemar's test on ``n``
    images detects with ``power``, when a share ``discordance`` of the images is discordant: the
    per-image difference has a variance of about ``discordance``, so the detectable difference is
    the one-sample normal test's effect size times its square root."""
    if n < 1:
        return math.nan
    return _normal_effect(n, alpha, power) * math.sqrt(max(discordance, 1.0 / n))


@functools.lru_cache(maxsize=256)
def _normal_effect(n: int, alpha: float, power: float) -> float:
    """The standardised effect a two-sided one-sample normal test of ``n`` detects with ``power``."""
    return float(NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power, ratio=0))


@functools.lru_cache(maxsize=256)
def _t_effect(n: int, alpha: float, power: float) -> float:
    """The standardised effect a two-sided paired t-test of ``n`` detects with ``power``."""
    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power))


def paired_detectable(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean of per-image differences with standard deviation ``sd`` that a paired
    t-test on ``n`` images detects with ``power``."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return _t_effect(n, alpha, power) * sd
