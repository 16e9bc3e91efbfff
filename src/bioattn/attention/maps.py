"""Attention maps of any bioattn model or timm ViT, on the token grid or upsampled to the image.

Models with maps implement ``attention_maps(x, **kwargs)`` (an ordered dict of named
``(B, h, w)`` maps) and ``saliency(x)`` (their one primary map). Plain timm
``VisionTransformer``\\ s get the feedforward map of the authors' recipe: the L2 norm over
channels of every patch token after block ``depth - 3``.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import BioattnError
from ..models.absvit import bottom_up_map
from ..protocol import MapProducing, unwrap

__all__ = ["attention_maps", "saliency", "upsample", "display_normalise", "has_maps"]


def has_maps(model: nn.Module) -> bool:
    """Whether :func:`attention_maps` can draw maps for ``model``."""
    inner = unwrap(model)
    return isinstance(inner, (MapProducing, VisionTransformer))


def _no_maps(model: nn.Module) -> BioattnError:
    return BioattnError(
        f"{type(model).__name__} has no attention maps (it defines no attention_maps() and is not a ViT)"
    )


@torch.no_grad()
def attention_maps(model: nn.Module, x: torch.Tensor, **kwargs: Any) -> OrderedDict[str, torch.Tensor]:
    """Named attention maps ``(B, h, w)`` of ``model`` for images ``x``, on its token grid.

    Keyword arguments go to the model's ``attention_maps`` (AbSViT: ``priors``,
    ``prior_scale``). A plain timm ViT gives ``{"bottom-up": ...}`` and accepts no priors.
    """
    inner = unwrap(model)
    if isinstance(inner, MapProducing):
        return OrderedDict(inner.attention_maps(x, **_map_arguments(inner, inner.attention_maps, kwargs)))
    if isinstance(inner, VisionTransformer):
        _map_arguments(inner, None, kwargs)
        return OrderedDict([("bottom-up", bottom_up_map(inner, x))])
    raise _no_maps(inner)


def _map_arguments(model: nn.Module, method, kwargs: dict) -> dict:
    """The keyword arguments to pass to ``method`` (None: a map that takes none). Empty
    ``priors`` and ``prior_scale`` are dropped for maps without priors; other arguments the
    map does not take are refused."""
    params = inspect.signature(method).parameters if method is not None else {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    name = type(model).__name__
    passed = {}
    for key, value in kwargs.items():
        if key in params:
            passed[key] = value
        elif key == "priors" and value is not None and len(value) > 0:
            raise BioattnError(f"{name} has no top-down prior to set: its attention maps take no priors")
        elif key not in ("priors", "prior_scale"):
            raise BioattnError(f"{name}'s attention maps take no '{key}' argument")
    return passed


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, h, w)`` or ``(h, w)`` maps to ``size``."""
    if isinstance(size, int):
        size = (size, size)
    squeeze = maps.ndim == 2
    batch = maps[None, None] if squeeze else maps[:, None]
    out = F.interpolate(batch.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return out[0, 0] if squeeze else out[:, 0]


@torch.no_grad()
def saliency(model: nn.Module, x: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """The model's primary map ``(B, h, w)`` (AbSViT: top-down under its learned prompt; a plain
    ViT: its feedforward map), upsampled bilinearly to ``size`` if given."""
    inner = unwrap(model)
    if isinstance(inner, MapProducing):
        maps = inner.saliency(x)
    elif isinstance(inner, VisionTransformer):
        maps = bottom_up_map(inner, x)
    else:
        raise _no_maps(inner)
    return upsample(maps, size) if size is not None else maps


def display_normalise(maps: torch.Tensor) -> torch.Tensor:
    """The authors' display: ``(a - (0.7 max + 0.3 min)).clamp(0)`` per map (last two dims)."""
    flat = maps.flatten(-2)
    high = flat.amax(dim=-1, keepdim=True)
    low = flat.amin(dim=-1, keepdim=True)
    return (flat - (0.7 * high + 0.3 * low)).clamp(min=0).reshape(maps.shape)
