"""Semantic segmentation evaluation: mIoU from a confusion matrix, whole and sliding-window
inference, robustness to corruptions, steering by a class prior, and pictures.

mIoU follows mmsegmentation: one ``K x K`` confusion matrix (rows: ground truth, columns:
prediction) is summed over the whole set, pixels labelled ``ignore_index`` (255) left out; the
IoU of class ``k`` is ``TP / (TP + FP + FN)``, NaN when the class is in neither the labels nor
the predictions, and the mean leaves NaN classes out. Pixel accuracy is the matrix's trace over
its sum; the class accuracy ``TP / (TP + FN)`` is NaN for classes absent from the labels, and
their mean (``mean_acc``) leaves those out. Figures are in percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.pixels import Pixels
from ..data.subsets import spread_indices
from ..distributed import DistInfo, all_reduce_tensor
from ..errors import BioattnError
from ..fileio import atomic_write
from ..protocol import unwrap
from .corruptions import Corrupter, image_seed
from .mce import CORRUPTIONS, check_corruption_names, check_severities

__all__ = [
    "IGNORE_INDEX", "SegmentationMeter", "segmentation_figures", "whole_inference", "slide_windows",
    "slide_inference", "built_size", "fitted_inference",
    "evaluate_segmentation", "segmentation_corruptions", "steering_score", "palette",
    "plot_segmentation",
]

IGNORE_INDEX = 255
_FORMATS = {".png", ".pdf", ".svg", ".jpg", ".jpeg"}
_IGNORE_COLOUR = (255, 255, 255)


# ------------------------------------------------------------------------------------------
# the meter
# ------------------------------------------------------------------------------------------
def _nanmean(values: torch.Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else math.nan


def segmentation_figures(confusion: torch.Tensor, loss_sum: float = 0.0, loss_pixels: float = 0.0) -> dict:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU / accuracy (percent) of a
    ``K x K`` confusion matrix (rows: ground truth); ``loss`` (mean cross-entropy per labelled
    pixel) when ``loss_pixels`` is positive."""
    cm = confusion.detach().double().cpu()
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise BioattnError(f"a confusion matrix must be square, got {tuple(cm.shape)}")
    hits = cm.diagonal()
    truth, predicted = cm.sum(1), cm.sum(0)
    union = truth + predicted - hits
    nan = torch.full_like(hits, math.nan)
    iou = torch.where(union > 0, hits / union.clamp(min=1), nan)
    acc = torch.where(truth > 0, hits / truth.clamp(min=1), nan)
    total = float(cm.sum())
    out = {
        "miou": 100.0 * _nanmean(iou),
        "pixel_acc": 100.0 * float(hits.sum()) / total if total else math.nan,
        "mean_acc": 100.0 * _nanmean(acc),
        "per_class_iou": (100.0 * iou).tolist(),
        "per_class_acc": (100.0 * acc).tolist(),
        "n_pixels": int(total),
    }
    if loss_pixels > 0:
        out["loss"] = float(loss_sum) / float(loss_pixels)
    return out


class SegmentationMeter:
    """Accumulates the confusion matrix of ``num_classes`` classes (int64, on the device of the
    first update) and, when given logits, the summed pixel-wise cross-entropy.

    ``update(output, target)`` takes logits ``(B, K, h, w)`` (resized bilinearly to the
    target's size when they differ; the class is their arg-max) or class predictions
    ``(B, H, W)``, and targets ``(B, H, W)`` in ``[0, K)`` or ``ignore_index``.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise BioattnError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.loss_sum = 0.0
        self.loss_pixels = 0

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        k = self.num_classes
        if target.ndim != 3:
            raise BioattnError(f"segmentation targets must be (B, H, W), got {tuple(target.shape)}")
        if output.ndim == 4:
            if output.shape[1] != k:
                raise BioattnError(f"logits have {output.shape[1]} classes, the meter {k}")
            if output.shape[0] != target.shape[0]:
                raise BioattnError(f"{output.shape[0]} logit maps for {target.shape[0]} targets")
            logits = output.float()
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
            prediction = logits.argmax(1)
        elif output.ndim == 3:
            logits, prediction = None, output
        else:
            raise BioattnError(f"segmentation output must be logits (B, K, H, W) or classes (B, H, W), "
                               f"got {tuple(output.shape)}")
        if prediction.shape != target.shape:
            raise BioattnError(f"predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} "
                               "differ in shape")
        target = target.to(prediction.device).long()
        valid = target != self.ignore_index
        truth, predicted = target[valid], prediction[valid].long()
        if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= k):
            bad = truth[(truth < 0) | (truth >= k)]
            raise BioattnError(f"target holds label {int(bad[0])}, outside [0, {k}) and not the ignore index "
                               f"{self.ignore_index}")
        if predicted.numel() and (int(predicted.min()) < 0 or int(predicted.max()) >= k):
            raise BioattnError(f"predictions hold classes outside [0, {k})")
        if self.confusion.device != prediction.device:
            self.confusion = self.confusion.to(prediction.device)
        self.confusion += torch.bincount(truth * k + predicted, minlength=k * k).view(k, k)
        if logits is not None:
            self.loss_sum += float(F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum"))
            self.loss_pixels += int(truth.numel())

    def totals(self) -> torch.Tensor:
        """What to sum over processes: a float64 vector of the ``K * K`` confusion counts (row
        by row) followed by the summed loss and the number of pixels it covers."""
        loss = torch.tensor([self.loss_sum, float(self.loss_pixels)], dtype=torch.float64,
                            device=self.confusion.device)
        return torch.cat([self.confusion.reshape(-1).double(), loss])

    @staticmethod
    def from_totals(totals: torch.Tensor | Sequence[float], ignore_index: int = IGNORE_INDEX) -> dict:
        """:meth:`compute`'s figures from (summed) :meth:`totals`."""
        flat = torch.as_tensor(totals, dtype=torch.float64).detach().cpu().reshape(-1)
        k = math.isqrt(max(flat.numel() - 2, 0))
        if k < 1 or k * k + 2 != flat.numel():
            raise BioattnError(f"segmentation totals must hold K*K + 2 numbers, got {flat.numel()}")
        return segmentation_figures(flat[:k * k].view(k, k), float(flat[-2]), float(flat[-1]))

    def compute(self) -> dict:
        """``miou``, ``pixel_acc``, ``mean_acc`` (percent), ``per_class_iou`` and
        ``per_class_acc`` (percent, NaN for absent classes), ``n_pixels`` and, when logits were
        given, ``loss`` (mean cross-entropy per labelled pixel)."""
        return segmentation_figures(self.confusion, self.loss_sum, self.loss_pixels)


def constant_prediction_miou(dataset: Dataset, num_classes: int, label: int = 0, limit: int | None = None,
                             ignore_index: int = IGNORE_INDEX) -> dict:
    """The figures of predicting ``label`` (default: background) for every pixel of
    ``dataset``'s label maps (on ``limit`` images spread evenly over it): the floor a
    segmenter must rise above."""
    meter = SegmentationMeter(num_classes, ignore_index)
    for i in spread_indices(len(dataset), limit):
        target = torch.as_tensor(dataset[i][1])[None]
        meter.update(torch.full_like(target, int(label)), target)
    return meter.compute()


# ------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------
def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and len(value) == 2:
        pair = (int(value[0]), int(value[1]))
    else:
        raise BioattnError(f"{name} must be an integer or a pair (h, w), got {value!r}")
    if min(pair) < 1:
        raise BioattnError(f"{name} must be positive, got {value!r}")
    return pair


def _logits(model: Callable, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``model(images)`` as logits ``(B, K, *size)`` (resized bilinearly when the model's output
    is smaller or larger)."""
    out = model(images)
    if not torch.is_tensor(out) or out.ndim != 4 or out.shape[0] != images.shape[0]:
        shown = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise BioattnError(f"a segmentation model must return logits (B, K, H, W), got {shown}")
    if tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return out


def whole_inference(model: Callable, images: torch.Tensor) -> torch.Tensor:
    """Logits of whole images ``(B, 3, H, W)``, at the input size ``(B, K, H, W)``."""
    if images.ndim != 4:
        raise BioattnError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    return _logits(model, images, tuple(images.shape[-2:]))


def slide_windows(height: int, width: int, crop, stride) -> list[tuple[int, int, int, int]]:
    """mmsegmentation's sliding windows ``(y0, y1, x0, x1)`` over an image: a grid of steps of
    ``stride``, each window ``crop`` in size and moved back inside the image at the borders
    (smaller than ``crop`` only where the image is)."""
    crop_h, crop_w = _pair(crop, "crop")
    stride_h, stride_w = _pair(stride, "stride")
    if stride_h > crop_h or stride_w > crop_w:
        raise BioattnError(f"a sliding-window stride ({stride_h}x{stride_w}) larger than the window "
                           f"({crop_h}x{crop_w}) leaves pixels between the windows: give --slide-stride at "
                           "most --slide-crop")
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride_h + crop_h, height), min(c * stride_w + crop_w, width)
            windows.append((max(y1 - crop_h, 0), y1, max(x1 - crop_w, 0), x1))
    return windows


def slide_inference(model: Callable, images: torch.Tensor, crop, stride, num_classes: int,
                    images_per_pass: int = 16) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` from overlapping ``crop`` windows ``stride`` apart
    (:func:`slide_windows`): each window's logits (resized to the window) are summed into place
    and every pixel divided by the number of windows covering it. A window smaller than
    ``crop`` (the image is smaller) is padded with zeros at the bottom and right for the model
    and its logits cut back. Several windows go through the model together, about
    ``images_per_pass`` crops a pass."""
    if images.ndim != 4:
        raise BioattnError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    crop_h, crop_w = _pair(crop, "crop")
    batch, _, height, width = images.shape
    summed = images.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    count = images.new_zeros((1, 1, height, width), dtype=torch.float32)
    windows = slide_windows(height, width, (crop_h, crop_w), stride)
    group = max(1, images_per_pass // batch)
    for first in range(0, len(windows), group):
        chosen = windows[first:first + group]
        crops = []
        for y0, y1, x0, x1 in chosen:
            window = images[:, :, y0:y1, x0:x1]
            pad_h, pad_w = crop_h - (y1 - y0), crop_w - (x1 - x0)
            crops.append(F.pad(window, (0, pad_w, 0, pad_h)) if pad_h > 0 or pad_w > 0 else window)
        logits = _logits(model, torch.cat(crops), (crop_h, crop_w))
        if logits.shape[1] != num_classes:
            raise BioattnError(f"the model gives {logits.shape[1]} classes, expected {num_classes}")
        for i, (y0, y1, x0, x1) in enumerate(chosen):
            summed[:, :, y0:y1, x0:x1] += logits[i * batch:(i + 1) * batch, :, :y1 - y0, :x1 - x0].float()
            count[:, :, y0:y1, x0:x1] += 1
    if bool((count == 0).any()):  # pragma: no cover  (the windows cover every pixel by construction)
        raise BioattnError("sliding windows left pixels uncovered")
    return summed / count


def built_size(model: nn.Module) -> tuple[int, int] | None:
    """The input size ``(h, w)`` a segmenter only runs at (a ViT backbone's position embedding
    built for one size), or None when it takes any size."""
    model = unwrap(model)
    size = getattr(model, "img_size", None)
    if not getattr(model, "fixed_input_size", False) or size is None:
        return None
    return _pair(tuple(size) if not isinstance(size, int) else size, "img_size")


def fitted_inference(model: nn.Module, images: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` of ``images`` the way ``model`` can run: whole images, or, for a
    model built for one input size (:func:`built_size`) given images of another size, sliding
    windows of that size two thirds of a window apart (mmsegmentation's ``slide`` test mode)."""
    size = built_size(model)
    if size is None or tuple(images.shape[-2:]) == size:
        return whole_inference(model, images)
    return slide_inference(model, images, size, tuple(max(1, 2 * c // 3) for c in size), num_classes)


def _inference(mode: str, crop, stride, num_classes: int) -> Callable[[Callable, torch.Tensor], torch.Tensor]:
    if mode == "whole":
        return whole_inference
    if mode == "slide":
        if crop is None:
            raise BioattnError("slide inference needs a crop size")
        stride = stride if stride is not None else tuple(max(1, 2 * c // 3) for c in _pair(crop, "crop"))
        return lambda model, images: slide_inference(model, images, crop, stride, num_classes)
    raise BioattnError(f"unknown inference mode '{mode}' (choose from whole, slide)")


def _classes_of(dataset) -> list[str] | None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    return list(classes) if classes is not None else None


def _with_table(result: dict, classes: Sequence[str] | None) -> dict:
    if classes is not None and len(classes) == len(result["per_class_iou"]):
        result["per_class"] = [{"class": name, "iou": iou, "acc": acc}
                               for name, iou, acc in zip(classes, result["per_class_iou"], result["per_class_acc"])]
    return result


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    mode: str = "whole",
    crop=None,
    stride=None,
    device: torch.device | str = "cpu",
    ignore_index: int = IGNORE_INDEX,
    info: DistInfo | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """The :class:`SegmentationMeter` figures of ``model`` on ``loader`` (``(images, labels)``
    batches), predicting by ``whole`` images or by ``slide`` windows (``crop``, ``stride``;
    default stride two thirds of the crop). Logits are resized to the labels' size. With
    ``info`` the matrices of every process are summed. When the data set has ``classes``, the
    result has ``per_class``: one ``{"class", "iou", "acc"}`` row per class."""
    device = torch.device(device)
    infer = _inference(mode, crop, stride, num_classes)
    meter = SegmentationMeter(num_classes, ignore_index)
    was_training = model.training
    model.eval()
    try:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            meter.update(infer(model, images.float()), labels)
            if progress is not None:
                progress(int(images.shape[0]))
    finally:
        model.train(was_training)
    totals = meter.totals() if info is None else all_reduce_tensor(meter.totals(), info)
    result = SegmentationMeter.from_totals(totals, ignore_index)
    result["mode"] = mode
    return _with_table(result, _classes_of(loader.dataset))


# ------------------------------------------------------------------------------------------
# corruptions
# ------------------------------------------------------------------------------------------
def _pixels_of(dataset) -> Pixels:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    if mean is None or std is None:
        raise BioattnError("the data set does not say how its images are normalised (mean/std): pass pixels=")
    return Pixels(mean, std)


@torch.no_grad()
def segmentation_corruptions(
    model: nn.Module,
    dataset: Dataset,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    num_classes: int | None = None,
    pixels: Pixels | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    workers: int = 0,
    seed: int = 0,
    mode: str = "whole",
    crop=None,
    stride=None,
    device: torch.device | str = "cpu",
    ignore_index: int = IGNORE_INDEX,
) -> dict:
    """mIoU (percent) of ``model`` on ``dataset`` clean and under each corruption and severity.

    Each normalised image is turned back into 8-bit pixels (``pixels``, default: the data
    set's ``mean``/``std``), corrupted by :mod:`bioattn.evaluate.corruptions` (the ImageNet-C
    functions, a seed per image, corruption and severity), normalised again and segmented; the
    labels are unchanged. ``limit`` images are spread evenly over the set. Returns
    ``clean_miou``, ``miou`` (corruption -> severity -> mIoU), ``corruption_miou`` (mean over
    severities), ``mean_miou`` (over corruptions), and ``n``.
    """
    corruptions = check_corruption_names(corruptions)
    severities = check_severities(severities)
    num_classes = num_classes if num_classes is not None else getattr(dataset, "num_classes", None)
    if num_classes is None:
        raise BioattnError("give num_classes: the data set does not say how many classes it has")
    pixels = pixels if pixels is not None else _pixels_of(dataset)
    device = torch.device(device)
    infer = _inference(mode, crop, stride, num_classes)
    chosen = spread_indices(len(dataset), limit)
    loader = DataLoader(Subset(dataset, chosen), batch_size=batch_size, shuffle=False)
    clean = SegmentationMeter(num_classes, ignore_index)
    meters = {(c, s): SegmentationMeter(num_classes, ignore_index) for c in corruptions for s in severities}
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with Corrupter(workers, corruptions) as corrupter:
            for images, labels in loader:
                labels = labels.to(device)
                n = int(images.shape[0])
                clean.update(infer(model, images.to(device).float()), labels)
                raw = pixels.to_uint8(images)
                for (c, s), meter in meters.items():
                    seeds = [image_seed(seed, c, s, seen + i) for i in range(n)]
                    x = pixels.from_uint8(corrupter.corrupt(raw, c, s, seeds)).to(device)
                    meter.update(infer(model, x), labels)
                seen += n
    finally:
        model.train(was_training)
    if seen == 0:
        raise BioattnError("the data set for the segmentation corruption suite is empty")
    miou = {c: {str(s): meters[(c, s)].compute()["miou"] for s in severities} for c in corruptions}
    per_corruption = {c: sum(v.values()) / len(v) for c, v in miou.items()}
    return {
        "corruptions": list(corruptions),
        "severities": list(severities),
        "n": seen,
        "seed": seed,
        "clean_miou": clean.compute()["miou"],
        "miou": miou,
        "corruption_miou": per_corruption,
        "mean_miou": sum(per_corruption.values()) / len(per_corruption),
    }


# ------------------------------------------------------------------------------------------
# steering by a class prior
# ------------------------------------------------------------------------------------------
def _segment_fn(segment, prior_scale: float) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``segment`` as a function of ``(x, prior)``: its ``segment_with_prior`` method, a module's
    forward with ``prior=`` and ``prior_scale=`` (:class:`~bioattn.models.upernet.UperNetSegmenter`),
    or the callable itself."""
    method = getattr(segment, "segment_with_prior", None)
    if callable(method):
        return method
    if isinstance(segment, nn.Module):
        return lambda x, prior: segment(x, prior=prior, prior_scale=prior_scale)
    if callable(segment):
        return segment
    raise BioattnError(f"steering needs a segmenter that takes a prior, got {type(segment).__name__}")


@torch.no_grad()
def steering_score(
    segment,
    dataset: Dataset,
    prior_scale: float = 40.0,
    batch_size: int = 16,
    limit: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """How much a class prior helps a segmenter find the prompted object, on two-object
    embedded images (an :class:`~bioattn.data.segmentation.EmbeddedSegmentation` of
    ``embedded:seg,pair`` arrays, images at the masks' size).

    ``segment`` gives logits ``(B, K, H, W)``: an object with ``segment_with_prior(x, prior)``,
    a module called as ``segment(x, prior=prior, prior_scale=prior_scale)`` (the
    :class:`~bioattn.models.upernet.UperNetSegmenter` of an AbSViT built with
    ``prior_classes``), or a callable ``segment(x, prior)``. ``prior`` is a ``LongTensor``
    ``(B,)`` of the objects' classes as the embedded generator numbers them (the backbone's
    classifier index, as in :mod:`bioattn.evaluate.steering`), or None for no prior (a learned
    prompt, for AbSViT). For each image and each of its two objects, the IoU (percent) between
    the pixels predicted as the object's segmentation class (its class + 1) and the object's
    visible pixels (the second object is drawn over the first) is measured with the object's
    class as the prior and without a prior. Returns ``first_with_prior``,
    ``first_without_prior``, ``second_with_prior``, ``second_without_prior`` (means over
    images), ``with_prior``, ``without_prior`` (over both objects), ``gain`` (their
    difference) and ``n_images``.
    """
    fn = _segment_fn(segment, prior_scale)
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    arrays = getattr(base, "arrays", None)
    if arrays is None or not getattr(arrays, "pair", False):
        raise BioattnError("the steering score needs two-object images with their masks (data 'embedded:seg,pair')")
    if device is None:
        params = next(iter(segment.parameters()), None) if isinstance(segment, nn.Module) else None
        device = params.device if params is not None else torch.device("cpu")
    device = torch.device(device)
    chosen = spread_indices(len(base), limit)
    if not chosen:
        raise BioattnError("the steering score needs at least one image")
    model = segment if isinstance(segment, nn.Module) else None
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    ious: dict[tuple[int, bool], list[torch.Tensor]] = {(j, p): [] for j in (0, 1) for p in (True, False)}
    try:
        for start in range(0, len(chosen), batch_size):
            index = chosen[start:start + batch_size]
            x = torch.stack([base[i][0] for i in index]).to(device).float()
            labels = torch.as_tensor(np.asarray(arrays.labels)[index], device=device).long()    # (B, 2)
            masks = torch.as_tensor(np.asarray(arrays.masks)[index], device=device).bool()     # (B, 2, H, W)
            if tuple(x.shape[-2:]) != tuple(masks.shape[-2:]):
                raise BioattnError(f"steering images are {tuple(x.shape[-2:])} but their masks "
                                   f"{tuple(masks.shape[-2:])}: evaluate at the data's own size")
            visible = torch.stack([masks[:, 0] & ~masks[:, 1], masks[:, 1]], dim=1)
            unprompted = _logits(lambda t: fn(t, None), x, tuple(x.shape[-2:])).argmax(1)
            for j in (0, 1):
                seg_class = labels[:, j] + 1
                prompted = _logits(lambda t, p=labels[:, j]: fn(t, p), x, tuple(x.shape[-2:])).argmax(1)
                for with_prior, prediction in ((True, prompted), (False, unprompted)):
                    found = prediction == seg_class[:, None, None]
                    inter = (found & visible[:, j]).sum(dim=(-2, -1)).double()
                    union = (found | visible[:, j]).sum(dim=(-2, -1)).double()
                    ious[(j, with_prior)].append(torch.where(union > 0, inter / union.clamp(min=1),
                                                             torch.full_like(union, math.nan)).cpu())
    finally:
        if model is not None:
            model.train(was_training)
    means = {key: 100.0 * _nanmean(torch.cat(values)) for key, values in ious.items()}
    both_with = 100.0 * _nanmean(torch.cat(ious[(0, True)] + ious[(1, True)]))
    both_without = 100.0 * _nanmean(torch.cat(ious[(0, False)] + ious[(1, False)]))
    return {
        "first_with_prior": means[(0, True)],
        "first_without_prior": means[(0, False)],
        "second_with_prior": means[(1, True)],
        "second_without_prior": means[(1, False)],
        "with_prior": both_with,
        "without_prior": both_without,
        "gain": both_with - both_without,
        "n_images": len(chosen),
        "prior_scale": float(prior_scale),
    }


# ------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------
def palette(n: int = 256) -> np.ndarray:
    """A fixed colour per class ``(n, 3)`` uint8: the bits of the class index spread over the
    high bits of red, green and blue (PASCAL VOC's colour map; class 0 black)."""
    colours = np.zeros((n, 3), np.uint8)
    for index in range(n):
        value, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        colours[index] = rgb
    return colours


def _colourise(label: np.ndarray, colours: np.ndarray, ignore_index: int) -> np.ndarray:
    out = colours[np.clip(label, 0, len(colours) - 1)]
    out[label == ignore_index] = _IGNORE_COLOUR
    return out


def plot_segmentation(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    classes: Sequence[str] | None,
    out_png: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = IGNORE_INDEX,
    title: str | None = None,
) -> Path:
    """Draw each image (normalised ``(B, 3, H, W)``), its ground truth and the prediction
    (``(B, H, W)`` class maps; logits ``(B, K, H, W)`` are reduced by arg-max) side by side, a
    row per image, in the fixed :func:`palette` (ignored pixels white), with a legend of the
    classes shown. Writes ``out_png`` (png, pdf, svg or jpg)."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    out_path = Path(out_png)
    fmt = out_path.suffix.lower()
    if fmt not in _FORMATS:
        raise BioattnError(f"cannot write a figure as '{out_path.suffix}': use one of {', '.join(sorted(_FORMATS))}")
    if predictions.ndim == 4:
        predictions = predictions.argmax(1)
    if images.ndim != 4 or labels.ndim != 3 or predictions.ndim != 3:
        raise BioattnError(f"plot_segmentation needs images (B, 3, H, W), labels and predictions (B, H, W); got "
                           f"{tuple(images.shape)}, {tuple(labels.shape)}, {tuple(predictions.shape)}")
    n = images.shape[0]
    if labels.shape[0] != n or predictions.shape[0] != n or n == 0:
        raise BioattnError(f"plot_segmentation needs as many labels and predictions as images (>= 1), got "
                           f"{n}, {labels.shape[0]} and {predictions.shape[0]}")
    pixels = Pixels(mean, std)
    colours = palette()
    labels_np = labels.detach().cpu().long().numpy()
    preds_np = predictions.detach().cpu().long().numpy()
    height, width = images.shape[-2:]
    panel = 2.4
    legend_h = 0.9 if classes is not None else 0.0
    fig = Figure(figsize=(3 * panel + 0.4, n * panel * height / width + 0.6 + legend_h), dpi=100)
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        shown = [pixels.to_picture(images[row]), _colourise(labels_np[row], colours, ignore_index),
                 _colourise(preds_np[row], colours, ignore_index)]
        for col, (picture, name) in enumerate(zip(shown, ("image", "ground truth", "prediction"))):
            ax = axes[row, col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=10)
    if classes is not None:
        present = np.unique(np.concatenate([labels_np.reshape(-1), preds_np.reshape(-1)]))
        present = [int(c) for c in present if 0 <= c < len(classes)]
        handles = [Patch(facecolor=colours[c] / 255.0, edgecolor="black", linewidth=0.5, label=classes[c])
                   for c in present]
        if handles:
            fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format=fmt.lstrip(".").replace("jpg", "jpeg")),
                 what="figure")
    return out_path
