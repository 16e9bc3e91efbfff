"""The input a model takes (:class:`InputConfig`): image size, normalisation and the centre crop
of image files at evaluation. Built from a registered model's timm data configuration
(:meth:`InputConfig.of_model`), from a checkpoint's metadata (:meth:`InputConfig.of_meta`), or
from a built model, its checkpoint's metadata and the user's overrides together
(:meth:`InputConfig.resolve`, what evaluation uses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import data_config


@dataclass(frozen=True)
class InputConfig:
    """Square images of ``img_size`` pixels, normalised by the per-channel ``mean`` and ``std``;
    image files are evaluated at a centre crop of ``crop_pct`` (None: the data set's own resize)."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float | None = None

    @classmethod
    def of_model(cls, model_name: str, img_size: int | None = None) -> InputConfig:
        """The input of the registered model ``model_name`` (at ``img_size`` if given), from its
        timm data configuration (:func:`bioattn.models.data_config`)."""
        cfg = data_config(model_name, img_size)
        return cls(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"])

    @classmethod
    def of_meta(cls, meta: Mapping[str, Any]) -> InputConfig:
        """The input a checkpoint was trained on: its metadata's ``img_size``, ``mean`` and ``std``
        (no evaluation crop)."""
        return cls(meta["img_size"], tuple(meta["mean"]), tuple(meta["std"]))

    @classmethod
    def resolve(cls, model: nn.Module, meta: Mapping[str, Any] | None = None, *, img_size: int | None = None,
                crop_pct: float | None = None) -> InputConfig:
        """The input ``model`` is run at: the user's ``img_size`` and ``crop_pct`` where given,
        else what its checkpoint's metadata ``meta`` records (the input it was trained on), else
        the model's own timm data configuration (``timm.data.resolve_model_data_config``)."""
        meta = meta or {}
        own = data_config(model)
        size = img_size or meta.get("img_size") or own["input_size"][-1]
        return cls(int(size), tuple(meta.get("mean") or own["mean"]), tuple(meta.get("std") or own["std"]), crop_pct)
