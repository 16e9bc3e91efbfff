"""Subsets of a data set, chosen the same way for training, validation and evaluation."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import BioattnError


def spread_indices(total: int, limit: int | None) -> list[int]:
    """``limit`` indices out of ``range(total)``, spread evenly (all of them without a limit)."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit <= 0:
        raise BioattnError(f"limit must be positive, got {limit}")
    return np.unique(np.linspace(0, total - 1, num=limit).round().astype(int)).tolist()


def spread_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """At most ``limit`` items of ``dataset``, spread evenly over it.

    Class folders are read in sorted order, so the first items would all share one class; evenly
    spread indices keep every class. The choice is deterministic, and the subset keeps the data
    set's ``classes`` / ``num_classes``.
    """
    if limit is None or limit >= len(dataset):
        return dataset
    subset = Subset(dataset, spread_indices(len(dataset), limit))
    for attr in ("classes", "num_classes"):
        if hasattr(dataset, attr):
            setattr(subset, attr, getattr(dataset, attr))
    return subset


def base_dataset(dataset: Dataset) -> Dataset:
    """The data set under any ``Subset`` and wrapper (``.base``) layers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    while hasattr(dataset, "base"):
        dataset = dataset.base
    return dataset
