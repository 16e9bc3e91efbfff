"""Semantic segmentation: one class per pixel (label maps with ignore index 255: PASCAL VOC,
ADE20K, Cityscapes, ``embedded:seg``); a UperNet head on the backbone's feature maps
(:mod:`bioattn.models.upernet`); pixel-wise cross-entropy; mIoU, per-class IoU and pixel accuracy
from the confusion matrix (:class:`bioattn.metrics.SegmentationMeter`).

A segmenter predicts a label map of any size from whole images or from sliding windows
(mmsegmentation's ``whole`` and ``slide`` test modes); a model built for one input size is
validated by windows of that size (:func:`fitted_inference`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Augmentation
from ..data.segmentation import build_segmentation_dataset
from ..distributed import all_reduce_tensor
from ..errors import BioattnError
from ..metrics.segmentation import IGNORE_INDEX, SegmentationMeter
from ..models.upernet import UperNetSegmenter, segmenter_name
from ..protocol import unwrap
from .base import Task
from .spec import SEGMENTATION


class Segmentation(Task):
    spec = SEGMENTATION

    def build_dataset(self, spec, split, input, train, aug=None, classes=None, subset=None,
                      skip_bad_images=False, cache_dir=None):
        a = aug or Augmentation()
        return build_segmentation_dataset(
            spec, split, crop=input.img_size, mean=input.mean, std=input.std, train=train,
            scale_jitter=train and a.random_resized_crop, hflip=a.hflip if train else 0.0,
            photometric=train and a.color_jitter > 0, cache_dir=cache_dir)

    def model_name(self, name):
        return segmenter_name(name)

    def criterion(self, cfg, num_classes):
        return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    def meter(self, num_classes):
        return SegmentationMeter(num_classes, ignore_index=IGNORE_INDEX)

    def merged(self, meter, info):
        return SegmentationMeter.from_totals(all_reduce_tensor(meter.totals(), info), ignore_index=IGNORE_INDEX)

    def predict(self, model, images, num_classes):
        # label maps are validated at their own sizes: a model built for one input size runs on
        # sliding windows of that size, as mmsegmentation tests it
        return fitted_inference(model, images, num_classes)

    def train_score(self, logits, targets):
        valid = targets != IGNORE_INDEX
        return ((logits.argmax(1) == targets) & valid).sum(), valid.sum()

    def summary(self, record):
        return f"val mIoU {record['val_miou']:.2f}%, pixel acc {record['val_pixel_acc']:.2f}%"

    def check_model_name(self, model, data):
        pass  # every model name is a segmenter's backbone or a segmenter (model_name)

    def owns(self, model):
        return isinstance(unwrap(model), UperNetSegmenter)

    def check_model(self, model):
        if not self.owns(model):
            raise BioattnError(f"{type(unwrap(model)).__name__} is not a segmentation model; segmentation "
                               "data needs one (e.g. upernet_vit_micro_patch8_64, or bioattn train --task "
                               "segmentation)")


# ------------------------------------------------------------------------------------------
# predicting label maps
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


def slide_stride(crop) -> tuple[int, int]:
    """The default step between sliding windows of size ``crop``: two thirds of a window."""
    return tuple(max(1, 2 * c // 3) for c in _pair(crop, "crop"))


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
    return slide_inference(model, images, size, slide_stride(size), num_classes)
