"""The claims' statistics against tables worked by hand and against scipy and statsmodels on
constructed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from bioattn.errors import BioattnError
from bioattn.results import stats


def _outcomes(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, bool)
    return a, b


def test_mcnemar_on_a_table_worked_by_hand():
    # 10 discordant images split 9 to 1: the exact two-sided p is 2 * (1 + 10) / 2**10 = 22/1024;
    # the mid-p removes half of the doubled probability of the observed split: 22/1024 - 10/1024
    a, b = _outcomes(50, 9, 1, 40)
    table = stats.mcnemar_table(a, b)
    assert table.tolist() == [[50, 9], [1, 40]]
    assert stats.mcnemar_p(table, mid=False) == pytest.approx(22 / 1024)
    assert stats.mcnemar_p(table) == pytest.approx(12 / 1024)
    test = stats.mcnemar(a, b)
    assert test.estimate == pytest.approx(8.0) and test.n == 100 and test.test == "McNemar mid-p"
    assert test.low < 8.0 < test.high
    # no discordant image: nothing to tell
    assert stats.mcnemar_p(stats.mcnemar_table(*_outcomes(5, 0, 0, 5))) == 1.0


def test_mcnemar_agrees_with_statsmodels_and_the_binomial_mid_p():
    rng = np.random.default_rng(3)
    a, b = rng.random(400) < 0.7, rng.random(400) < 0.6
    table = stats.mcnemar_table(a, b)
    assert stats.mcnemar_p(table, mid=False) == pytest.approx(sm_mcnemar(table, exact=True).pvalue)
    k, n = min(table[0, 1], table[1, 0]), table[0, 1] + table[1, 0]
    mid = 2 * scipy_stats.binom.cdf(k - 1, n, 0.5) + scipy_stats.binom.pmf(k, n, 0.5)
    assert stats.mcnemar_p(table) == pytest.approx(min(1.0, mid))


def test_paired_bootstrap_matches_scipy_on_a_mean_difference():
    rng = np.random.default_rng(1)
    a = rng.normal(0.3, 1.0, 300)
    b = a - rng.normal(0.2, 0.5, 300)
    ours = stats.mean_difference(a, b)
    theirs = scipy_stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                                   n_resamples=10_000, method="percentile", random_state=0).confidence_interval
    assert ours.estimate == pytest.approx(np.mean(a - b))
    assert ours.low == pytest.approx(theirs.low, abs=0.01) and ours.high == pytest.approx(theirs.high, abs=0.01)
    assert ours.p < 0.001
    # the same data give the same interval (a check recomputes the page's verdicts)
    assert stats.mean_difference(a, b) == ours


def test_bootstrap_moves_the_columns_of_an_image_together():
    # two columns equal on every image: every resample's difference is zero
    x = np.random.default_rng(0).random(50)
    dist = stats.bootstrap_distribution(np.stack([x, x], axis=1), lambda t, n: t[..., 0] - t[..., 1], 200)
    assert np.all(dist == 0)
    # a ratio of totals (as mCE and mIoU are): estimate from the totals of all images
    cols = np.array([[1.0, 2.0], [3.0, 2.0], [0.0, 4.0]])
    test = stats.paired_bootstrap(cols, lambda t, n: t[..., 0] / t[..., 1], resamples=500)
    assert test.estimate == pytest.approx(4 / 8)
    with pytest.raises(BioattnError, match="images"):
        stats.paired_bootstrap(np.zeros((0, 2)), lambda t, n: t[..., 0])


def test_per_image_tests_agree_with_scipy():
    x = np.random.default_rng(2).normal(0.1, 1.0, 200)
    wilcoxon = stats.signed_rank(x)
    assert wilcoxon.p == pytest.approx(scipy_stats.wilcoxon(x).pvalue) and wilcoxon.n == 200
    t = stats.signed_rank(x, method="t", scale=100)
    assert t.p == pytest.approx(scipy_stats.ttest_1samp(x, 0).pvalue)
    assert t.estimate == pytest.approx(100 * x.mean())
    with pytest.raises(BioattnError, match="unknown per-image test"):
        stats.signed_rank(x, method="sign")


def test_equivalence_agrees_with_statsmodels_and_the_interval_rule():
    rng = np.random.default_rng(4)
    a = rng.normal(50, 5, 500)
    b = a + rng.normal(0.2, 1.0, 500)
    assert stats.tost(a, b, 1.0) == pytest.approx(ttost_paired(a, b, -1.0, 1.0)[0])
    assert stats.tost(a, b, 1.0) < 0.05 and stats.tost(a, b, 0.1) > 0.05
    assert stats.inside(-0.5, 0.9, 1.0) and not stats.inside(-0.5, 1.1, 1.0) and not stats.inside(-1.0, 0.0, 1.0)
    with pytest.raises(BioattnError, match="margin"):
        stats.tost(a, b, 0.0)
    d = rng.normal(0.0, 1.0, 300)
    assert stats.one_sided_below(d, np.zeros(300), 0.5) == pytest.approx(
        scipy_stats.ttest_1samp(d - 0.5, 0.0, alternative="less").pvalue)


def test_holm_agrees_with_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, kept monotone
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([]) == []


def test_detectable_differences():
    # McNemar: (z 0.975 + z 0.8) * sqrt(discordance / n)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert stats.mcnemar_detectable(1000, 0.2) == pytest.approx(z * math.sqrt(0.2 / 1000), rel=1e-3)
    # more images or fewer discordant ones detect smaller differences
    assert stats.mcnemar_detectable(4000, 0.2) < stats.mcnemar_detectable(1000, 0.2)
    assert stats.mcnemar_detectable(1000, 0.05) < stats.mcnemar_detectable(1000, 0.2)
    # a paired t-test: about (z + z) * sd / sqrt(n) for many images
    assert stats.paired_detectable(2000, 1.0) == pytest.approx(z / math.sqrt(2000), rel=0.01)
    assert math.isnan(stats.paired_detectable(1, 1.0))
