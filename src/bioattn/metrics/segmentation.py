"""Semantic segmentation figures: mIoU from a confusion matrix.

mIoU follows mmsegmentation: one ``K x K`` confusion matrix (rows: ground truth, columns:
prediction) is summed over the whole set, pixels labelled ``ignore_index`` (255) left out; the
IoU of class ``k`` is ``TP / (TP + FP + FN)``, NaN when the class is in neither the labels nor
the predictions, and the mean leaves NaN classes out. Pixel accuracy is the matrix's trace over
its sum; the class accuracy ``TP / (TP + FN)`` is NaN for classes absent from the labels, and
their mean (``mean_acc``) leaves those out. Figures are in percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import BioattnError

__all__ = ["IGNORE_INDEX", "SegmentationMeter", "nanmean", "segmentation_figures"]

# the label of pixels that belong to no class (borders, unlabelled regions)
IGNORE_INDEX = 255


def nanmean(values: torch.Tensor) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
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
        "miou": 100.0 * nanmean(iou),
        "pixel_acc": 100.0 * float(hits.sum()) / total if total else math.nan,
        "mean_acc": 100.0 * nanmean(acc),
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
