"""Clean accuracy: top-1, top-5 and loss over a data loader."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..protocol import forward_readouts


@torch.no_grad()
def evaluate_clean(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    progress=None,
    steps: int | None = None,
) -> dict:
    """Top-1/top-5 accuracy (percent) and mean cross-entropy of ``model`` on ``loader``.

    Multi-step models are scored on their final prediction; ``per_step_top1`` lists the
    accuracy of every step; ``steps`` sets how many steps they run (default: their own).
    ``progress(n_done)`` is called after each batch if given.
    """
    model.eval()
    device = torch.device(device)
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    step_correct: torch.Tensor | None = None
    for images, targets in loader:
        if limit is not None and seen >= limit:
            break
        if limit is not None:
            images, targets = images[: limit - seen], targets[: limit - seen]
        images, targets = images.to(device), targets.to(device)
        out = forward_readouts(model, images, steps=steps)
        logits = out.logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(targets[:, None])
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        readout_logits = out.all_readouts()
        per_step = (readout_logits.argmax(-1) == targets[None]).sum(dim=1).cpu()
        step_correct = per_step if step_correct is None else step_correct + per_step
        seen += targets.shape[0]
        if progress is not None:
            progress(targets.shape[0])
    if seen == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "n": 0}
    result = {
        "top1": 100.0 * correct1 / seen,
        "top5": 100.0 * correct5 / seen,
        "loss": loss_sum / seen,
        "n": seen,
    }
    if step_correct is not None and step_correct.numel() > 1:
        result["per_step_top1"] = [100.0 * c / seen for c in step_correct.tolist()]
    return result
