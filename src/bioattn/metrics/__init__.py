"""The meters that score predictions, one per task: top-1/top-5 accuracy of one class per image
(:class:`Accuracy`), mIoU of label maps (:class:`SegmentationMeter`), mean average precision and
F1 of label sets (:class:`MultiLabelMeter`). Each accumulates batches and gives what to sum or
gather over processes; none knows of models, data sets or the rest of bioattn (only
:mod:`bioattn.errors`), so that the tasks, the trainer and the evaluation suites share them.
"""

from __future__ import annotations

from .accuracy import Accuracy, restrict_logits, topk_predictions
from .multilabel import MultiLabelMeter, label_frequency_map
from .segmentation import IGNORE_INDEX, SegmentationMeter, segmentation_figures

__all__ = ["IGNORE_INDEX", "Accuracy", "MultiLabelMeter", "SegmentationMeter", "label_frequency_map",
           "restrict_logits", "segmentation_figures", "topk_predictions"]
