"""Corruption-error arithmetic and the ImageNet class subsets."""

from __future__ import annotations

import math

import pytest
import torch

from bioattn.data.imagenet_classes import imagenet_wnids, subset_indices, subset_wnids
from bioattn.errors import BioattnError
from bioattn.evaluate.imagenet import summarise_imagenet_c
from bioattn.evaluate.mce import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    check_corruption_names,
    check_severities,
    corruption_errors,
    mce,
    relative_mce,
)
from bioattn.metrics.accuracy import restrict_logits, topk_predictions


def test_alexnet_table_is_the_benchmark_one():
    assert list(ALEXNET_ERRORS) == list(CORRUPTIONS) and len(CORRUPTIONS) == 15
    assert ALEXNET_ERRORS["gaussian_noise"] == 0.886428
    assert ALEXNET_ERRORS["brightness"] == 0.564592
    assert ALEXNET_ERRORS["jpeg_compression"] == 0.606500
    assert sum(ALEXNET_ERRORS.values()) == pytest.approx(11.834896, abs=1e-9)


def test_mce_against_a_hand_computed_example():
    errors = {
        "gaussian_noise": {1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8, 5: 1.0},  # mean 0.6
        "fog": {1: 0.7, 5: 0.9},  # mean 0.8
    }
    out = mce(errors)
    # 0.6 / 0.886428 and 0.8 / 0.819324, x100
    assert out["ce"]["gaussian_noise"] == pytest.approx(67.68739, abs=1e-4)
    assert out["ce"]["fog"] == pytest.approx(97.64147, abs=1e-4)
    assert out["mce"] == pytest.approx(82.66443, abs=1e-4)


def test_mce_against_a_baseline_model_uses_the_same_severities():
    errors = {"snow": {1: 0.3, 3: 0.5}}
    base = {"snow": {1: 0.4, 2: 0.99, 3: 0.6}}  # severity 2 not measured for the model: ignored
    assert corruption_errors(errors, base)["snow"] == pytest.approx(0.8)
    with pytest.raises(BioattnError, match="lacks severities"):
        corruption_errors({"snow": {4: 0.1}}, base)
    with pytest.raises(BioattnError, match="no baseline error"):
        corruption_errors({"frost": {1: 0.1}}, base)


def test_relative_mce_hand_computed():
    # model: clean 0.1, errors 0.3, 0.5 -> degradation 0.2 + 0.4
    # baseline: clean 0.2, errors 0.6, 0.8 -> degradation 0.4 + 0.6
    out = relative_mce({"fog": {1: 0.3, 2: 0.5}}, 0.1, {"fog": {1: 0.6, 2: 0.8}}, 0.2)
    assert out["relative_ce"]["fog"] == pytest.approx(60.0)
    assert out["relative_mce"] == pytest.approx(60.0)
    flat = relative_mce({"fog": {1: 0.3}}, 0.1, {"fog": {1: 0.2}}, 0.2)
    assert math.isnan(flat["relative_mce"])  # the baseline does not degrade: undefined


def test_imagenet_c_summary_needs_all_severities_for_mce():
    full = {"fog": {str(s): 50.0 for s in range(1, 6)}}
    out = summarise_imagenet_c(full)
    assert out["mean_top1"] == 50.0 and out["mean_error"] == 50.0
    assert out["mce"] == pytest.approx(100 * 0.5 / 0.819324)
    partial = summarise_imagenet_c({"fog": {"1": 80.0, "3": 60.0}})
    assert partial["mce"] is None and partial["corruption_top1"]["fog"] == 70.0


def test_name_and_severity_checks():
    assert check_severities([5, 1, 3, 3]) == [1, 3, 5]
    with pytest.raises(BioattnError, match="1..5"):
        check_severities([0, 2])
    with pytest.raises(BioattnError, match="unknown corruption"):
        check_corruption_names(["fog", "rain"])


def test_imagenet_class_lists():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"  # tench ... toilet tissue
    assert list(wnids) == sorted(wnids)
    for subset in ("imagenet-a", "imagenet-r"):
        idx = subset_indices(subset)
        assert len(idx) == 200 and len(set(idx)) == 200 and list(idx) == sorted(idx)
        assert [wnids[i] for i in idx] == list(subset_wnids(subset))
    assert subset_indices("imagenet-a")[0] == 6  # stingray
    assert subset_indices("imagenet-r")[0] == 1  # goldfish
    assert subset_indices("imagenet-a") != subset_indices("imagenet-r")
    with pytest.raises(BioattnError, match="unknown ImageNet subset"):
        subset_indices("imagenet-b")


def test_200_class_masking_restricts_the_argmax():
    idx = subset_indices("imagenet-a")
    outside = next(i for i in range(1000) if i not in idx)
    logits = torch.zeros(2, 1000)
    logits[:, outside] = 10.0  # the global winner is not an ImageNet-A class
    logits[0, idx[5]] = 3.0
    logits[1, idx[7]] = 4.0
    logits[1, idx[9]] = 2.0
    assert restrict_logits(logits, idx).shape == (2, 200)
    top = topk_predictions(logits, 2, idx)
    assert top[:, 0].tolist() == [idx[5], idx[7]]  # labels stay in the 1000-class order
    assert top[1, 1].item() == idx[9]
    assert topk_predictions(logits, 1)[:, 0].tolist() == [outside, outside]
