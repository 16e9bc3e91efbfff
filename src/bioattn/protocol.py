"""The small protocol that models with several outputs share with the trainer, the evaluator
and the attacks.

Plain models return logits ``(B, K)`` from ``model(x)`` in every mode and need nothing else.

Models that compute several predictions (AbSViT's two passes, one prediction per glimpse of a
glimpse model) or an auxiliary loss follow three rules:

* ``model(x)`` in eval mode returns the final logits ``(B, K)``, so the model drops into any
  code that expects a classifier (timm's validation loop, torchattacks).
* ``model(x)`` in train mode returns a :class:`ModelOutput`: ``logits`` (the final prediction),
  ``readout_logits`` ``(T, B, K)`` (every pass or glimpse, the last one equal to ``logits``), and an
  optional ``aux_loss`` to add to the objective (AbSViT's variational loss).
* ``model.forward_readouts(x, steps=None)`` returns a :class:`ModelOutput` in any mode; evaluation
  and attacks use it to read or target the prediction at a chosen step.

A model that needs its own objective (e.g. a policy-gradient term that depends on the target)
defines ``model.compute_loss(output, target, criterion) -> Tensor``; otherwise
:func:`compute_loss` averages ``criterion`` over the steps and adds ``aux_loss``.

Modules that must act between optimiser steps (VARS-S refreshes its ISTA step size) define
``after_train_step(global_step)``; the trainer calls it on every submodule through
:func:`after_train_step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class ModelOutput:
    """Outputs of a model with several predictions per input."""

    logits: torch.Tensor
    readout_logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    extras: dict | None = None

    def all_readouts(self) -> torch.Tensor:
        """Per-step logits ``(T, B, K)``; a single-step output gives ``T = 1``."""
        if self.readout_logits is None:
            return self.logits.unsqueeze(0)
        return self.readout_logits


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / EMA / compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def final_logits(output: torch.Tensor | ModelOutput) -> torch.Tensor:
    """The final prediction of any model output."""
    return output.logits if isinstance(output, ModelOutput) else output


def compute_loss(
    model: nn.Module,
    output: torch.Tensor | ModelOutput,
    target: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The training objective for ``output`` of ``model`` against ``target``."""
    if not isinstance(output, ModelOutput):
        return criterion(output, target)
    custom = getattr(unwrap(model), "compute_loss", None)
    if custom is not None:
        return custom(output, target, criterion)
    steps = output.all_readouts()
    loss = sum(criterion(step, target) for step in steps) / steps.shape[0]
    if output.aux_loss is not None:
        loss = loss + output.aux_loss
    return loss


def forward_readouts(model: nn.Module, x: torch.Tensor, steps: int | None = None) -> ModelOutput:
    """Per-step predictions of any model: multi-step models answer through their
    ``forward_readouts``; plain models give one step."""
    inner = unwrap(model)
    if hasattr(inner, "forward_readouts"):
        if steps is None:
            return inner.forward_readouts(x)
        return inner.forward_readouts(x, steps=steps)
    out = model(x)
    return out if isinstance(out, ModelOutput) else ModelOutput(logits=out)


def has_readouts(model: nn.Module) -> bool:
    return hasattr(unwrap(model), "forward_readouts")


def after_train_step(model: nn.Module, global_step: int) -> None:
    """Call ``after_train_step(global_step)`` on every submodule that defines it."""
    for module in unwrap(model).modules():
        hook = getattr(module, "after_train_step", None)
        if hook is not None and callable(hook):
            hook(global_step)
