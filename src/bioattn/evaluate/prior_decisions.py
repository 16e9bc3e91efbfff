"""Whether a class prior steers a classifier's decision, and whether it needs the object to do so.

On two-object images (``embedded:pair``) each image is classified under the prior of each
object's class in turn (the share of prompts whose prediction is the prompted class), and, as
the control, under the prior of a class that neither object has (the share predicting that
absent class). A model whose prior selects the prompted object follows the first and not the
second: with the object missing there is nothing to select. A model that adds the prompted
class to its output, whatever the image holds, follows both. The steering benchmark
(:mod:`bioattn.evaluate.steering`) asks the same of the attention map; this asks it of the
decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.subsets import spread_indices
from ..errors import BioattnError
from ..protocol import evaluating, unwrap
from .steering import check_classes, check_pairs, check_steerable


def absent_classes(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each image's two labels ``(B, 2)``, a class drawn uniformly from those it does not hold."""
    out = []
    for a, b in labels.tolist():
        others = [c for c in range(num_classes) if c not in (a, b)]
        out.append(others[int(torch.randint(len(others), (1,), generator=generator))])
    return torch.tensor(out, dtype=torch.long)


def _predict(model: nn.Module, x: torch.Tensor, prior: torch.Tensor | None, prior_scale: float) -> torch.Tensor:
    """The predicted class of each image, under ``prior`` (class indices) or the model's own prompt."""
    logits = model(x) if prior is None else model(x, prior=prior.to(x.device), prior_scale=prior_scale)
    if logits.ndim != 2:
        raise BioattnError("prior decisions score classifiers (logits of shape (B, classes))")
    return logits.argmax(dim=1).cpu()


def _on_either(pred: torch.Tensor, labels: torch.Tensor) -> int:
    return int(((pred == labels[:, 0]) | (pred == labels[:, 1])).sum())


@torch.no_grad()
def prior_decisions(model: nn.Module, pairs, *, prior_scale: float = 1.0, limit: int | None = None,
                    batch_size: int = 100, seed: int = 0, device: torch.device | str | None = None
                    ) -> dict[str, Any]:
    """Percentages over ``limit`` images of ``pairs`` (spread evenly; all by default), each
    prompt scored once: ``prompted`` (prediction = the prompted object's class, over both
    objects' prompts), ``either_when_prompted`` (= either object's class), ``absent`` (under the
    prior of a class neither object has, drawn with ``seed``: prediction = that class),
    ``either_when_absent`` and ``either_without_prior`` (the model's own prompt); with
    ``n_images`` and ``prior_scale``. The model is a classifier taking ``prior=`` class indices
    (AbSViT); its classes must be the pairs' labels."""
    labels_all, _ = check_pairs(pairs)
    inner = unwrap(check_steerable(model))
    check_classes(model, pairs)
    num_classes = getattr(inner, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes < 3:
        raise BioattnError("the absent-class control needs a classifier of at least 3 classes")
    if batch_size < 1:
        raise BioattnError(f"batch_size must be at least 1, got {batch_size}")
    indices = spread_indices(len(pairs), limit)
    if not indices:
        raise BioattnError("prior decisions need at least one image")
    device = torch.device(device) if device is not None else next(inner.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    counts = dict.fromkeys(("prompted", "either_when_prompted", "absent", "either_when_absent",
                            "either_without_prior"), 0)
    with evaluating(inner):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            x = torch.stack([pairs[i][0] for i in chunk]).to(device)
            y = torch.as_tensor(np.asarray(labels_all[chunk]), dtype=torch.long)
            absent = absent_classes(y, num_classes, generator)

            for k in (0, 1):
                pred = _predict(inner, x, y[:, k], prior_scale)
                counts["prompted"] += int((pred == y[:, k]).sum())
                counts["either_when_prompted"] += _on_either(pred, y)
            pred = _predict(inner, x, absent, prior_scale)
            counts["absent"] += int((pred == absent).sum())
            counts["either_when_absent"] += _on_either(pred, y)
            counts["either_without_prior"] += _on_either(_predict(inner, x, None, prior_scale), y)
    n = len(indices)
    prompts = {"prompted": 2 * n, "either_when_prompted": 2 * n}
    return {**{k: 100.0 * v / prompts.get(k, n) for k, v in counts.items()}, "n_images": n,
            "prior_scale": float(prior_scale)}
