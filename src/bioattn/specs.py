"""Which task a data spec is made for, from its text alone (no file is read, nothing heavy is
imported): the one place the spec prefixes and the embedded data's task words are named.

``voc:ROOT``, ``ade20k:ROOT``, ``cityscapes:ROOT`` and ``embedded:seg[,...]`` hold label maps
(segmentation); ``coco:ROOT`` and ``embedded:multi[,...]`` hold several classes per image
(multilabel); every other spec one class per image (classification). :func:`data_folders` names
the folders a spec reads, which no command may write into.
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


def data_folders(spec: str) -> list[tuple[str, str]]:
    """The folders a data spec reads, as ``(description, path)`` pairs: none for the embedded
    data, the root of ``voc:``, ``ade20k:``, ``cityscapes:`` and ``coco:`` specs and of a domain
    spec (``domains:...,root=ROOT``, the root last), else the image folder itself."""
    text = spec.strip()
    head, sep, rest = text.partition(":")
    if head == "embedded":
        return []
    if head == "domains" and sep:
        root = rest[len("root="):] if rest.startswith("root=") else rest.partition(",root=")[2]
        return [] if not root or root.partition(":")[0] == "embedded" else [("the data root", root)]
    if sep and head.lower() in (*SEGMENTATION_SETS, *MULTILABEL_SETS):
        return [("the data root", rest.strip())]
    return [("the data folder", text)]
