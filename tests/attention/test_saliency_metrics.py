"""Saliency metrics against values derived by hand on small maps."""

import math

import numpy as np
import pytest
import torch

from bioattn.attention import metrics as M
from bioattn.errors import BioattnError

# A 3x3 map with distinct values and two fixations, used by several AUC tests:
#   0.05 0.15 0.25
#   0.35 1.00 0.55        fixated: 1.00 (centre) and 0.45 (bottom right)
#   0.65 0.75 0.45        non-fixated: 0.05 0.15 0.25 0.35 0.55 0.65 0.75 (7 pixels)
S3 = np.array([[0.05, 0.15, 0.25], [0.35, 1.0, 0.55], [0.65, 0.75, 0.45]])
F3 = np.zeros((3, 3), dtype=bool)
F3[1, 1] = F3[2, 2] = True


def _map(*values, shape=(2, 2)):
    return np.array(values, dtype=np.float64).reshape(shape)


# ------------------------------------------------------------------------------------------
# AUC-Judd
# ------------------------------------------------------------------------------------------
def test_auc_judd_hand_computed():
    # thresholds are the fixated values 1.00 then 0.45:
    #   t=1.00: tp = 1/2, fp = 0/7
    #   t=0.45: tp = 2/2, fp = 3/7 (0.55, 0.65, 0.75)
    # curve (0,0) (0,.5) (3/7,1) (1,1): area = 3/7 * (.5+1)/2 + 4/7 * 1 = 6.25/7
    assert M.auc_judd(S3, F3) == pytest.approx(6.25 / 7, abs=1e-12)


def test_auc_judd_tied_fixated_values_are_one_threshold():
    # saliency 1 1 / 0 0, both 1s fixated: threshold 1 gives tp = 1, fp = 0 -> area 1.
    # (Sorting the two tied fixated values and counting them one at a time, as the MATLAB code
    # does without jitter, would give 0.75.)
    s = _map(1, 1, 0, 0)
    f = _map(1, 1, 0, 0)
    assert M.auc_judd(s, f) == pytest.approx(1.0, abs=1e-12)


def test_auc_judd_tie_between_fixated_and_non_fixated():
    # saliency 2 1 / 1 0, only the top-right 1 fixated. Threshold 1: tp = 1, fp = 2/3
    # (the 2 and the other 1). Curve (0,0) (2/3,1) (1,1): area = 2/3 * 1/2 + 1/3 = 2/3.
    s = _map(2, 1, 1, 0)
    f = _map(0, 1, 0, 0)
    assert M.auc_judd(s, f) == pytest.approx(2 / 3, abs=1e-12)


def test_auc_judd_edge_cases():
    assert M.auc_judd(np.full((3, 3), 0.7), F3) == 0.5  # constant map
    assert M.auc_judd(np.zeros((3, 3)), F3) == 0.5  # all-zero map is constant too
    assert math.isnan(M.auc_judd(S3, np.zeros((3, 3))))  # no fixation
    assert math.isnan(M.auc_judd(S3, np.ones((3, 3))))  # no non-fixated pixel
    # perfect and worst separations
    assert M.auc_judd(F3.astype(float), F3) == 1.0
    # fixated pixels (0.2 and 0.1) below all others (1): thresholds 0.2 -> tp .5, fp 1;
    # 0.1 -> tp 1, fp 1. Curve (0,0) (1,.5) (1,1) (1,1): area 1 * .25 = 0.25
    s = np.ones((3, 3))
    s[1, 1], s[2, 2] = 0.2, 0.1
    assert M.auc_judd(s, F3) == pytest.approx(0.25, abs=1e-12)
    # with a single threshold the curve is the diagonal: area 0.5
    assert M.auc_judd(1.0 - F3, F3) == pytest.approx(0.5, abs=1e-12)


# ------------------------------------------------------------------------------------------
# AUC-Borji
# ------------------------------------------------------------------------------------------
def test_auc_borji_separable_map_scores_one_for_any_seed():
    # fixated pixels at 1, every other pixel 0: at every threshold above 0 tp = 1, fp = 0.
    s = F3.astype(float)
    for seed in (0, 1, 2):
        assert M.auc_borji(s, F3, rng=seed) == pytest.approx(1.0, abs=1e-12)


def test_auc_borji_hand_computed_with_determined_negatives():
    # fixated values 1.0 and 0.2, all 7 others 0.5, so every draw of negatives is the same.
    # Rescaled to [0,1] by (s - 0.2) / 0.8: fixated 1 and 0, negatives 0.375.
    # thresholds 1.0, 0.9, ..., 0.0:
    #   t = 1.0 ... 0.4: tp = 1/2, fp = 0;  t = 0.3, 0.2, 0.1: tp = 1/2, fp = 1;  t = 0: tp = fp = 1
    # curve (0,0) (0,.5) ... (1,.5) ... (1,1): area = 1 * 0.5 = 0.5
    s = np.full((3, 3), 0.5)
    s[1, 1], s[2, 2] = 1.0, 0.2
    assert M.auc_borji(s, F3, n_splits=7, rng=3) == pytest.approx(0.5, abs=1e-12)
    # AUC-Judd on the same map only thresholds at 1.0 and 0.2 and draws a straight line from
    # (0, .5) to (1, 1): area 0.75.
    assert M.auc_judd(s, F3) == pytest.approx(0.75, abs=1e-12)


def test_auc_borji_converges_to_population_value():
    # S3 is already in [0,1] and its maximum (1.0) is fixated, so the thresholds are always
    # 1.0, 0.9, ..., 0.0 and the expected area equals the area with fp measured on all 7
    # non-fixated pixels:
    #   t:  1.0 .9 .8  .7   .6   .5   .4   .3   .2   .1   0
    #   tp: .5  .5 .5  .5   .5   .5   1    1    1    1    1
    #   fp: 0   0  0  1/7  2/7  3/7  3/7  4/7  5/7  6/7   1
    # area = 3/7 * 0.5 + 4/7 * 1 = 11/14
    value = M.auc_borji(S3, F3, n_splits=4000, rng=0)
    assert value == pytest.approx(11 / 14, abs=0.01)
    # negatives drawn from all 9 pixels (the MATLAB code's choice):
    #   fp: 1/9 1/9 1/9 2/9 3/9 4/9 5/9 6/9 7/9 8/9 1, tp as above
    # area = 1/9 * .25 + 3/9 * .5 + 1/9 * .75 + 4/9 * 1 = 26/36
    value_all = M.auc_borji(S3, F3, n_splits=4000, rng=0, negatives="all")
    assert value_all == pytest.approx(26 / 36, abs=0.01)


def test_auc_borji_is_reproducible_and_seeded():
    rng = np.random.default_rng(5)
    s = rng.random((6, 6))
    f = rng.random((6, 6)) > 0.7
    a = M.auc_borji(s, f, n_splits=20, rng=11)
    assert M.auc_borji(s, f, n_splits=20, rng=11) == a
    assert M.auc_borji(s, f, n_splits=20, rng=np.random.default_rng(11)) == a
    assert M.auc_borji(s, f, n_splits=20, rng=12) != a


def test_auc_borji_edge_cases():
    assert M.auc_borji(np.full((3, 3), 4.0), F3) == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(M.auc_borji(S3, np.zeros((3, 3))))
    assert math.isnan(M.auc_borji(S3, np.ones((3, 3))))  # nothing to draw negatives from
    with pytest.raises(BioattnError, match="n_splits"):
        M.auc_borji(S3, F3, n_splits=0)
    with pytest.raises(BioattnError, match="step"):
        M.auc_borji(S3, F3, step=0.0)
    with pytest.raises(BioattnError, match="negatives"):
        M.auc_borji(S3, F3, negatives="fixated")


# ------------------------------------------------------------------------------------------
# shuffled AUC
# ------------------------------------------------------------------------------------------
def test_sauc_hand_computed():
    # other fixations at 0.75 and 0.05: two of them for two fixations, so every split uses both.
    #   t:  1.0 .9 .8  .7  .6  .5  .4  .3  .2  .1  0
    #   tp: .5  .5 .5  .5  .5  .5  1   1   1   1   1
    #   fp: 0   0  0   .5  .5  .5  .5  .5  .5  .5  1
    # area = .5 * .5 + .5 * 1 = 0.75
    other = np.zeros((3, 3))
    other[2, 1] = other[0, 0] = 1
    assert M.sauc(S3, F3, other) == pytest.approx(0.75, abs=1e-12)


def test_sauc_other_fixations_at_the_same_values_score_chance():
    # a centre-biased map that also peaks where other images were looked at gains nothing:
    # positives {1} and negatives {1} give tp = fp at every threshold -> 0.5
    s = _map(1, 1, 0, 0)
    assert M.sauc(s, _map(1, 0, 0, 0), _map(0, 1, 0, 0)) == pytest.approx(0.5, abs=1e-12)


def test_sauc_separable_and_edge_cases():
    rng = np.random.default_rng(0)
    other = np.zeros((3, 3))
    other[0, :] = 1  # all other fixations on the top row, below every fixated value
    s = np.where(F3, 2.0, 1.0) + rng.random((3, 3)) * 0.1
    assert M.sauc(s, F3, other, rng=4) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(M.sauc(S3, F3, np.zeros((3, 3))))
    assert math.isnan(M.sauc(S3, np.zeros((3, 3)), other))
    assert M.sauc(np.ones((3, 3)), F3, other) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(BioattnError, match="other_fixations map has shape"):
        M.sauc(S3, F3, np.ones((4, 4)))


def test_sauc_draws_a_subset_when_there_are_more_other_fixations():
    # 2 fixations, 7 other fixations: each split uses a random 2 of them; seeded.
    other = ~F3
    a = M.sauc(S3, F3, other, n_splits=50, rng=1)
    assert a == M.sauc(S3, F3, other, n_splits=50, rng=1)
    # the other fixations are exactly the non-fixated pixels, so many draws match AUC-Borji's
    # population value 11/14 (drawn without replacement within a split, same expectation)
    assert M.sauc(S3, F3, other, n_splits=4000, rng=1) == pytest.approx(11 / 14, abs=0.01)


# ------------------------------------------------------------------------------------------
# NSS
# ------------------------------------------------------------------------------------------
def test_nss_hand_computed():
    # 3x3 map: 9 at the centre, 0 elsewhere. mean = 1;
    # sample variance = (8 * 1^2 + 8^2) / (9 - 1) = 72 / 8 = 9 -> std = 3.
    # z(centre) = (9 - 1) / 3 = 8/3; z(other) = (0 - 1) / 3 = -1/3.
    s = np.zeros((3, 3))
    s[1, 1] = 9
    f = np.zeros((3, 3))
    f[1, 1] = 1
    assert M.nss(s, f) == pytest.approx(8 / 3, abs=1e-12)
    f[0, 0] = 1  # mean of 8/3 and -1/3 = 7/6
    assert M.nss(s, f) == pytest.approx(7 / 6, abs=1e-12)


def test_nss_is_invariant_to_affine_rescaling():
    assert M.nss(3.0 * S3 + 7.0, F3) == pytest.approx(M.nss(S3, F3), abs=1e-12)


def test_nss_edge_cases():
    assert M.nss(np.full((3, 3), 2.5), F3) == 0.0  # constant map: decided 0, not nan
    assert M.nss(np.zeros((3, 3)), F3) == 0.0
    assert math.isnan(M.nss(S3, np.zeros((3, 3))))


# ------------------------------------------------------------------------------------------
# CC, SIM, KL
# ------------------------------------------------------------------------------------------
A = _map(1, 2, 3, 4)
D = _map(0, 0, 1, 1)


def test_cc_hand_computed():
    # deviations of A: -1.5 -.5 .5 1.5 (sum sq 5); of D: -.5 -.5 .5 .5 (sum sq 1)
    # sum of products = .75 + .25 + .25 + .75 = 2  ->  CC = 2 / sqrt(5 * 1)
    assert M.cc(A, D) == pytest.approx(2 / math.sqrt(5), abs=1e-12)
    assert M.cc(A, A) == pytest.approx(1.0, abs=1e-12)
    assert M.cc(-A, A) == pytest.approx(-1.0, abs=1e-12)


def test_cc_edge_cases():
    assert M.cc(np.full((2, 2), 3.0), D) == 0.0  # constant saliency: decided 0
    assert M.cc(A, np.full((2, 2), 0.5)) == 0.0  # constant (non-empty) density
    assert math.isnan(M.cc(A, np.zeros((2, 2))))  # empty density


def test_sim_hand_computed():
    # A / 10 = .1 .2 .3 .4;  D / 2 = 0 0 .5 .5;  min = 0 0 .3 .4 -> 0.7
    assert M.sim(A, D) == pytest.approx(0.7, abs=1e-12)
    assert M.sim(A, 5 * A) == pytest.approx(1.0, abs=1e-12)
    assert M.sim(_map(1, 1, 0, 0), D) == 0.0


def test_sim_edge_cases():
    # all-zero saliency counts as uniform: min(.25, G) = 0 0 .25 .25 -> 0.5
    assert M.sim(np.zeros((2, 2)), D) == pytest.approx(0.5, abs=1e-12)
    assert M.sim(np.full((2, 2), 9.0), D) == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(M.sim(A, np.zeros((2, 2))))
    with pytest.raises(BioattnError, match="negative"):
        M.sim(A - 2, D)
    with pytest.raises(BioattnError, match="negative"):
        M.sim(A, D - 0.5)


def test_kl_hand_computed():
    # S = .1 .2 .3 .4, G = 0 0 .5 .5
    # zero-G terms vanish; KL = .5 * log(.5/.3) + .5 * log(.5/.4) (eps terms below 1e-15)
    expected = 0.5 * math.log(0.5 / 0.3) + 0.5 * math.log(0.5 / 0.4)
    assert M.kl(A, D) == pytest.approx(expected, abs=1e-12)
    assert M.kl(A, 3 * A) == pytest.approx(0.0, abs=1e-12)


def test_kl_uses_matlab_eps_where_saliency_is_zero():
    # S = 0 0 .5 .5, G = .5 .5 0 0: KL = 2 * .5 * log(eps + .5 / eps) = log(.5 / 2.2204e-16)
    value = M.kl(_map(0, 0, 1, 1), _map(1, 1, 0, 0))
    assert M.EPS == 2.2204e-16
    assert value == pytest.approx(math.log(0.5 / 2.2204e-16), abs=1e-9)
    assert value == pytest.approx(35.3505269, abs=1e-6)


def test_kl_edge_cases():
    # constant saliency = uniform .25 each: KL = 2 * .5 * log(.5 / .25) = log 2
    assert M.kl(np.full((2, 2), 7.0), D) == pytest.approx(math.log(2), abs=1e-12)
    assert M.kl(np.zeros((2, 2)), D) == pytest.approx(math.log(2), abs=1e-12)
    assert math.isnan(M.kl(A, np.zeros((2, 2))))
    with pytest.raises(BioattnError, match="negative"):
        M.kl(A - 2, D)


# ------------------------------------------------------------------------------------------
# resizing, input types, score_all, averages
# ------------------------------------------------------------------------------------------
def test_resize_map_is_bilinear_and_used_by_the_metrics():
    # 1x2 map [0, 1] to 1x4: output pixel centres fall at input x = -0.25, 0.25, 0.75, 1.25,
    # clamped at the borders -> 0, .25, .75, 1
    out = M.resize_map(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]], atol=1e-12)
    # a 2x2 saliency map scored against a 4x4 fixation map is upsampled first
    small = _map(0, 1, 2, 3)
    fix = np.zeros((4, 4))
    fix[3, 3] = fix[0, 1] = 1
    big = M.resize_map(small, (4, 4))
    assert big.shape == (4, 4)
    assert M.nss(small, fix) == pytest.approx(M.nss(big, fix), abs=1e-12)
    assert M.auc_judd(small, fix) == pytest.approx(M.auc_judd(big, fix), abs=1e-12)
    # resizing keeps a constant map constant: AUC 0.5 and NSS 0 at a different size
    assert M.auc_judd(np.full((5, 7), 0.3), fix) == 0.5
    assert M.nss(np.full((5, 7), 0.3), fix) == 0.0
    assert M.nss(np.full((3, 2), 0.3), fix) == 0.0  # upsampled
    assert M.cc(np.full((3, 2), 0.3), fix) == 0.0


def test_torch_tensors_are_accepted():
    s = torch.tensor(S3, dtype=torch.float32)[None]  # (1, 3, 3)
    f = torch.tensor(F3)
    assert M.auc_judd(s, f) == pytest.approx(M.auc_judd(S3, F3), abs=1e-6)
    assert M.nss(s, f) == pytest.approx(M.nss(S3, F3), abs=1e-6)
    assert M.cc(torch.tensor(A), torch.tensor(D)) == pytest.approx(2 / math.sqrt(5), abs=1e-12)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(BioattnError, match="nan or inf"):
        M.nss(np.array([[0.0, np.nan], [1.0, 2.0]]), D)
    with pytest.raises(BioattnError, match=r"2-D \(H, W\) map"):
        M.nss(np.zeros((2, 3, 3)), F3)
    with pytest.raises(BioattnError, match="fixation density map has shape"):
        M.score_all(S3, F3, fixation_density=np.ones((2, 2)))


def test_score_all_matches_the_single_metrics():
    density = np.zeros((3, 3))
    density[1, 1], density[2, 2], density[1, 2] = 1.0, 0.5, 0.25
    other = np.zeros((3, 3))
    other[2, 1] = other[0, 0] = 1
    scores = M.score_all(S3, F3, density, other, n_splits=30, rng=2)
    assert tuple(scores) == M.METRICS
    assert scores["auc_judd"] == M.auc_judd(S3, F3)
    assert scores["auc_borji"] == M.auc_borji(S3, F3, n_splits=30, rng=2)
    assert scores["sauc"] == pytest.approx(0.75, abs=1e-12)  # negatives determined (see above)
    assert scores["nss"] == M.nss(S3, F3)
    assert scores["cc"] == M.cc(S3, density)
    assert scores["sim"] == M.sim(S3, density)
    assert scores["kl"] == M.kl(S3, density)
    assert scores == M.score_all(S3, F3, density, other, n_splits=30, rng=2)


def test_score_all_without_density_or_other_fixations_gives_nan_for_those():
    scores = M.score_all(S3, F3)
    for key in ("sauc", "cc", "sim", "kl"):
        assert math.isnan(scores[key])
    assert scores["auc_judd"] == pytest.approx(6.25 / 7, abs=1e-12)


def test_score_all_constant_map():
    # constant map (given at another size than the fixation map): chance everywhere
    density = F3.astype(float)  # two equal peaks: G = .5 .5
    scores = M.score_all(np.ones((6, 6)), F3, density, ~F3)
    assert scores["auc_judd"] == scores["auc_borji"] == scores["sauc"] == 0.5
    assert scores["nss"] == 0.0 and scores["cc"] == 0.0
    assert scores["sim"] == pytest.approx(2 / 9, abs=1e-12)  # min(1/9, .5) twice
    assert scores["kl"] == pytest.approx(math.log(0.5 * 9), abs=1e-12)  # 2 * .5 * log(.5 / (1/9))


def test_average_scores_skips_and_counts_nans():
    summary = M.average_scores(
        [
            {"nss": 1.0, "cc": 0.5, "kl": math.nan},
            {"nss": 2.0, "cc": math.nan, "kl": math.nan},
            {"nss": math.nan, "cc": 0.25, "kl": math.nan},
        ]
    )
    assert summary["mean"]["nss"] == pytest.approx(1.5)
    assert summary["mean"]["cc"] == pytest.approx(0.375)
    assert math.isnan(summary["mean"]["kl"])
    assert summary["n"] == {"nss": 2, "cc": 2, "kl": 0}
    assert summary["n_nan"] == {"nss": 1, "cc": 1, "kl": 3}
    assert list(summary["mean"]) == ["nss", "cc", "kl"]  # METRICS order
