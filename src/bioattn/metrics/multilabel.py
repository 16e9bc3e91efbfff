"""Multi-label classification scores (COCO, ``embedded:multi``).

:class:`MultiLabelMeter` keeps every image's logits and multi-hot targets, and computes from
them, for ``K`` classes and sigmoid scores ``p = sigmoid(logit)``:

* ``map``: mean average precision, in %, over the classes with at least one positive image.
  A class's AP is the area under its precision-recall curve as a step function,
  ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (scikit-learn's
  ``average_precision_score``, torchmetrics' ``MultilabelAveragePrecision``): with distinct
  scores, the mean over the class's positive images of the precision among the images ranked
  at or above it. ``per_class_ap`` lists every class's AP in % (NaN without a positive).
* At threshold 0.5 (an image is predicted positive for a class when ``p > 0.5``), with TP, FP
  and FN counted per class ``k``: the per-class precision ``P_k = TP_k / (TP_k + FP_k)`` and
  recall ``R_k = TP_k / (TP_k + FN_k)`` (0 when the denominator is 0) and the scores of the
  multi-label literature, in %:

  - ``cp``, ``cr``: the means of ``P_k`` and ``R_k`` over the classes with a positive image;
    ``cf1 = 2 cp cr / (cp + cr)`` (CF1: the harmonic mean of the means);
  - ``f1_per_class_mean``: the mean over the same classes of each class's own F1,
    ``2 P_k R_k / (P_k + R_k)``;
  - ``op``, ``or``: precision and recall of the counts summed over all classes, and
    ``f1_overall = 2 op or / (op + or)`` (OF1, micro-averaged F1).
* ``loss``: the mean binary cross-entropy with logits over all images and classes.

Processes each hold a meter; :meth:`MultiLabelMeter.state` gives the tensors to gather and
:meth:`MultiLabelMeter.from_states` (or :meth:`MultiLabelMeter.sync`) joins them.

:func:`label_frequency_map` is the baseline that knows only how frequent each class is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import BioattnError

__all__ = ["MultiLabelMeter", "label_frequency_map"]


def _check_pair(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> None:
    if logits.ndim != 2 or targets.shape != logits.shape:
        raise BioattnError(f"multi-label scores need logits and targets of the same shape (B, K), got "
                           f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise BioattnError(f"expected {num_classes} classes, got logits of shape {tuple(logits.shape)}")
    _check_multi_hot(targets)


def _check_multi_hot(targets: torch.Tensor) -> None:
    if targets.numel() and not ((targets == 0) | (targets == 1)).all():
        raise BioattnError("multi-label targets must be multi-hot (every value 0 or 1)")


def _average_precisions(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AP (as a fraction) of every class (N, K) -> (K,), NaN for classes without a positive."""
    # deferred: torchmetrics loads in about a second; only multi-label scores need it
    from torchmetrics.functional.classification import multilabel_average_precision

    out = torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    positive = targets.sum(dim=0) > 0
    cols = positive.nonzero().flatten()
    if len(cols):
        ap = multilabel_average_precision(scores[:, cols], targets[:, cols].long(), num_labels=len(cols),
                                          average="none")
        out[cols] = ap.double()
    return out


def _percent(value: float) -> float:
    return 100.0 * float(value)


class MultiLabelMeter:
    """Accumulates logits ``(B, K)`` and multi-hot targets ``(B, K)`` over batches and computes
    the multi-label scores defined in the module's notes (:meth:`compute`)."""

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise BioattnError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``logits`` (B, K) before the sigmoid, ``targets`` (B, K) of 0 and 1."""
        _check_pair(logits, targets, self.num_classes)
        self._logits.append(logits.detach().float().cpu())
        self._targets.append(targets.detach().float().cpu())

    def __len__(self) -> int:
        return sum(len(t) for t in self._targets)

    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, targets)``, both float32 (N, K) on the CPU: what to gather over processes."""
        if not self._logits:
            empty = torch.zeros(0, self.num_classes)
            return empty, empty.clone()
        if len(self._logits) > 1:   # keep one piece, so repeated calls do not copy again
            self._logits, self._targets = [torch.cat(self._logits)], [torch.cat(self._targets)]
        return self._logits[0], self._targets[0]

    @classmethod
    def from_states(cls, states: Sequence[tuple[torch.Tensor, torch.Tensor]],
                    num_classes: int | None = None) -> MultiLabelMeter:
        """One meter holding every image of ``states`` (e.g. each process's :meth:`state`)."""
        states = list(states)
        if num_classes is None:
            if not states:
                raise BioattnError("from_states needs at least one state or num_classes")
            num_classes = int(states[0][0].shape[1])
        meter = cls(num_classes)
        for logits, targets in states:
            if len(logits):
                meter.update(logits, targets)
        return meter

    def sync(self, gather: Callable[[tuple[torch.Tensor, torch.Tensor]], Sequence[tuple[torch.Tensor, torch.Tensor]]]
             ) -> MultiLabelMeter:
        """A meter over every process's images: ``gather`` maps this process's :meth:`state` to
        the list of all processes' states (e.g. with ``torch.distributed.all_gather_object``)."""
        return self.from_states(gather(self.state()), self.num_classes)

    @torch.no_grad()
    def compute(self) -> dict:
        """``map``, ``per_class_ap``, ``cp``, ``cr``, ``cf1``, ``f1_per_class_mean``, ``op``,
        ``or``, ``f1_overall`` (all in %), ``loss``, ``n`` (images) and ``n_scored_classes``
        (classes with a positive image, over which the class means run)."""
        # deferred: torchmetrics loads in about a second; only multi-label scores need it
        from torchmetrics.functional.classification import (
            multilabel_f1_score,
            multilabel_precision,
            multilabel_recall,
        )

        logits, targets = self.state()
        n, k = logits.shape
        nan = float("nan")
        if n == 0:
            return {"map": nan, "per_class_ap": [nan] * k, "cp": nan, "cr": nan, "cf1": nan,
                    "f1_per_class_mean": nan, "op": nan, "or": nan, "f1_overall": nan, "loss": nan,
                    "n": 0, "n_scored_classes": 0}
        scores = torch.sigmoid(logits.double())      # double: fewer ties among saturated scores
        ap = _average_precisions(scores, targets)
        scored = targets.sum(dim=0) > 0
        labels = targets.long()
        common = dict(num_labels=k, threshold=0.5)
        precision = multilabel_precision(scores, labels, average="none", **common).double()
        recall = multilabel_recall(scores, labels, average="none", **common).double()
        f1 = multilabel_f1_score(scores, labels, average="none", **common).double()
        op = multilabel_precision(scores, labels, average="micro", **common).item()
        orec = multilabel_recall(scores, labels, average="micro", **common).item()
        if scored.any():
            cp, cr = precision[scored].mean().item(), recall[scored].mean().item()
            cf1 = 2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0
            f1_mean = f1[scored].mean().item()
            mean_ap = ap[scored].mean().item()
        else:
            cp = cr = cf1 = f1_mean = mean_ap = nan
        return {
            "map": _percent(mean_ap),
            "per_class_ap": [_percent(v) for v in ap.tolist()],
            "cp": _percent(cp),
            "cr": _percent(cr),
            "cf1": _percent(cf1),
            "f1_per_class_mean": _percent(f1_mean),
            "op": _percent(op),
            "or": _percent(orec),
            "f1_overall": _percent(multilabel_f1_score(scores, labels, average="micro", **common).item()),
            "loss": F.binary_cross_entropy_with_logits(logits, targets).item(),
            "n": int(n),
            "n_scored_classes": int(scored.sum()),
        }


def label_frequency_map(targets: torch.Tensor) -> float:
    """mAP (%) of the baseline that scores every image with the class frequencies of
    ``targets`` (N, K): a class's score is the same for all images, so its AP is its prevalence
    (the share of its positive images), and the baseline's mAP is the mean prevalence of the
    classes with a positive image. (Frequencies measured on other data, e.g. the training set,
    give the same ranking, hence the same mAP.)"""
    targets = torch.as_tensor(targets).float()
    if targets.ndim != 2 or len(targets) == 0:
        raise BioattnError(f"targets must be (N, K) with N >= 1, got {tuple(targets.shape)}")
    _check_multi_hot(targets)
    scores = targets.double().mean(dim=0, keepdim=True).expand_as(targets).contiguous()
    ap = _average_precisions(scores, targets)
    scored = ~torch.isnan(ap)
    return _percent(ap[scored].mean().item()) if scored.any() else float("nan")
