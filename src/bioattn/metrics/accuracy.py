"""Top-1 / top-5 accuracy and mean cross-entropy, accumulated over batches: the one counter that
training's validation and every evaluation suite use."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def restrict_logits(logits: torch.Tensor, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The columns of ``logits`` ``(B, K)`` that belong to a class subset."""
    idx = torch.as_tensor(indices, device=logits.device, dtype=torch.long)
    return logits.index_select(1, idx)


def topk_predictions(logits: torch.Tensor, k: int,
                     indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Top-``k`` class indices per row; with ``indices`` only those classes compete (the
    results stay in the full label space)."""
    if indices is None:
        return logits.topk(min(k, logits.shape[1]), dim=1).indices
    idx = torch.as_tensor(indices, device=logits.device, dtype=torch.long)
    return idx[restrict_logits(logits, idx).topk(min(k, len(idx)), dim=1).indices]


class Accuracy:
    """Counts correct top-1 and top-5 predictions, the summed cross-entropy and, for models with
    several readouts, the correct top-1 predictions of each readout.

    ``update(logits, targets)`` takes final logits ``(B, K)``; ``readout_logits`` ``(T, B, K)``
    adds per-readout counts; ``classes`` restricts the arg-max to a subset of the logits (the
    200-class ImageNet-A/R benchmarks) while targets stay in the full label space.
    """

    def __init__(self, classes: Sequence[int] | None = None, with_loss: bool = True) -> None:
        self.classes = None if classes is None else torch.as_tensor(list(classes), dtype=torch.long)
        self.with_loss = with_loss and classes is None
        self.correct1 = 0
        self.correct5 = 0
        self.loss_sum = 0.0
        self.n = 0
        self.readout_correct: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor,
               readout_logits: torch.Tensor | None = None) -> None:
        logits = logits.float()
        if self.with_loss:
            self.loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        hits = topk_predictions(logits, 5, self.classes).eq(targets[:, None])
        self.correct1 += int(hits[:, 0].sum())
        self.correct5 += int(hits.any(dim=1).sum())
        self.n += int(targets.shape[0])
        if readout_logits is not None and readout_logits.shape[0] > 1:
            per = (readout_logits.argmax(-1) == targets[None]).sum(dim=1).cpu()
            self.readout_correct = per if self.readout_correct is None else self.readout_correct + per

    def totals(self) -> list[float]:
        """``[correct1, correct5, loss_sum, n]``: what to sum over processes."""
        return [float(self.correct1), float(self.correct5), self.loss_sum, float(self.n)]

    @staticmethod
    def from_totals(totals: Sequence[float], with_loss: bool = True) -> dict[str, float]:
        correct1, correct5, loss_sum, n = totals
        if n == 0:
            out = {"top1": float("nan"), "top5": float("nan"), "n": 0}
        else:
            out = {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "n": int(n)}
        if with_loss:
            out["loss"] = loss_sum / n if n else float("nan")
        return out

    def result(self) -> dict:
        """``top1``, ``top5`` (percent), ``n``, ``loss`` (mean cross-entropy, without a class
        subset) and ``per_readout_top1`` for models with several readouts."""
        out = self.from_totals(self.totals(), self.with_loss)
        if self.readout_correct is not None and self.n:
            out["per_readout_top1"] = [100.0 * c / self.n for c in self.readout_correct.tolist()]
        return out
