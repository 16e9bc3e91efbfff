"""bioattn's models, registered with timm on import.

After ``import bioattn``, ``timm.create_model(name)`` builds any of them. One file per family:
``absvit`` (AbSViT and its ViT twins), ``vars`` (the VARS attentions, VARS in ViT/DeiT), ``rvt``
(the RVT backbone with a choice of attention, VARS among them), ``gfnet`` (GFNet, isotropic and
hierarchical, with the global filter or a VARS mixer), ``rsrnn`` (RS-RNN and its feedforward
baseline FF-CNN), ``ram`` (the recurrent attention model baselines Retina, Crop-S and Crop-D),
``s3ta`` (S3TA), ``upernet`` (segmentation: a UperNet head on any of those backbones with feature
maps). ``glimpse`` holds what the glimpse models share, ``retina`` the retina of RS-RNN and its
baselines, ``common`` the checks and ViT helpers of every family, ``inputs`` the input a model
takes (size, normalisation, evaluation crop).

Weights: every registered model loads a checkpoint of itself with
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``: the
authors' released ``.pth`` (``torch.load(weights_only=True)``, its ``model`` entry, their key
layout) or a bioattn ``model.safetensors``. Each family's ``checkpoint_filter_fn`` adapts the
state dict (timm's ``pretrained_filter_fn``); :func:`checkpoint_filter_fn` here picks the
model's, for bioattn's own loaders.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.data import resolve_data_config, resolve_model_data_config
from timm.models import get_pretrained_cfg
from torch import nn

from ..errors import BioattnError
from ..protocol import unwrap
from . import absvit, gfnet, ram, rsrnn, rvt, s3ta, upernet, vars  # noqa: F401  (registers the models)
from .common import family_checkpoint_filter

_FAMILIES = ("absvit", "vars", "rvt", "gfnet", "rsrnn", "ram", "s3ta", "upernet")


def list_models(pattern: str = "") -> list[str]:
    """Names of the models bioattn registers (optionally filtered by a substring)."""
    names = []
    for family in _FAMILIES:
        names += timm.list_models(module=family)
    return sorted(n for n in set(names) if pattern in n)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with a one-line error for unknown names or bad arguments;
    ``upernet_<backbone>`` builds a segmenter on any backbone with feature maps."""
    if not timm.is_model(name) and name.startswith(upernet.PREFIX):
        return upernet.create_named_segmenter(name, **kwargs)
    if not timm.is_model(name):
        close = [n for n in timm.list_models(f"*{name.split('_')[0]}*")][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise BioattnError(f"unknown model '{name}'{hint}; `bioattn models` lists bioattn's")
    try:
        return timm.create_model(name, **kwargs)
    except BioattnError:
        raise
    except TypeError as exc:
        raise BioattnError(f"cannot build {name}: {exc}") from None


def prompted_by_labels(name: str) -> bool:
    """Whether the registered model ``name`` (a tag after a dot allowed) is trained under priors
    drawn from its images' labels (:class:`~bioattn.models.absvit.PromptedAbSViT`): its training
    step takes every object's class of a two-object image."""
    return name.split(".")[0] in absvit.PROMPTED_MODELS


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module, notes: list[str] | None = None,
                         what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict in ``state_dict`` (a loaded checkpoint) adapted to ``model`` by its family's
    ``checkpoint_filter_fn`` (the segmenters', GFNet's, or the one for ViTs and models in
    bioattn's layout) and checked to fit it, with a one-line error naming ``what`` otherwise;
    ``notes`` receives what was resized or left out."""
    model = unwrap(model)
    return family_checkpoint_filter(model)(state_dict, model, notes, what)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _built_size(model: nn.Module) -> tuple[int, int] | None:
    """The image size a model was built for, where it differs from its registered one."""
    patch_embed = getattr(model, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None) or getattr(model, "img_size", None)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def data_config(model_or_name: nn.Module | str, img_size: int | None = None) -> dict[str, Any]:
    """timm's data configuration (``input_size``, ``interpolation``, ``mean``, ``std``,
    ``crop_pct``, ``crop_mode``) of a model or a registered name, resolved by
    ``timm.data.resolve_model_data_config`` from the ``pretrained_cfg``. The input size is
    ``img_size`` if given, else the size the model was built for."""
    if isinstance(model_or_name, str):
        pretrained_cfg = get_pretrained_cfg(model_or_name)
        if pretrained_cfg is None:  # unknown name: create_model raises the clear error
            create_model(model_or_name)
        config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
        size = None
    else:
        model = unwrap(model_or_name)
        config = resolve_model_data_config(model)
        size = _built_size(model)
    if img_size is not None:
        size = (int(img_size), int(img_size))
    if size is not None:
        config["input_size"] = (config["input_size"][0], *size)
    return config
