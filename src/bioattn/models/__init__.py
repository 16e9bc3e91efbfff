"""bioattn's models, registered with timm on import.

After ``import bioattn``, ``timm.create_model(name)`` builds any of them. One file per family:
``absvit`` (AbSViT and its ViT twins), ``vars`` (RVT backbone with VARS attention, VARS in ViT),
``rsrnn`` (RS-RNN and its glimpse-model baselines).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from ..errors import BioattnError
from . import absvit, rsrnn, vars  # noqa: F401  (registers the models)

_FAMILIES = ("absvit", "vars", "rsrnn")


def list_models(pattern: str = "") -> list[str]:
    """Names of the models bioattn registers (optionally filtered by a substring)."""
    names = []
    for family in _FAMILIES:
        names += timm.list_models(module=family)
    return sorted(n for n in set(names) if pattern in n)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with a one-line error for unknown names or bad arguments."""
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
