"""ImageNet class lists: the 1000 ImageNet-1k WordNet ids in the standard (sorted) class order,
and the 200-class subsets of ImageNet-A and ImageNet-R.

The lists are read from the class-info files that timm ships (``timm/data/_info``), so they are
the same ones timm's own ImageNet tooling uses. Subset indices refer to the 1000-class order.
"""

from __future__ import annotations

import os
import pkgutil
from functools import cache

from ..errors import BioattnError

NUM_IMAGENET_CLASSES = 1000
_SUBSETS = ("imagenet-a", "imagenet-r")


def _read_info(name: str) -> list[str]:
    data = pkgutil.get_data("timm.data", os.path.join("_info", name))
    if data is None:  # pragma: no cover  (timm always ships these files)
        raise BioattnError(f"timm's class-info file {name} is missing")
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order."""
    wnids = tuple(_read_info("imagenet_synsets.txt"))
    if len(wnids) != NUM_IMAGENET_CLASSES:  # pragma: no cover
        raise BioattnError(f"timm's ImageNet class list has {len(wnids)} entries, not 1000")
    return wnids


@cache
def subset_indices(subset: str) -> tuple[int, ...]:
    """Indices (in the 1000-class order, ascending) of the 200 classes of ``imagenet-a`` or
    ``imagenet-r``."""
    return tuple(imagenet_wnids().index(w) for w in subset_wnids(subset))


@cache
def subset_wnids(subset: str) -> tuple[str, ...]:
    """The 200 WordNet ids of ``imagenet-a`` or ``imagenet-r``, in 1000-class order."""
    key = subset.lower().replace("_", "-")
    if key not in _SUBSETS:
        raise BioattnError(f"unknown ImageNet subset '{subset}' (known: {', '.join(_SUBSETS)})")
    tag = key.split("-")[1]
    wnids = _read_info(f"imagenet_{tag}_synsets.txt")
    indices = [int(i) for i in _read_info(f"imagenet_{tag}_indices.txt")]
    full = imagenet_wnids()
    if len(wnids) != 200 or [full[i] for i in indices] != wnids:  # pragma: no cover
        raise BioattnError(f"timm's {key} class files disagree with the ImageNet class list")
    return tuple(wnids)
