"""What bioattn's models promise to the trainer, the evaluator, the attacks and the plots.

Every model is a timm classifier: ``model(x)`` returns the final logits ``(B, K)`` in train and
eval mode, so any timm-style loop (``loss = criterion(model(x), y)``) trains it as a plain
classifier.

Some models compute more than one prediction per image: AbSViT reads a prediction out after
each of its two passes, a glimpse model after each glimpse. Each such prediction is a
*readout*. These models declare the :class:`MultiReadout` capability: ``forward_readouts(x,
readouts=None)`` returns a :class:`ModelOutput` in any mode, with the final ``logits``, every
readout's logits ``readout_logits`` ``(T, B, K)``, an optional auxiliary loss ``aux_loss``
(AbSViT's variational loss) and ``extras`` (keys in :data:`EXTRAS_KEYS`). ``readouts`` asks
for a number of readouts (passes or glimpses) other than the model's default.

bioattn's trainer trains with the full objective: it wraps the model in :class:`ReadoutModel`
(whose forward is ``forward_readouts``; DDP wraps that wrapper, so gradient synchronisation
still goes through DDP's forward) and computes :func:`compute_loss`. A model that needs an
objective of its own (the glimpse models' fixation-policy term, which depends on the target)
defines ``compute_loss(output, target, criterion) -> Tensor``; otherwise :func:`readout_loss`
averages ``criterion`` over the readouts and adds ``aux_loss``.

Other capabilities, declared by the methods a model defines (checked with ``isinstance`` on the
bare model, see :func:`capable`):

* :class:`Glimpsing`: ``forward_glimpses`` (the glimpse models);
* :class:`TopDownSteerable`: ``top_down_maps`` (attention steered by a prior, AbSViT);
* :class:`MapProducing`: ``attention_maps`` and ``saliency``;
* :class:`LabelPrompted`: a training pass that takes the images' labels as a prior
  (``prompted_classes``; the label-prompted AbSViT): the trainer passes ``labels=`` to its
  ``forward_readouts``, with every object's class of a two-object image (see
  :func:`bioattn.models.prompted_by_labels`).

Modules that must act between optimizer steps (VARS-S refreshes its ISTA step size) define
``after_train_step(global_step)``; the trainer calls it on every submodule through
:func:`after_train_step`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import BioattnError

# The keys a model may put into ``ModelOutput.extras`` and what they hold.
EXTRAS_KEYS: dict[str, str] = {
    "prior_mask": "AbSViT: the token mask (B, N, 1) of the prior that steered the second pass",
    "fixations": "glimpse models: the fixation of every glimpse (T, B, 2), image coordinates in "
                 "[-1, 1], x then y",
    "sigmas": "glimpse models: the width (T, B) of the region each glimpse covered (image units)",
    "log_probs": "glimpse models with a fixation policy: log-probability (T-1, B) of each chosen "
                 "fixation after the first",
    "entropies": "glimpse models with a fixation policy: entropy (T-1, B) of the policy at each "
                 "choice",
    "prompted_class": "label-prompted models: the class (B,) whose prior steered the pass and which is its "
                      "training target",
    "aux_logits": "segmenters: the auxiliary head's per-pixel logits (B, K, H, W), trained with a "
                  "smaller weight",
}


@dataclass
class ModelOutput:
    """Outputs of a model with several readouts per input (see :data:`EXTRAS_KEYS` for
    ``extras``)."""

    logits: torch.Tensor
    readout_logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    extras: dict | None = None

    def all_readouts(self) -> torch.Tensor:
        """Logits of every readout ``(T, B, K)``; a single-readout output gives ``T = 1``."""
        if self.readout_logits is None:
            return self.logits.unsqueeze(0)
        return self.readout_logits


# ------------------------------------------------------------------------------------------
# capabilities
# ------------------------------------------------------------------------------------------
@runtime_checkable
class MultiReadout(Protocol):
    """A model with several readouts (passes or glimpses) and optional auxiliary losses."""

    def forward_readouts(self, x: torch.Tensor, readouts: int | None = None) -> ModelOutput: ...


@runtime_checkable
class Glimpsing(Protocol):
    """A glimpse model: a sequence of fixations, each with its prediction.

    ``forward_glimpses(x, glimpses=None, return_maps=False)`` returns the glimpses' ``logits``
    ``(T, B, K)``, ``fixations`` ``(T, B, 2)`` and ``sigmas`` ``(T, B)`` (and the maps that chose
    each fixation with ``return_maps``). bioattn's glimpse models also draw what each glimpse
    saw (``glimpse_images(x, fixations)``), which scan-path pictures need.
    """

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None,
                         return_maps: bool = False) -> Any: ...


@runtime_checkable
class TopDownSteerable(Protocol):
    """A model whose attention a prior steers (a class index or a prior vector per image)."""

    def top_down_maps(self, x: torch.Tensor, priors: Sequence[Any],
                      prior_scale: float = 1.0) -> list[torch.Tensor]: ...


@runtime_checkable
class MapProducing(Protocol):
    """A model that draws its own attention maps: named maps ``(B, h, w)`` and a primary one."""

    def attention_maps(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]: ...

    def saliency(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class LabelPrompted(Protocol):
    """A model whose training pass is steered by the images' labels: ``forward_readouts(x,
    labels=y)`` draws a prompted class per image from ``y`` (``prompted_classes``), runs under
    its prior and records it in ``extras["prompted_class"]``, the pass's training target."""

    def prompted_classes(self, labels: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class BackboneInitialised(Protocol):
    """A model built around a backbone (a segmenter) that takes a classifier's checkpoint into
    that backbone for fine-tuning, its own heads keeping their fresh weights."""

    def accepts_backbone_state(self, state: dict[str, torch.Tensor]) -> bool: ...

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> str: ...


def capable(model: nn.Module, capability: type) -> bool:
    """Whether the bare model inside any wrapper declares ``capability`` (one of the classes
    above)."""
    return isinstance(unwrap(model), capability)


def has_readouts(model: nn.Module) -> bool:
    return capable(model, MultiReadout)


# ------------------------------------------------------------------------------------------
# wrappers and the objective
# ------------------------------------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / EMA / compile / :class:`ReadoutModel` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@contextlib.contextmanager
def evaluating(model: nn.Module | None) -> Iterator[nn.Module | None]:
    """``model`` in eval mode for the ``with`` block, its mode before restored after (None: no
    model, nothing to do)."""
    if model is None:
        yield None
        return
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class ReadoutModel(nn.Module):
    """``ReadoutModel(model)(x)`` is :func:`forward_readouts` of ``model``: every readout and the
    auxiliary loss, for training with the full objective (:func:`compute_loss`). Wrap this
    module, not the model, in DDP so that its forward is the one DDP synchronises."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model

    def forward(self, x: torch.Tensor, readouts: int | None = None,
                labels: torch.Tensor | None = None) -> ModelOutput:
        return forward_readouts(self.module, x, readouts=readouts, labels=labels)


def final_logits(output: torch.Tensor | ModelOutput) -> torch.Tensor:
    """The final prediction of any model output."""
    return output.logits if isinstance(output, ModelOutput) else output


def readout_loss(
    output: ModelOutput,
    target: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``criterion`` averaged over the readouts, plus ``aux_loss`` when there is one."""
    readouts = output.all_readouts()
    loss = sum(criterion(logits, target) for logits in readouts) / readouts.shape[0]
    if output.aux_loss is not None:
        loss = loss + output.aux_loss
    return loss


def compute_loss(
    model: nn.Module,
    output: torch.Tensor | ModelOutput,
    target: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The training objective for ``output`` of ``model`` against ``target``: the model's own
    ``compute_loss`` if it has one, else :func:`readout_loss`."""
    if not isinstance(output, ModelOutput):
        return criterion(output, target)
    custom = getattr(unwrap(model), "compute_loss", None)
    if custom is not None:
        return custom(output, target, criterion)
    return readout_loss(output, target, criterion)


def forward_readouts(model: nn.Module, x: torch.Tensor, readouts: int | None = None,
                     labels: torch.Tensor | None = None) -> ModelOutput:
    """Every readout of any model: multi-readout models answer through their
    ``forward_readouts``; plain models give one readout. ``labels`` steer a
    :class:`LabelPrompted` model's pass (other models refuse them)."""
    inner = unwrap(model)
    if labels is not None:
        if not isinstance(inner, LabelPrompted):
            raise BioattnError(f"{type(inner).__name__} takes no labels in its forward pass")
        if readouts is None:
            return inner.forward_readouts(x, labels=labels)
        return inner.forward_readouts(x, readouts=readouts, labels=labels)
    if isinstance(inner, MultiReadout):
        if readouts is None:
            return inner.forward_readouts(x)
        return inner.forward_readouts(x, readouts=readouts)
    out = model(x)
    return out if isinstance(out, ModelOutput) else ModelOutput(logits=out)


def after_train_step(model: nn.Module, global_step: int) -> None:
    """Call ``after_train_step(global_step)`` on every submodule that defines it."""
    for module in unwrap(model).modules():
        hook = getattr(module, "after_train_step", None)
        if hook is not None and callable(hook):
            hook(global_step)
