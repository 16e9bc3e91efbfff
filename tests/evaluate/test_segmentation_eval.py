"""Segmentation evaluation: the confusion-matrix meter (by hand and against torchmetrics),
sliding-window inference, the evaluation loop, corruptions, steering and the picture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bioattn.data.embedded import EmbeddedSpec, load_embedded
from bioattn.data.segmentation import EmbeddedSegmentation, embedded_label_map
from bioattn.errors import BioattnError
from bioattn.evaluate.segmentation import (
    SegmentationMeter,
    built_size,
    evaluate_segmentation,
    fitted_inference,
    palette,
    plot_segmentation,
    segmentation_corruptions,
    slide_inference,
    slide_windows,
    steering_score,
    whole_inference,
)

TINY_PAIR = "embedded:pair,train=8,val=8,test=8,size=32"


# ------------------------------------------------------------------------------------------
# the meter
# ------------------------------------------------------------------------------------------
def test_meter_by_hand():
    # 3 classes; one pixel ignored (its prediction, class 2, must not count); class 2 is then
    # absent from both labels and predictions.
    target = torch.tensor([[[0, 0, 0, 1], [1, 1, 255, 0]]])
    pred = torch.tensor([[[0, 0, 1, 1], [1, 0, 2, 0]]])
    # (truth, prediction) of the 7 labelled pixels: (0,0) (0,0) (0,1) (1,1) (1,1) (1,0) (0,0)
    # confusion, rows truth:  [[3, 1, 0],
    #                          [1, 2, 0],
    #                          [0, 0, 0]]
    # IoU 0 = 3 / (4 + 4 - 3) = 0.6;  IoU 1 = 2 / (3 + 3 - 2) = 0.5;  IoU 2 = 0 / 0 -> NaN, left out
    # mIoU = 55 %; pixel accuracy = 5 / 7; class accuracy 3/4 and 2/3, mean 70.83 %
    meter = SegmentationMeter(3)
    meter.update(pred, target)
    assert meter.confusion.tolist() == [[3, 1, 0], [1, 2, 0], [0, 0, 0]]
    out = meter.compute()
    assert out["miou"] == pytest.approx(55.0)
    assert out["pixel_acc"] == pytest.approx(100 * 5 / 7)
    assert out["mean_acc"] == pytest.approx(100 * (3 / 4 + 2 / 3) / 2)
    assert out["per_class_iou"][:2] == pytest.approx([60.0, 50.0]) and math.isnan(out["per_class_iou"][2])
    assert out["n_pixels"] == 7 and "loss" not in out


def test_meter_accumulates_one_matrix_over_the_set():
    # image A: 4 pixels of class 0, all right (its own mIoU 100); image B: truth 0 1 1 1, all
    # predicted 1 (its own mIoU (0 + 3/4) / 2 = 37.5). Averaging images would give 68.75.
    # Over the set: rows truth [[4, 1], [0, 3]] -> IoU 0 = 4 / (5 + 4 - 4) = 0.8,
    # IoU 1 = 3 / (3 + 4 - 3) = 0.75, mIoU 77.5.
    meter = SegmentationMeter(2)
    meter.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    meter.update(torch.ones(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 1], [1, 1]]]))
    assert meter.compute()["miou"] == pytest.approx(77.5)


def test_meter_agrees_with_torchmetrics():
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    k = 5
    g = torch.Generator().manual_seed(0)
    ours = SegmentationMeter(k)
    confusion = MulticlassConfusionMatrix(num_classes=k, ignore_index=255)
    jaccard = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=255)
    for _ in range(3):
        logits = torch.randn(2, k, 9, 11, generator=g)
        target = torch.randint(0, k, (2, 9, 11), generator=g)
        target[torch.rand(2, 9, 11, generator=g) < 0.2] = 255
        ours.update(logits, target)
        confusion.update(logits.argmax(1), target)
        jaccard.update(logits.argmax(1), target)
    assert torch.equal(ours.confusion, confusion.compute())
    out = ours.compute()
    per_class = torch.tensor(out["per_class_iou"], dtype=torch.float64)
    torch.testing.assert_close(per_class, 100 * jaccard.compute().double(), rtol=1e-5, atol=1e-4)
    assert out["miou"] == pytest.approx(100 * float(jaccard.compute().mean()))


def test_meter_loss_and_resized_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    target[0, :2] = 255
    meter = SegmentationMeter(4)
    meter.update(logits, target)
    assert meter.compute()["loss"] == pytest.approx(float(F.cross_entropy(logits, target, ignore_index=255)))
    # logits at half the labels' size are upsampled bilinearly before the arg-max
    small = torch.zeros(1, 2, 2, 2)
    small[0, 0, :, 0] = 5.0  # class 0 on the left column, class 1 on the right one
    small[0, 1, :, 1] = 5.0
    meter = SegmentationMeter(2)
    meter.update(small, torch.tensor([[[0, 0, 1, 1]] * 4]))
    assert meter.compute()["pixel_acc"] == pytest.approx(100.0)


def test_totals_sum_over_processes():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 3, 5, 5, generator=g)
    target = torch.randint(0, 3, (4, 5, 5), generator=g)
    whole, first, second = SegmentationMeter(3), SegmentationMeter(3), SegmentationMeter(3)
    whole.update(logits, target)
    first.update(logits[:2], target[:2])
    second.update(logits[2:], target[2:])
    merged = SegmentationMeter.from_totals(first.totals() + second.totals())
    expected = whole.compute()
    assert merged["miou"] == pytest.approx(expected["miou"]) and merged["loss"] == pytest.approx(expected["loss"])
    assert merged["n_pixels"] == 100
    with pytest.raises(BioattnError, match=r"K\*K \+ 2"):
        SegmentationMeter.from_totals(torch.zeros(7))


def test_meter_refuses_bad_input():
    meter = SegmentationMeter(3)
    with pytest.raises(BioattnError, match=r"target holds label 7, outside \[0, 3\)") as exc:
        meter.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [255, 1]]]))
    assert "\n" not in str(exc.value)
    with pytest.raises(BioattnError, match=r"logits have 4 classes, the meter 3"):
        meter.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(BioattnError, match=r"differ in shape"):
        meter.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    assert meter.confusion.sum() == 0


# ------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------
def test_slide_windows_cover_the_image():
    for height, width, crop, stride in ((37, 45, 16, 10), (10, 12, 16, 8), (32, 32, 16, 16), (20, 50, (8, 24), (5, 7))):
        crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
        count = torch.zeros(height, width)
        for y0, y1, x0, x1 in slide_windows(height, width, crop, stride):
            assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
            assert (y1 - y0, x1 - x0) == (min(crop_h, height), min(crop_w, width))
            count[y0:y1, x0:x1] += 1
        assert (count > 0).all()


@pytest.mark.parametrize("size", [(37, 45), (10, 12)])
def test_slide_equals_whole_for_a_translation_equivariant_model(size):
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, kernel_size=1)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        whole = whole_inference(model, images)
        slid = slide_inference(model, images, crop=16, stride=10, num_classes=5)
    assert whole.shape == slid.shape == (2, 5, *size)
    torch.testing.assert_close(slid, whole, atol=1e-5, rtol=1e-5)


def test_a_stride_larger_than_the_window_is_refused():
    # such windows would leave columns of pixels between them unpredicted
    with pytest.raises(BioattnError, match=r"stride \(24x24\) larger than the window \(16x16\).*--slide-stride"):
        slide_windows(40, 40, 16, 24)
    with pytest.raises(BioattnError, match=r"stride \(8x20\) larger than the window \(16x16\)"):
        slide_inference(nn.Conv2d(3, 2, 1), torch.randn(1, 3, 40, 40), crop=16, stride=(8, 20), num_classes=2)
    assert len(slide_windows(40, 40, 16, 16)) == 9  # a stride equal to the window tiles the image


class _PlacedBias(nn.Module):
    """Logits that depend on where a pixel lies in the window (not translation-equivariant),
    with the batch sizes it was given."""

    def __init__(self, crop: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.bias = nn.Parameter(torch.randn(1, classes, crop, crop))
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.conv(x) + self.bias


def test_windows_go_through_the_model_together_with_the_same_logits():
    torch.manual_seed(0)
    model = _PlacedBias()
    images = torch.randn(2, 3, 37, 55)  # 4 x 5 windows of 16, 10 apart
    with torch.no_grad():
        one_by_one = slide_inference(model, images, crop=16, stride=10, num_classes=3, images_per_pass=1)
        assert model.batches == [2] * 20
        model.batches.clear()
        together = slide_inference(model, images, crop=16, stride=10, num_classes=3, images_per_pass=16)
    assert model.batches == [16, 16, 8]  # 8 windows of the 2 images a pass
    torch.testing.assert_close(together, one_by_one, atol=1e-6, rtol=1e-6)


class _FixedSize(_PlacedBias):
    """A segmenter that runs at 16x16 only, as a ViT backbone built for one size."""

    img_size = (16, 16)
    fixed_input_size = True

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.img_size:
            raise BioattnError(f"built for 16x16 inputs, got {x.shape[-2]}x{x.shape[-1]}")
        return super().forward(x)


def test_a_fixed_size_model_is_run_on_windows_of_its_size():
    torch.manual_seed(0)
    model = _FixedSize()
    assert built_size(model) == (16, 16) and built_size(nn.Conv2d(3, 3, 1)) is None
    images = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        with pytest.raises(BioattnError, match="built for 16x16"):
            whole_inference(model, images)
        # windows of the model's size, two thirds of a window (10 pixels) apart, as mmsegmentation
        torch.testing.assert_close(fitted_inference(model, images, 3),
                                   slide_inference(model, images, crop=16, stride=10, num_classes=3))
        small = images[..., :16, :16]  # images of its size are seen whole
        torch.testing.assert_close(fitted_inference(model, small, 3), model(small))
        # a model that takes any size sees whole images
        conv = nn.Conv2d(3, 3, 1)
        torch.testing.assert_close(fitted_inference(conv, images, 3), conv(images))


def test_whole_inference_resizes_coarse_logits():
    coarse = nn.Conv2d(3, 4, kernel_size=4, stride=4)
    assert whole_inference(coarse, torch.randn(1, 3, 16, 20)).shape == (1, 4, 16, 20)
    with pytest.raises(BioattnError, match=r"must return logits"):
        whole_inference(nn.Flatten(), torch.randn(1, 3, 4, 4))


class _OneHotSet(TensorDataset):
    """Images that are the one-hot code of their labels, so the identity is a perfect model."""

    classes = ["sky", "tree", "road"]


def _one_hot_set(n: int = 4, ignore: bool = True) -> _OneHotSet:
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (n, 12, 12), generator=g)
    images = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    if ignore:
        labels[:, 0, 0] = 255
    return _OneHotSet(images, labels)


def test_evaluate_segmentation_whole_and_slide():
    loader = DataLoader(_one_hot_set(), batch_size=2)
    for mode in ("whole", "slide"):
        out = evaluate_segmentation(nn.Identity(), loader, 3, mode=mode, crop=8, stride=5)
        assert out["miou"] == pytest.approx(100.0) and out["pixel_acc"] == pytest.approx(100.0)
        assert out["n_pixels"] == 4 * (144 - 1) and out["mode"] == mode
        assert [row["class"] for row in out["per_class"]] == ["sky", "tree", "road"]
    flipped = evaluate_segmentation(_Permute([2, 1, 0]), loader, 3)
    assert flipped["per_class"][1]["iou"] == pytest.approx(100.0) and flipped["per_class"][0]["iou"] == 0.0
    with pytest.raises(BioattnError, match=r"unknown inference mode"):
        evaluate_segmentation(nn.Identity(), loader, 3, mode="tiles")


class _Permute(nn.Module):
    def __init__(self, order):
        super().__init__()
        self.order = order

    def forward(self, x):
        return x[:, self.order]


class _Constant(nn.Module):
    """Predicts class 0 everywhere, whatever the image."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k, *x.shape[-2:])
        out[:, 0] = 1.0
        return out


def test_segmentation_corruptions(tmp_path):
    arrays = load_embedded(EmbeddedSpec.parse("embedded:train=8,val=8,test=8,size=32"), "val", cache_dir=tmp_path)
    ds = EmbeddedSegmentation(arrays)
    kinds, severities = ["gaussian_noise", "contrast"], [1, 5]
    # a model blind to the image scores the same on corrupted images: the labels are unchanged
    blind = segmentation_corruptions(_Constant(11), ds, kinds, severities, limit=4, batch_size=3)
    assert blind["n"] == 4 and blind["severities"] == severities
    for c in kinds:
        assert blind["miou"][c] == {"1": pytest.approx(blind["clean_miou"]), "5": pytest.approx(blind["clean_miou"])}
    # a model that looks at the pixels sees the corruption
    torch.manual_seed(0)
    looking = nn.Conv2d(3, 11, kernel_size=1)
    out = segmentation_corruptions(looking, ds, ["gaussian_noise"], [5], limit=4)
    clean = evaluate_segmentation(looking, DataLoader(torch.utils.data.Subset(ds, [0, 2, 5, 7]), batch_size=4), 11)
    assert out["clean_miou"] == pytest.approx(clean["miou"])
    assert out["miou"]["gaussian_noise"]["5"] != pytest.approx(out["clean_miou"])
    assert out["mean_miou"] == pytest.approx(out["corruption_miou"]["gaussian_noise"])
    with pytest.raises(BioattnError, match=r"unknown corruption"):
        segmentation_corruptions(looking, ds, ["rain"], [1])


# ------------------------------------------------------------------------------------------
# steering
# ------------------------------------------------------------------------------------------
def test_steering_score_with_an_oracle(tmp_path):
    arrays = load_embedded(EmbeddedSpec.parse(TINY_PAIR), "val", cache_dir=tmp_path)
    ds = EmbeddedSegmentation(arrays)
    answers = {}
    for i in range(len(ds)):
        (m0, m1), (c0, c1) = arrays.masks[i], arrays.labels[i]
        answers[ds[i][0].numpy().tobytes()] = (torch.from_numpy(m0 & ~m1), torch.from_numpy(np.array(m1)),
                                               int(c0), int(c1))
    seen_priors = []

    def segment(x, prior):
        """Finds the prompted object exactly; without a prior only the first object."""
        seen_priors.append(prior)
        out = torch.zeros(x.shape[0], 11, *x.shape[-2:])
        for b in range(x.shape[0]):
            first, second, c0, c1 = answers[x[b].numpy().tobytes()]
            cls, mask = (c0, first) if prior is None or int(prior[b]) == c0 else (c1, second)
            out[b, cls + 1][mask] = 1.0
        return out

    out = steering_score(segment, ds, batch_size=3)
    assert out["n_images"] == 8
    assert out["first_with_prior"] == pytest.approx(100.0) and out["second_with_prior"] == pytest.approx(100.0)
    assert out["first_without_prior"] == pytest.approx(100.0) and out["second_without_prior"] == 0.0
    assert out["without_prior"] == pytest.approx(50.0) and out["gain"] == pytest.approx(50.0)
    # the priors are the objects' classes (the classifier's indices), each object of each image once
    given = torch.cat([p for p in seen_priors if p is not None])
    assert sorted(given.tolist()) == sorted(np.asarray(arrays.labels).reshape(-1).tolist())


def test_steering_uses_segment_with_prior_and_needs_pairs(tmp_path):
    class Segmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 11, 1)
            self.calls = 0

        def segment_with_prior(self, x, prior):
            self.calls += 1
            return self.conv(x)

    model = Segmenter()
    pairs = EmbeddedSegmentation(load_embedded(EmbeddedSpec.parse(TINY_PAIR), "val", cache_dir=tmp_path))
    out = steering_score(model, pairs, limit=4, batch_size=4)
    assert model.calls == 3 and out["n_images"] == 4 and out["gain"] == pytest.approx(0.0)

    class Steerable(nn.Module):
        """A module whose forward takes the prior as keywords, as UperNetSegmenter's does."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 11, 1)
            self.priors = []

        def forward(self, x, prior=None, prior_scale=1.0):
            self.priors.append((None if prior is None else prior.tolist(), prior_scale))
            return self.conv(x)

    steerable = Steerable()
    steering_score(steerable, pairs, prior_scale=7.0, limit=2)
    labels = np.asarray(pairs.arrays.labels)[[0, 7]]
    assert steerable.priors == [(None, 7.0), (labels[:, 0].tolist(), 7.0), (labels[:, 1].tolist(), 7.0)]
    single = EmbeddedSegmentation(load_embedded(EmbeddedSpec.parse("embedded:train=8,val=8,test=8,size=32"),
                                                "val", cache_dir=tmp_path))
    with pytest.raises(BioattnError, match=r"two-object images"):
        steering_score(model, single)
    assert embedded_label_map(pairs.arrays, 0).shape == (32, 32)


# ------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------
def test_plot_segmentation_writes_a_png(tmp_path):
    ds = _one_hot_set(n=2)
    images, labels = ds.tensors
    out = plot_segmentation(images, labels, images.clone(), ds.classes, tmp_path / "seg.png",
                            mean=(0, 0, 0), std=(1, 1, 1))
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 100
    with pytest.raises(BioattnError, match=r"cannot write a figure as '.txt'"):
        plot_segmentation(images, labels, labels, ds.classes, tmp_path / "seg.txt", (0, 0, 0), (1, 1, 1))


def test_palette_is_fixed_and_distinct():
    colours = palette()
    assert colours.shape == (256, 3) and colours[0].tolist() == [0, 0, 0]
    assert colours[1].tolist() == [128, 0, 0] and colours[15].tolist() == [192, 128, 128]  # VOC's aeroplane, person
    assert len({tuple(c) for c in colours[:150]}) == 150
