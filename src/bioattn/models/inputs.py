"""The input a model takes (:class:`InputConfig`): image size, normalisation and the centre crop
of image files at evaluation, resolved in one place (:meth:`InputConfig.resolve`) from the
model's timm data configuration, its checkpoint's metadata and the user's overrides, and passed
down whole to the data sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import data_config


@dataclass(frozen=True)
class InputConfig:
    """Square images of ``img_size`` pixels, normalised by the per-channel ``mean`` and ``std``;
    image files are evaluated at a centre crop of ``crop_pct`` (None: timm's default)."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float | None = None

    @classmethod
    def resolve(cls, model: nn.Module | str, meta: Mapping[str, Any] | None = None, *, img_size: int | None = None,
                crop_pct: float | None = None) -> InputConfig:
        """The input ``model`` (a built model or a registered name) is run at: the user's
        ``img_size`` and ``crop_pct`` where given, else what its checkpoint's metadata ``meta``
        records (the input it was trained on), else the model's own timm data configuration
        (``timm.data.resolve_model_data_config``; :func:`bioattn.models.data_config`)."""
        meta = meta or {}
        own = data_config(model, img_size)
        size = img_size or meta.get("img_size") or own["input_size"][-1]
        return cls(int(size), tuple(meta.get("mean") or own["mean"]), tuple(meta.get("std") or own["std"]),
                   crop_pct if crop_pct is not None else own["crop_pct"])
