"""Prior decisions on constructed models: a model that adds the prompted class to its output
follows an absent class too; a model that selects the prompted object does not."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bioattn.errors import BioattnError
from bioattn.evaluate.prior_decisions import absent_classes, prior_decisions

CLASSES = 6


class _Pairs:
    """Two-object images whose first two pixels hold the objects' classes."""

    def __init__(self, labels):
        self.arrays = SimpleNamespace(labels=np.asarray(labels), masks=np.zeros((len(labels), 2, 4, 4)))
        self.classes = [str(c) for c in range(CLASSES)]

    def __len__(self):
        return len(self.arrays.labels)

    def __getitem__(self, i):
        x = torch.zeros(3, 4, 4)
        x[0, 0, 0], x[0, 0, 1] = (float(c) for c in self.arrays.labels[i])
        return x, int(self.arrays.labels[i][0])


class _Steerable(nn.Module):
    num_classes = CLASSES

    def __init__(self, selects: bool):
        super().__init__()
        self.selects = selects
        self.weight = nn.Parameter(torch.zeros(1))

    def top_down_maps(self, x, priors, prior_scale=1.0):
        return [torch.zeros(x.shape[0], 2, 2) for _ in priors]

    def forward(self, x, prior=None, prior_scale=1.0):
        held = x[:, 0, 0, :2].long()  # (B, 2): the image's two classes
        if prior is None:
            chosen = held[:, 0]
        elif self.selects:  # the prompted object if the image holds it, else the salient one
            chosen = torch.where((held == prior[:, None]).any(dim=1), prior, held[:, 0])
        else:  # the prompted class, whatever the image holds
            chosen = prior
        return nn.functional.one_hot(chosen, CLASSES).float()


LABELS = [[0, 1], [2, 3], [4, 5], [1, 4], [3, 0]]


def test_a_model_that_adds_the_class_follows_an_absent_one_and_one_that_selects_does_not():
    adds = prior_decisions(_Steerable(selects=False), _Pairs(LABELS), batch_size=2)
    selects = prior_decisions(_Steerable(selects=True), _Pairs(LABELS), batch_size=2)
    for r in (adds, selects):
        assert r["prompted"] == 100.0 and r["either_when_prompted"] == 100.0 and r["n_images"] == 5
        assert r["either_without_prior"] == 100.0
    assert adds["absent"] == 100.0 and adds["either_when_absent"] == 0.0
    assert selects["absent"] == 0.0 and selects["either_when_absent"] == 100.0


def test_absent_classes_are_never_an_objects_and_cover_the_others():
    labels = torch.tensor([[0, 1]] * 400)
    drawn = absent_classes(labels, CLASSES, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {2, 3, 4, 5}


def test_refuses_single_object_data_and_too_few_classes():
    with pytest.raises(BioattnError, match="two-object images"):
        prior_decisions(_Steerable(True), torch.utils.data.TensorDataset(torch.zeros(2, 3, 4, 4)))
    model = _Steerable(True)
    model.num_classes = 2
    pairs = _Pairs([[0, 1]])
    pairs.classes = ["0", "1"]
    with pytest.raises(BioattnError, match="at least 3 classes"):
        prior_decisions(model, pairs)
