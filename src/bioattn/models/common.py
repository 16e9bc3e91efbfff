"""Checks and ViT pieces that several model families share.

* input and argument checks that raise one clear :class:`~bioattn.errors.BioattnError`;
* the ViT token embedding (patch embedding, prefix tokens, position embedding), used by AbSViT
  and by the VARS attention maps of DeiT-VARS;
* :class:`ViTConventions`, a mixin for timm VisionTransformers with bioattn's input checks in
  ``forward_features`` / ``forward_intermediates`` / ``reset_classifier``;
* :func:`model_cfg` and :data:`MICRO_CFG`, the parts of every family's ``pretrained_cfg``
  that are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..data.stats import EMBEDDED_MEAN, EMBEDDED_STD, IMAGENET_MEAN, IMAGENET_STD
from ..errors import BioattnError, listing


def model_cfg(**kwargs: Any) -> dict[str, Any]:
    """A ``pretrained_cfg`` for a model without downloadable weights (released checkpoints are
    converted with ``bioattn convert`` or loaded with ``bioattn.checkpoint.load_weights``):
    ImageNet-sized input (224 px, bicubic, crop 0.875, ImageNet statistics, 1000 classes) unless
    ``kwargs`` say otherwise."""
    return {
        "url": "",
        "hf_hub_id": None,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "notes": ("no downloadable weights: convert a released checkpoint with `bioattn convert`, "
                  "or load it with bioattn.checkpoint.load_weights(model, path)",),
        **kwargs,
    }


# The micro models: 64x64 images of the embedded shape data set (10 classes, its own statistics).
MICRO_CFG: dict[str, Any] = dict(num_classes=10, input_size=(3, 64, 64), crop_pct=1.0,
                                 interpolation="bilinear", mean=EMBEDDED_MEAN, std=EMBEDDED_STD)


def image_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An image size as ``(height, width)``; one number means a square."""
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise BioattnError(f"img_size must be an int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def init_linear_and_norm(m: nn.Module) -> None:
    """The ViT initialisation for ``model.apply``: linear weights from a truncated normal with
    std 0.02 and zero biases, LayerNorms at identity."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint",
                     prefix: str = "") -> None:
    """Raise :class:`BioattnError` unless ``state`` has exactly the model's keys and shapes (with
    ``prefix``: the keys of ``state`` under it, against the model's keys with it)."""
    expected = {prefix + k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    shapes = [f"{k} {given[k]} vs {expected[k]}" for k in expected if k in given and given[k] != expected[k]]
    problems = [f"{len(items)} {kind}: {listing(items)}" for kind, items in (
        ("missing keys", missing), ("unexpected keys", extra),
        ("mis-shaped keys (checkpoint vs model)", shapes)) if items]
    if problems:
        raise BioattnError(f"{what} does not fit the model: " + "; ".join(problems))


def model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an int, or a clear error unless it is a whole number >= 0."""
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 0:
        raise BioattnError(f"num_classes must be a whole number >= 0 (0 removes the classifier); "
                           f"got {num_classes!r}")
    return int(num_classes)


def take_indices(model: nn.Module, num_blocks: int, indices: int | Sequence[int] | None
                 ) -> tuple[list[int], int]:
    """Blocks whose outputs ``forward_intermediates`` returns, as timm reads ``indices``: None for
    all, an int n for the last n, a sequence for those blocks (negative counts from the end).
    Returns the sorted block indices and the largest."""
    if indices is None:
        take = list(range(num_blocks))
    elif isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_blocks:
            raise BioattnError(f"{model_name(model)} has {num_blocks} blocks: ask for the last 1 to "
                               f"{num_blocks}, got {indices}")
        take = list(range(num_blocks - indices, num_blocks))
    else:
        take = []
        for i in indices:
            if not -num_blocks <= int(i) < num_blocks:
                raise BioattnError(f"block index {i} out of range: {model_name(model)} has "
                                   f"{num_blocks} blocks (0..{num_blocks - 1})")
            take.append(int(i) % num_blocks)
        if not take:
            raise BioattnError("indices selects no block")
    return take, max(take)


def check_output_fmt(output_fmt: str, allowed: Sequence[str] = ("NCHW", "NLC")) -> None:
    if output_fmt not in allowed:
        raise BioattnError(f"output_fmt must be one of {', '.join(allowed)}; got '{output_fmt}'")


def check_image_batch(model: VisionTransformer, x: torch.Tensor) -> None:
    """Raise :class:`BioattnError` unless ``x`` is a batch of images the ViT accepts."""
    if not torch.is_tensor(x) or x.ndim != 4:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise BioattnError(f"{model_name(model)} expects a batch of images (B, C, H, W), got {shape}")
    in_chans = model.patch_embed.proj.in_channels
    expected = tuple(model.patch_embed.img_size)
    got = tuple(x.shape[-2:])
    if x.shape[1] != in_chans or (not getattr(model, "dynamic_img_size", False) and got != expected):
        raise BioattnError(
            f"{model_name(model)} expects {in_chans}x{expected[0]}x{expected[1]} images, "
            f"got {x.shape[1]}x{got[0]}x{got[1]}: resize the input to {expected[0]}x{expected[1]}"
        )


def embed_tokens(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Patch embedding, prefix tokens and position embedding: the input of the first block."""
    check_image_batch(model, x)
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


def token_grid(model: VisionTransformer, x: torch.Tensor) -> tuple[int, int]:
    """The patch grid ``(h, w)`` of images ``x``."""
    if getattr(model, "dynamic_img_size", False):
        return tuple(model.patch_embed.dynamic_feat_size(tuple(x.shape[-2:])))
    return tuple(model.patch_embed.grid_size)


class ViTConventions:
    """For subclasses of timm's VisionTransformer: clear errors for wrongly sized input, an
    out-of-range ``forward_intermediates`` index or a negative class count; otherwise timm's
    behaviour."""

    def forward_features(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        check_image_batch(self, x)
        return super().forward_features(x, *args, **kwargs)

    def forward_intermediates(self, x: torch.Tensor, indices=None, *args: Any,
                              output_fmt: str = "NCHW", **kwargs: Any):
        check_image_batch(self, x)
        check_output_fmt(output_fmt)
        take_indices(self, len(self.blocks), indices)
        return super().forward_intermediates(x, indices, *args, output_fmt=output_fmt, **kwargs)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        super().reset_classifier(check_num_classes(num_classes), global_pool)
