"""Multi-label classification: a set of classes per image (COCO, ``embedded:multi``), as
multi-hot targets; binary cross-entropy; mean average precision and F1
(:class:`bioattn.metrics.MultiLabelMeter`)."""

from __future__ import annotations

from torch import nn

from ..data import build_dataset
from ..distributed import all_gather_tensors
from ..metrics.multilabel import MultiLabelMeter
from .base import Task
from .spec import MULTILABEL


class MultiLabel(Task):
    spec = MULTILABEL

    def build_dataset(self, spec, split, input, train, aug=None, classes=None, subset=None,
                      skip_bad_images=False, cache_dir=None):
        return build_dataset(spec, split, input.img_size, input.mean, input.std, train=train,
                             aug=aug if train else None, cache_dir=cache_dir)

    def criterion(self, cfg, num_classes):
        return nn.BCEWithLogitsLoss()

    def meter(self, num_classes):
        return MultiLabelMeter(num_classes)

    def merged(self, meter, info):
        return MultiLabelMeter.from_states(all_gather_tensors(list(meter.state()), info)).compute()

    def summary(self, record):
        return f"val mAP {record['val_map']:.2f}%, F1 {record['val_f1_overall']:.2f}%"
