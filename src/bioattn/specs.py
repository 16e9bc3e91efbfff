"""Which task a data spec is made for, from its text alone (no file is read, nothing heavy is
imported): the one place the spec prefixes and the embedded data's task words are named.

``voc:ROOT``, ``ade20k:ROOT``, ``cityscapes:ROOT`` and ``embedded:seg[,...]`` hold label maps
(segmentation); ``coco:ROOT`` and ``embedded:multi[,...]`` hold several classes per image
(multilabel); every other spec one class per image (classification).
"""

from __future__ import annotations

# What a model learns from a data set: one class per image, one class per pixel, or a set of
# classes per image. ``bioattn.tasks`` holds what differs between them (data, loss, metrics).
TASKS = ("classification", "segmentation", "multilabel")
SEGMENTATION_SETS = ("voc", "ade20k", "cityscapes")
MULTILABEL_SETS = ("coco",)


def embedded_options(spec: str) -> list[str]:
    """The option words of an embedded data spec (``embedded:seg,pair`` -> ``['seg', 'pair']``)."""
    head, _, rest = spec.strip().partition(":")
    if head != "embedded":
        return []
    return [item.strip().partition("=")[0].strip() for item in rest.split(",") if item.strip()]


def task_of_data(spec: str) -> str:
    """The task a data spec is made for: ``voc:``, ``ade20k:``, ``cityscapes:`` and
    ``embedded:seg`` hold label maps (segmentation); ``coco:`` and ``embedded:multi`` hold
    several classes per image (multilabel); everything else one class per image."""
    head, sep, _ = spec.strip().partition(":")
    prefix = head.lower() if sep else ""
    options = embedded_options(spec)
    if prefix in SEGMENTATION_SETS or "seg" in options:
        return "segmentation"
    if prefix in MULTILABEL_SETS or "multi" in options:
        return "multilabel"
    return "classification"
