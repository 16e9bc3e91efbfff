"""What differs between bioattn's three tasks, in one place: the data, the loss and the metrics.

* ``classification``: one class per image; cross-entropy (soft targets with mixup/cutmix, label
  smoothing); top-1, top-5 (:class:`bioattn.evaluate.accuracy.Accuracy`).
* ``segmentation``: one class per pixel (label maps with ignore index 255); a UperNet head on
  the backbone's feature maps (:mod:`bioattn.models.upernet`); pixel-wise cross-entropy; mIoU,
  per-class IoU and pixel accuracy from the confusion matrix
  (:class:`bioattn.evaluate.segmentation.SegmentationMeter`).
* ``multilabel``: a set of classes per image (multi-hot targets); binary cross-entropy; mean
  average precision and F1 (:class:`bioattn.evaluate.multilabel.MultiLabelMeter`).

The trainer and the evaluator ask :func:`get_task` for a :class:`Task` and use only its
methods, so that a loop reads the same for every task. Which task a data spec is made for is
decided by :func:`bioattn.config.task_of_data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import TASKS, TrainConfig
from .data import Augmentation, build_dataset
from .data.coco import build_multilabel_dataset
from .data.segmentation import build_segmentation_dataset
from .distributed import DistInfo, all_gather_tensors, all_reduce_sum, all_reduce_tensor
from .errors import BioattnError
from .evaluate.accuracy import Accuracy
from .evaluate.multilabel import MultiLabelMeter
from .evaluate.segmentation import SegmentationMeter, fitted_inference
from .models.upernet import segmenter_name
from .protocol import forward_readouts

IGNORE_INDEX = 255


class Task:
    """The task-specific parts of training and evaluation. ``metric`` names the validation
    figure that selects the best checkpoint (higher is better)."""

    name: str = ""
    metric: str = ""
    metric_label: str = ""

    def build_dataset(self, spec: str, split: str, input: dict[str, Any], train: bool,
                      aug: Augmentation | None = None, classes: Sequence[str] | None = None,
                      subset: Sequence[str] | None = None, skip_bad_images: bool = False, cache_dir=None):
        """The ``split`` of data set ``spec`` at the model's ``input`` settings (``img_size``,
        ``mean``, ``std``, ``crop_pct``), augmented by ``aug`` when ``train``. ``classes`` fixes
        the label order; ``subset`` restricts an image folder to some classes."""
        raise NotImplementedError

    def model_name(self, name: str) -> str:
        """The registered model that solves this task with ``name`` as its backbone."""
        return name

    def criterion(self, cfg: TrainConfig, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def meter(self, num_classes: int) -> Any:
        raise NotImplementedError

    def merged(self, meter: Any, info: DistInfo) -> dict[str, Any]:
        """The figures of ``meter`` over every process's share of the data."""
        raise NotImplementedError

    def predict(self, model: nn.Module, images: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The logits of a validation batch, which the task's meter scores."""
        return forward_readouts(model, images).logits

    def train_score(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[Any, Any] | None:
        """(hits, count) of a training batch for the progress bar, or None. Tensors stay on the
        batch's device, so that the trainer sums them without waiting for it."""
        return None

    train_score_label = "acc"

    def summary(self, record: dict[str, Any]) -> str:
        """The validation figures of an epoch record, for the log line."""
        return f"val {self.metric_label} {record[f'val_{self.metric}']:.2f}%"


class Classification(Task):
    name, metric, metric_label = "classification", "top1", "top-1"

    def build_dataset(self, spec, split, input, train, aug=None, classes=None, subset=None,
                      skip_bad_images=False, cache_dir=None):
        return build_dataset(spec, split, input["img_size"], input["mean"], input["std"], train=train,
                             aug=aug if train else None, skip_bad_images=skip_bad_images,
                             crop_pct=None if train else input["crop_pct"], classes=classes,
                             cache_dir=cache_dir, subset=list(subset) if subset is not None else None)

    def criterion(self, cfg, num_classes):
        # deferred: timm's losses load with timm, which the task table does not otherwise need
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        if cfg.mixup > 0 or cfg.cutmix > 0:
            return SoftTargetCrossEntropy()
        if cfg.smoothing > 0:
            return LabelSmoothingCrossEntropy(cfg.smoothing)
        return nn.CrossEntropyLoss()

    def meter(self, num_classes):
        return Accuracy()

    def merged(self, meter, info):
        return Accuracy.from_totals(all_reduce_sum(meter.totals(), info))

    def train_score(self, logits, targets):
        if targets.ndim != 1:  # mixed (soft) targets
            return None
        return (logits.argmax(-1) == targets).sum(), targets.numel()

    def summary(self, record):
        return (f"val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}%")


class Segmentation(Task):
    name, metric, metric_label = "segmentation", "miou", "mIoU"
    train_score_label = "pixel acc"

    def build_dataset(self, spec, split, input, train, aug=None, classes=None, subset=None,
                      skip_bad_images=False, cache_dir=None):
        a = aug or Augmentation()
        return build_segmentation_dataset(
            spec, split, crop=input["img_size"], mean=input["mean"], std=input["std"], train=train,
            scale_jitter=train and a.random_resized_crop, hflip=a.hflip if train else 0.0,
            photometric=train and a.color_jitter > 0, cache_dir=cache_dir)

    def model_name(self, name):
        return segmenter_name(name)

    def criterion(self, cfg, num_classes):
        return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    def meter(self, num_classes):
        return SegmentationMeter(num_classes, ignore_index=IGNORE_INDEX)

    def merged(self, meter, info):
        return SegmentationMeter.from_totals(all_reduce_tensor(meter.totals(), info),
                                             ignore_index=IGNORE_INDEX)

    def predict(self, model, images, num_classes):
        # label maps are validated at their own sizes: a model built for one input size runs on
        # sliding windows of that size, as mmsegmentation tests it
        return fitted_inference(model, images, num_classes)

    def train_score(self, logits, targets):
        valid = targets != IGNORE_INDEX
        return ((logits.argmax(1) == targets) & valid).sum(), valid.sum()

    def summary(self, record):
        return f"val mIoU {record['val_miou']:.2f}%, pixel acc {record['val_pixel_acc']:.2f}%"


class MultiLabel(Task):
    name, metric, metric_label = "multilabel", "map", "mAP"

    def build_dataset(self, spec, split, input, train, aug=None, classes=None, subset=None,
                      skip_bad_images=False, cache_dir=None):
        return build_multilabel_dataset(spec, split, input["img_size"], input["mean"], input["std"],
                                        train=train, aug=aug if train else None, cache_dir=cache_dir)

    def criterion(self, cfg, num_classes):
        return nn.BCEWithLogitsLoss()

    def meter(self, num_classes):
        return MultiLabelMeter(num_classes)

    def merged(self, meter, info):
        return MultiLabelMeter.from_states(all_gather_tensors(list(meter.state()), info)).compute()

    def summary(self, record):
        return f"val mAP {record['val_map']:.2f}%, F1 {record['val_f1_overall']:.2f}%"


_TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Segmentation(), MultiLabel())}
assert tuple(_TASKS) == TASKS


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise BioattnError(f"unknown task '{name}' (choose from {', '.join(TASKS)})") from None

