"""The model protocol's helpers that every evaluation shares."""

from __future__ import annotations

import pytest
from torch import nn

from bioattn.protocol import evaluating


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluating_restores_the_models_mode_also_after_an_error(was_training):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train(was_training)
    with evaluating(model) as inside:
        assert inside is model and not model.training and not model[1].training
    assert model.training == was_training and model[1].training == was_training
    with pytest.raises(RuntimeError), evaluating(model):
        raise RuntimeError("interrupted")
    assert model.training == was_training and model[1].training == was_training
    with evaluating(None) as nothing:
        assert nothing is None
