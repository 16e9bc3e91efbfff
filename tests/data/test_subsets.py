"""One subset semantics for every limit: images spread evenly over the data set."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from bioattn.data.subsets import base_dataset, spread_indices, spread_subset
from bioattn.errors import BioattnError


def test_spread_indices_cover_the_whole_range():
    assert spread_indices(10, 3) == [0, 4, 9]  # 0, 4.5 (rounded to even), 9
    assert spread_indices(6, 3) == [0, 2, 5]
    assert spread_indices(4, None) == [0, 1, 2, 3]
    assert spread_indices(4, 10) == [0, 1, 2, 3]
    with pytest.raises(BioattnError, match="limit must be positive"):
        spread_indices(4, 0)


def test_spread_subset_keeps_every_class_of_a_sorted_folder():
    labels = torch.arange(5).repeat_interleave(20)  # class folders are read in sorted order
    data = TensorDataset(torch.zeros(100, 1), labels)
    data.classes = [str(c) for c in range(5)]
    subset = spread_subset(data, 10)
    assert len(subset) == 10 and subset.classes == data.classes
    assert sorted({int(subset[i][1]) for i in range(len(subset))}) == [0, 1, 2, 3, 4]
    assert base_dataset(subset) is data
    assert spread_subset(data, None) is data
