"""What each task is, without torch: the data that holds its labels, its figures and suites, the
training settings it leaves unused and the recipe it picks. The settings (:mod:`bioattn.config`)
read these; the per-task modules of this package add the data sets, loss and meters.

Which task a data spec is made for is decided from its text alone: ``voc:ROOT``,
``ade20k:ROOT``, ``cityscapes:ROOT`` and ``embedded:seg[,...]`` hold label maps
(segmentation); ``coco:ROOT`` and ``embedded:multi[,...]`` several classes per image
(multilabel); every other spec one class per image (classification).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BioattnError
from ..specs import embedded_options


@dataclass(frozen=True)
class TaskSpec:
    """The torch-free description of one task.

    ``data_sets``: the data-spec prefixes (``voc:ROOT``) whose labels are this task's;
    ``embedded_option``: the embedded data's option word that makes its labels this task's
    (``embedded:seg``); ``metric``: the validation figure that selects the best checkpoint
    (higher is better), shown as ``metric_label``; ``suites``: the evaluation suites that score
    this task's models (None: every suite); ``train_score``: the figure of the training batches
    in the epoch record (``train_<train_score>``; None: none), shown as ``train_score_label``;
    ``unused_settings``: training settings with no meaning for this task (refused when chosen,
    off when a recipe would set them); ``recipe``: the recipe of its data sets other than the
    embedded data; ``steering_data``: the two-object data its steering suite reads;
    ``image_folders``: whether its data may be an image folder of class folders (class lists,
    decoding on the GPU, prefetching 8-bit images); ``per_pixel``: whether its models predict
    maps, from whole images or sliding windows (the evaluation's ``--inference``);
    ``sync_batchnorm``: whether a distributed run shares batch statistics over every process.
    """

    name: str
    labels: str
    metric: str
    metric_label: str
    data_sets: tuple[str, ...] = ()
    embedded_option: str | None = None
    suites: tuple[str, ...] | None = None
    train_score: str | None = None
    train_score_label: str = ""
    unused_settings: tuple[str, ...] = ()
    recipe: str = "deit"
    steering_data: str | None = None
    image_folders: bool = False
    per_pixel: bool = False
    sync_batchnorm: bool = False

    def holds(self, spec: str) -> bool:
        """Whether data spec ``spec`` holds this task's labels (named by a prefix or the embedded
        data's option word)."""
        head, sep, _ = spec.strip().partition(":")
        if sep and head.lower() in self.data_sets:
            return True
        return self.embedded_option is not None and self.embedded_option in embedded_options(spec)

    def data_hint(self) -> str:
        """The data specs that hold this task's labels, for messages."""
        return ", ".join([f"{prefix}:ROOT" for prefix in self.data_sets]
                         + ([f"embedded:{self.embedded_option}"] if self.embedded_option else []))

    def unused_given(self, settings: object) -> list[str]:
        """The names of :attr:`unused_settings` that ``settings`` turns on (RandAugment ``aa``
        is off as None or ``none``; every other one as 0 or None)."""
        given = []
        for name in self.unused_settings:
            value = getattr(settings, name)
            if (value is not None and str(value).lower() != "none") if name == "aa" else value:
                given.append(name)
        return given


CLASSIFICATION = TaskSpec(
    name="classification", labels="one class per image", metric="top1", metric_label="top-1",
    train_score="top1", train_score_label="acc", steering_data="embedded:pair", image_folders=True,
)
SEGMENTATION = TaskSpec(
    name="segmentation", labels="one class per pixel (label maps)", metric="miou", metric_label="mIoU",
    data_sets=("voc", "ade20k", "cityscapes"), embedded_option="seg",
    suites=("clean", "corruptions", "steering"), train_score="pixel_acc", train_score_label="pixel acc",
    # mixing and smoothing act on one-class targets; RandAugment and random erasing, on images
    # alone, would part an image from its label map
    unused_settings=("mixup", "cutmix", "smoothing", "aa", "reprob"), recipe="upernet",
    steering_data="embedded:seg,pair", per_pixel=True, sync_batchnorm=True,
)
MULTILABEL = TaskSpec(
    name="multilabel", labels="several classes per image", metric="map", metric_label="mAP",
    data_sets=("coco",), embedded_option="multi", suites=("clean", "glimpses"),
    unused_settings=("mixup", "cutmix", "smoothing"),
)

# the task of data that no other task claims
DEFAULT = CLASSIFICATION
TASK_SPECS: dict[str, TaskSpec] = {spec.name: spec for spec in (CLASSIFICATION, SEGMENTATION, MULTILABEL)}
TASKS = tuple(TASK_SPECS)


def task_spec(name: str) -> TaskSpec:
    try:
        return TASK_SPECS[name]
    except KeyError:
        raise BioattnError(f"unknown task '{name}' (choose from {', '.join(TASKS)})") from None


def task_of_data(spec: str) -> str:
    """The task a data spec is made for (see the module's notes)."""
    return next((t.name for t in TASK_SPECS.values() if t.holds(spec)), DEFAULT.name)


def resolve_task(task: str, data: str) -> str:
    """``task`` itself, or the data's task for ``auto``; a task the data cannot serve is refused."""
    found = task_of_data(data)
    if task not in ("auto", found):
        hints = "; ".join(f"{t.name}: {t.data_hint()}" for t in TASK_SPECS.values() if t.data_hint())
        raise BioattnError(f"--task {task} needs {task} data; '{data}' holds {found} labels ({hints})")
    return found
