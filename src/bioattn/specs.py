"""What a data spec names, from its text alone (no file is read, nothing heavy is imported): the
embedded data's option words and the folders a spec reads, which no command may write into.
Which task a spec's labels serve is :func:`bioattn.tasks.task_of_data`.
"""

from __future__ import annotations

# the data sets a spec names by a prefix and their root (voc:ROOT)
NAMED_SETS = ("voc", "ade20k", "cityscapes", "coco")


def embedded_options(spec: str) -> list[str]:
    """The option words of an embedded data spec (``embedded:seg,pair`` -> ``['seg', 'pair']``)."""
    head, _, rest = spec.strip().partition(":")
    if head != "embedded":
        return []
    return [item.strip().partition("=")[0].strip() for item in rest.split(",") if item.strip()]


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
    if sep and head.lower() in NAMED_SETS:
        return [("the data root", rest.strip())]
    return [("the data folder", text)]
