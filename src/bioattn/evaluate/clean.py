"""Clean accuracy: top-1, top-5 and loss over a data loader."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..metrics.accuracy import Accuracy
from ..protocol import forward_readouts


@torch.no_grad()
def evaluate_clean(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    progress=None,
    readouts: int | None = None,
) -> dict:
    """Top-1/top-5 accuracy (percent) and mean cross-entropy of ``model`` on ``loader``.

    Models with several readouts (passes, glimpses) are scored on their final one;
    ``per_readout_top1`` lists the accuracy of every readout; ``readouts`` sets how many they
    run (default: their own). ``progress(n_done)`` is called after each batch if given.
    """
    model.eval()
    device = torch.device(device)
    accuracy = Accuracy()
    for images, targets in loader:
        if limit is not None and accuracy.n >= limit:
            break
        if limit is not None:
            images, targets = images[: limit - accuracy.n], targets[: limit - accuracy.n]
        images, targets = images.to(device), targets.to(device)
        out = forward_readouts(model, images, readouts)
        accuracy.update(out.logits, targets, out.all_readouts())
        if progress is not None:
            progress(targets.shape[0])
    return accuracy.result()
