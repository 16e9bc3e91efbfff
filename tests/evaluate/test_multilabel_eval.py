"""Multi-label scores (mAP, CF1/OF1, loss, distributed states, label-frequency baseline) and the
share of glimpse fixations landing on objects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bioattn.errors import BioattnError
from bioattn.evaluate.multilabel import (
    MultiLabelMeter,
    ObjectFixations,
    fixations_on_objects,
    label_frequency_map,
)

# 4 images, 3 classes; scores are sigmoid probabilities
PROBS = torch.tensor([[0.9, 0.2, 0.6],
                      [0.4, 0.7, 0.1],
                      [0.3, 0.6, 0.1],
                      [0.1, 0.4, 0.3]], dtype=torch.float64)
TARGETS = torch.tensor([[1, 0, 0],
                        [0, 1, 0],
                        [1, 0, 0],
                        [0, 0, 0]], dtype=torch.float32)
LOGITS = torch.logit(PROBS).float()
# Worked out by hand:
# class 0: ranked img0 (+), img1 (-), img2 (+), img3 (-): precisions at the positives 1/1 and 2/3,
#          AP = (1 + 2/3) / 2 = 5/6. At p > 0.5 it predicts img0 only: TP 1, FP 0, FN 1,
#          P = 1, R = 1/2, F1 = 2/3.
# class 1: ranked img1 (+) first: AP = 1. Predicts img1 and img2: TP 1, FP 1, FN 0, P = 1/2, R = 1,
#          F1 = 2/3.
# class 2: no positive image: no AP, left out of the class means. Predicts img0: FP 1.
# mAP = (5/6 + 1) / 2 = 11/12. CP = (1 + 1/2) / 2 = 3/4, CR = 3/4, CF1 = 3/4; mean per-class F1 = 2/3.
# Overall: TP 2, FP 2, FN 1: OP = 1/2, OR = 2/3, OF1 = 2 (1/2)(2/3) / (1/2 + 2/3) = 4/7.
EXPECTED = {"map": 100 * 11 / 12, "cp": 75.0, "cr": 75.0, "cf1": 75.0, "f1_per_class_mean": 100 * 2 / 3,
            "op": 50.0, "or": 100 * 2 / 3, "f1_overall": 100 * 4 / 7}


def _bce(probs: torch.Tensor, targets: torch.Tensor) -> float:
    total = 0.0
    for p, y in zip(probs.flatten().tolist(), targets.flatten().tolist()):
        total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / probs.numel()


def test_scores_of_the_hand_computed_example():
    meter = MultiLabelMeter(3)
    meter.update(LOGITS, TARGETS)
    out = meter.compute()
    for key, value in EXPECTED.items():
        assert out[key] == pytest.approx(value, abs=1e-4), key
    assert out["per_class_ap"][:2] == pytest.approx([100 * 5 / 6, 100.0])
    assert math.isnan(out["per_class_ap"][2])
    assert out["loss"] == pytest.approx(_bce(PROBS, TARGETS), rel=1e-5)
    assert out["n"] == 4 and out["n_scored_classes"] == 2


def test_batches_states_and_sync_give_the_same_scores():
    whole = MultiLabelMeter(3)
    whole.update(LOGITS, TARGETS)
    first, second = MultiLabelMeter(3), MultiLabelMeter(3)
    first.update(LOGITS[:1], TARGETS[:1])
    first.update(LOGITS[1:2], TARGETS[1:2])
    second.update(LOGITS[2:], TARGETS[2:])
    assert len(first) == 2 and len(second) == 2
    logits, targets = first.state()
    assert logits.shape == (2, 3) and logits.dtype == torch.float32 and targets.dtype == torch.float32
    joined = MultiLabelMeter.from_states([first.state(), second.state()])
    synced = first.sync(lambda state: [state, second.state()])
    expected = whole.compute()
    for meter in (joined, synced):
        got = meter.compute()
        for key, value in expected.items():
            if key == "per_class_ap":
                np.testing.assert_allclose(got[key], value, equal_nan=True)
            else:
                assert got[key] == pytest.approx(value), key
    empty = MultiLabelMeter(3)                          # a process that saw no image
    assert MultiLabelMeter.from_states([empty.state(), whole.state()]).compute()["n"] == 4


def test_average_precision_is_the_mean_precision_at_the_positives():
    """On random data with distinct scores, every class's AP is the mean over its positive
    images of the precision among the images ranked at or above it."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 6, generator=gen)
    targets = (torch.rand(200, 6, generator=gen) < torch.linspace(0.05, 0.6, 6)).float()
    meter = MultiLabelMeter(6)
    meter.update(logits, targets)
    got = meter.compute()["per_class_ap"]
    for k in range(6):
        order = torch.argsort(logits[:, k], descending=True)
        hits = targets[order, k]
        precision_at = torch.cumsum(hits, 0) / torch.arange(1, 201)
        expected = 100 * (precision_at * hits).sum() / hits.sum()
        assert got[k] == pytest.approx(expected.item(), abs=1e-4), k


def test_perfect_and_reversed_rankings():
    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float32)
    perfect = MultiLabelMeter(2)
    perfect.update(10 * (2 * targets - 1), targets)
    out = perfect.compute()
    assert out["map"] == pytest.approx(100.0) and out["f1_overall"] == pytest.approx(100.0)
    assert out["cf1"] == pytest.approx(100.0) and out["loss"] < 1e-3
    tied = MultiLabelMeter(2)                  # every positive below every negative, all tied
    tied.update(-10 * (2 * targets - 1), targets)
    out = tied.compute()
    assert out["map"] == pytest.approx(50.0)  # one threshold per distinct score: AP = prevalence
    assert out["f1_overall"] == 0.0 and out["cp"] == 0.0
    reversed_ = MultiLabelMeter(2)             # the same, with distinct scores
    reversed_.update(-10 * (2 * targets - 1) + torch.tensor([[0.1], [0.2], [0.3], [0.4]]), targets)
    # each class ranks its two positives 3rd and 4th: AP = (1/3 + 2/4) / 2
    assert reversed_.compute()["map"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)


def test_label_frequency_baseline():
    # frequencies 2/4, 1/4 and 0: the same score for every image, so AP = prevalence;
    # class 2 has no positive: mAP = (50 + 25) / 2
    assert label_frequency_map(TARGETS) == pytest.approx(37.5)
    skewed = torch.zeros(10, 4)
    skewed[:9, 0] = 1
    skewed[0, 1] = 1
    skewed[:5, 3] = 1
    assert label_frequency_map(skewed) == pytest.approx((90 + 10 + 50) / 3)
    assert math.isnan(label_frequency_map(torch.zeros(3, 2)))
    with pytest.raises(BioattnError, match=r"targets must be \(N, K\)"):
        label_frequency_map(torch.zeros(5))


def test_empty_meter():
    out = MultiLabelMeter(4).compute()
    assert out["n"] == 0 and math.isnan(out["map"]) and math.isnan(out["loss"])
    assert len(out["per_class_ap"]) == 4


@pytest.mark.parametrize("logits, targets, message", [
    (torch.zeros(2, 3), torch.zeros(2, 4), "same shape"),
    (torch.zeros(2, 4), torch.zeros(2, 4), "expected 3 classes"),
    (torch.zeros(2, 3), torch.full((2, 3), 0.5), "multi-hot"),
    (torch.zeros(3), torch.zeros(3), "same shape"),
])
def test_meter_rejects_bad_batches(logits, targets, message):
    with pytest.raises(BioattnError, match=message):
        MultiLabelMeter(3).update(logits, targets)


def test_meter_needs_classes():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(BioattnError, match="num_classes must be a positive integer"):
            MultiLabelMeter(bad)
    with pytest.raises(BioattnError, match="at least one state"):
        MultiLabelMeter.from_states([])


# ------------------------------------------------------------------------------------------
# fixations on objects
# ------------------------------------------------------------------------------------------
H = W = 10


def _at(row: int, col: int) -> list[float]:
    """The (x, y) in [-1, 1] of a pixel's centre."""
    return [(2 * col + 1) / W - 1, (2 * row + 1) / H - 1]


@pytest.fixture
def scene():
    """Two 10 x 10 images with two object slots: image 0 holds a large object (25% of the image)
    and a one-pixel one (1%, small); image 1 a large one and an absent one."""
    masks = torch.zeros(2, 2, H, W, dtype=torch.bool)
    masks[0, 0, :5, :5] = True
    masks[0, 1, 9, 9] = True
    masks[1, 0, 5:, :5] = True
    fixations = torch.tensor([[_at(2, 2), _at(0, 9)],       # glimpse 1: image 0 on the large object
                              [_at(9, 9), _at(7, 2)]])      # glimpse 2: image 0 small, image 1 large
    return fixations, masks


def test_fixations_on_any_and_small_objects(scene):
    fixations, masks = scene
    out = fixations_on_objects(fixations, masks)
    assert out["on_object"] == pytest.approx([50.0, 100.0])
    assert out["on_small_object"] == pytest.approx([0.0, 100.0])   # over image 0, the one with a small object
    assert out["random_object"] == pytest.approx(100 * (0.26 + 0.25) / 2)
    assert out["random_small_object"] == pytest.approx(1.0)
    assert out["n_images"] == 2 and out["n_images_with_small"] == 1


def test_given_areas_and_validity(scene):
    fixations, masks = scene
    areas = torch.tensor([[0.25, 0.01], [0.03, 0.0]])       # image 1's object annotated as small
    out = fixations_on_objects(fixations, masks, areas)
    assert out["n_images_with_small"] == 2
    assert out["on_small_object"] == pytest.approx([0.0, 100.0])
    assert out["random_small_object"] == pytest.approx(100 * (0.01 + 0.25) / 2)
    valid = torch.tensor([[True, False], [True, False]])    # image 0's small object does not count
    out = fixations_on_objects(fixations, masks, valid=valid)
    assert out["on_object"] == pytest.approx([50.0, 50.0]) and out["n_images_with_small"] == 0
    assert all(math.isnan(v) for v in out["on_small_object"]) and math.isnan(out["random_small_object"])


def test_accumulating_batches_matches_one_call(scene):
    fixations, masks = scene
    meter = ObjectFixations()
    meter.update(fixations[:, :1], masks[:1])
    meter.update(fixations[:, 1:], masks[1:])
    assert meter.compute() == fixations_on_objects(fixations, masks)
    with pytest.raises(BioattnError, match="same number of glimpses"):
        meter.update(fixations[:1, :1], masks[:1])


def test_fixations_on_objects_rejects_bad_shapes(scene):
    fixations, masks = scene
    with pytest.raises(BioattnError, match=r"fixations must be \(T, B, 2\)"):
        fixations_on_objects(fixations[0], masks)
    with pytest.raises(BioattnError, match=r"object masks must be \(B, M, H, W\) with B = 2"):
        fixations_on_objects(fixations, masks[0])
    with pytest.raises(BioattnError, match=r"areas must be \(B, M\)"):
        fixations_on_objects(fixations, masks, torch.zeros(2, 3))
    with pytest.raises(BioattnError, match=r"valid must be \(B, M\)"):
        fixations_on_objects(fixations, masks, valid=torch.ones(2))
    with pytest.raises(BioattnError, match="small_area"):
        ObjectFixations(small_area=0)
