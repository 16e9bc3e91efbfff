"""What every task provides to the trainer and the evaluator (:class:`Task`), so that a loop reads
the same for every task: its data sets, loss, meter and predictions, and the checks a model and
its settings must pass. The task's torch-free description is its :attr:`Task.spec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Augmentation
from ..distributed import DistInfo
from ..errors import BioattnError
from ..models.inputs import InputConfig
from ..models.upernet import PREFIX as SEGMENTER_PREFIX
from ..models.upernet import UperNetSegmenter
from ..protocol import forward_readouts, unwrap
from .spec import SEGMENTATION, TaskSpec


class Task:
    """The task-specific parts of training and evaluation; :attr:`spec` describes the task (its
    name, metric, suites, the settings it leaves unused...)."""

    spec: TaskSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metric(self) -> str:
        """The validation figure that selects the best checkpoint (higher is better)."""
        return self.spec.metric

    @property
    def metric_label(self) -> str:
        return self.spec.metric_label

    # ---- data, loss, figures ---------------------------------------------------------------
    def build_dataset(self, spec: str, split: str, input: InputConfig, train: bool,
                      aug: Augmentation | None = None, classes: Sequence[str] | None = None,
                      subset: Sequence[str] | None = None, skip_bad_images: bool = False, cache_dir=None):
        """The ``split`` of data set ``spec`` at the model's ``input`` (size, normalisation,
        evaluation crop), augmented by ``aug`` when ``train``. ``classes`` fixes
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
        """(hits, count) of a training batch for the progress bar and the epoch record's
        ``train_<spec.train_score>``, or None. Tensors stay on the batch's device, so that the
        trainer sums them without waiting for it."""
        return None

    def summary(self, record: dict[str, Any]) -> str:
        """The validation figures of an epoch record, for the log line."""
        return f"val {self.metric_label} {record[f'val_{self.metric}']:.2f}%"

    # ---- checks ----------------------------------------------------------------------------
    def check_settings(self, cfg: TrainConfig) -> None:
        """Refuse mixing one-class targets where the task's targets are not one class."""
        if [name for name in ("mixup", "cutmix") if name in self.spec.unused_given(cfg)]:
            raise BioattnError(f"--mixup and --cutmix mix one-class targets; set both to 0 for {self.name}")

    def check_model_name(self, model: str, data: str) -> None:
        """Refuse, before it is built, a model made for another task: a segmenter (per-pixel
        labels) on data without label maps."""
        if model.startswith(SEGMENTER_PREFIX):
            raise BioattnError(f"--model {model} is a segmentation model (per-pixel labels); '{data}' holds "
                               f"{self.name} labels: give a classifier (e.g. {model[len(SEGMENTER_PREFIX):]}), "
                               f"or label-map data ({SEGMENTATION.data_hint()})")

    def owns(self, model: nn.Module) -> bool:
        """Whether ``model`` is built for this task alone (its scores are this task's whatever
        the data)."""
        return False

    def check_model(self, model: nn.Module) -> None:
        """Refuse to score a model built for another task: a segmenter on this task's data."""
        if isinstance(unwrap(model), UperNetSegmenter):
            raise BioattnError(f"a segmentation model cannot be evaluated on {self.name} data")

    def check_batch_norm(self, model: nn.Module, model_name: str, batch_size: int, world_size: int) -> None:
        """Refuse a training batch too small for the model's batch normalisation: statistics over
        one image (over every process's images where the task shares them, SyncBatchNorm)."""
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        together = batch_size * (world_size if self.spec.sync_batchnorm else 1)
        if norms and together < 2:
            raise BioattnError(f"--batch-size {batch_size}: {model_name} has batch normalisation, which needs "
                               "at least 2 images per training batch")
