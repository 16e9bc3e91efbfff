"""Classification: one class per image (image folders, domain specs, the embedded data);
cross-entropy (soft targets with mixup/cutmix, label smoothing); top-1 and top-5
(:class:`bioattn.metrics.Accuracy`)."""

from __future__ import annotations

from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from ..data import build_dataset
from ..distributed import all_reduce_sum
from ..metrics.accuracy import Accuracy
from .base import Task
from .spec import CLASSIFICATION


class Classification(Task):
    spec = CLASSIFICATION

    def build_dataset(self, spec, split, input, train, aug=None, classes=None, subset=None,
                      skip_bad_images=False, cache_dir=None):
        return build_dataset(spec, split, input.img_size, input.mean, input.std, train=train,
                             aug=aug if train else None, skip_bad_images=skip_bad_images,
                             crop_pct=None if train else input.crop_pct, classes=classes,
                             cache_dir=cache_dir, subset=list(subset) if subset is not None else None)

    def criterion(self, cfg, num_classes):
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
        return f"val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}%"
