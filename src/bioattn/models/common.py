"""Checks and ViT pieces that several model families share.

* input and argument checks that raise one clear :class:`~bioattn.errors.BioattnError`;
* the ViT token embedding (patch embedding, prefix tokens, position embedding), used by AbSViT
  and by the VARS attention maps of DeiT-VARS;
* :class:`ViTConventions`, a mixin for timm VisionTransformers with bioattn's input checks in
  ``forward_features`` / ``forward_intermediates`` / ``reset_classifier``;
* :func:`model_cfg` and :data:`MICRO_CFG`, the parts of every family's ``pretrained_cfg``
  that are the same;
* checkpoint adaptation: :func:`checkpoint_filter_fn`, the ``pretrained_filter_fn`` of the
  families whose checkpoints need no more than unwrapping and a resampled ViT position
  embedding (AbSViT and ViT, RVT and DeiT-VARS, the glimpse models), and the steps every
  family's filter shares (:func:`unwrap_state_dict`, :func:`resample_pos_embed`,
  :func:`fit_checkpoint`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from timm.layers import HybridEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import resolve_pretrained_cfg
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_hybrid import ConvStem
from torch import nn

from ..data.stats import EMBEDDED_MEAN, EMBEDDED_STD, IMAGENET_MEAN, IMAGENET_STD
from ..errors import BioattnError, listing
from ..protocol import unwrap
from ..zoo import ZOO_DIR, entry_of_weights, pretrained_entries


def model_cfg(**kwargs: Any) -> dict[str, Any]:
    """A ``pretrained_cfg`` for a model without downloadable weights (a released ``.pth`` or a
    bioattn ``model.safetensors`` loads with ``timm.create_model(name, pretrained=True,
    pretrained_cfg_overlay=dict(file=path))``, with ``bioattn.checkpoint.load_weights`` or after
    ``bioattn convert``): ImageNet-sized input (224 px, bicubic, crop 0.875, ImageNet statistics,
    1000 classes) unless ``kwargs`` say otherwise."""
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
        "notes": ("no weights of its own: load a released .pth or a bioattn model.safetensors with "
                  "pretrained=True, pretrained_cfg_overlay=dict(file=path)",),
        **kwargs,
    }


# The micro models: 64x64 images of the embedded shape data set (10 classes, its own statistics).
MICRO_CFG: dict[str, Any] = dict(num_classes=10, input_size=(3, 64, 64), crop_pct=1.0,
                                 interpolation="bilinear", mean=EMBEDDED_MEAN, std=EMBEDDED_STD)


def zoo_cfgs(name: str, cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``pretrained_cfg`` entries of a micro model: one ``<name>.<tag>`` per zoo entry that
    loads under ``name`` (:mod:`bioattn.zoo`: the benchmark's seed 0 as ``embedded``, its default
    tag; other seeds as ``embedded_seed<k>``; models of other data under their own tags), each
    naming the entry's weight file; the plain ``<name>`` when the zoo has none."""
    entries = pretrained_entries(name)
    if not entries:
        return {name: cfg}
    return {f"{name}.{e.tag}": dict(cfg, file=str(e.folder / "model.safetensors"),
                                     notes=(f"weights of bioattn's zoo entry {e.name} ({e.label}, seed {e.seed}, "
                                            f"trained on {e.data}) by `bioattn zoo --only {e.name}`",))
            for e in entries}


def zoo_model_args(name: str, kwargs: dict[str, Any], pretrained: bool = False) -> dict[str, Any]:
    """``kwargs`` with the constructor arguments of the zoo entry that ``name`` and the tag in
    ``kwargs['pretrained_cfg']`` name filled in where ``kwargs`` leaves them unset (a segmenter's
    head widths, for example), so ``<name>.<tag>`` builds the network its weights were trained in.
    Loading the zoo's weights without a tag reads the name's default tag (timm's rule), so
    ``<name>`` and ``<name>.<default tag>`` load the same network; without a tag, weights from
    a file of the user's (``pretrained_cfg_overlay=dict(file=...)``) or no weights, the
    registered architecture."""
    tag = kwargs.get("pretrained_cfg")
    own_file = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
    if tag is None and pretrained and not own_file:
        tag = getattr(resolve_pretrained_cfg(name), "tag", None)
    entry = entry_of_weights(name, tag) if isinstance(tag, str) else None
    return dict(entry.model_args, **kwargs) if entry is not None else kwargs


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


def _state_dict_problems(model: nn.Module, state: dict[str, torch.Tensor], prefix: str = "",
                         ignore: Collection[str] = ()) -> tuple[list[str], list[str], dict[str, str]]:
    """Keys of the model missing from ``state``, keys of ``state`` the model lacks, and the
    mis-shaped keys (each with ``"key (given) vs (expected)"``)."""
    ignore = set(ignore)
    expected = {prefix + k: tuple(v.shape) for k, v in model.state_dict().items() if prefix + k not in ignore}
    given = {k: tuple(v.shape) for k, v in state.items() if k.startswith(prefix) and k not in ignore}
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    shapes = {k: f"{k} {given[k]} vs {expected[k]}" for k in expected if k in given and given[k] != expected[k]}
    return missing, extra, shapes


def _raise_problems(what: str, missing: list[str], extra: list[str], shapes: dict[str, str]) -> None:
    problems = [f"{len(items)} {kind}: {listing(items)}" for kind, items in (
        ("missing keys", missing), ("unexpected keys", extra),
        ("mis-shaped keys (checkpoint vs model)", list(shapes.values()))) if items]
    if problems:
        raise BioattnError(f"{what} does not fit the model: " + "; ".join(problems))


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint",
                     prefix: str = "", ignore: Collection[str] = ()) -> None:
    """Raise :class:`BioattnError` unless ``state`` has exactly the model's keys and shapes (with
    ``prefix``: the keys of ``state`` under it, against the model's keys with it); keys in
    ``ignore`` are not compared."""
    _raise_problems(what, *_state_dict_problems(model, state, prefix, ignore))


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


def prune_units(model: nn.Module, num_units: int, indices: int | Sequence[int], prune_norm: bool,
                prune_head: bool, cut: Callable[[int], None]) -> list[int]:
    """timm's ``prune_intermediate_layers`` for a model whose ``feature_info`` lists its units
    (blocks or stages): ``cut(last)`` keeps the model's own module lists up to unit ``last``, the
    last one ``indices`` asks for; the feature information follows, and the final norm (sized
    for the last unit) goes with a dropped unit. Drops the norm with ``prune_norm`` and the
    classifier with ``prune_head``; returns the unit indices taken."""
    take, last = take_indices(model, num_units, indices)
    if last + 1 < num_units:
        cut(last)
        model.feature_info = model.feature_info[: last + 1]
        model.num_features = model.head_hidden_size = model.embed_dim = model.feature_info[-1]["num_chs"]
        prune_norm = True
    if prune_norm:
        model.norm = nn.Identity()
    if prune_head:
        model.reset_classifier(0, "")
    return take


def check_output_fmt(output_fmt: str, allowed: Sequence[str] = ("NCHW", "NLC")) -> None:
    if output_fmt not in allowed:
        raise BioattnError(f"output_fmt must be one of {', '.join(allowed)}; got '{output_fmt}'")


def conv_stem_embed(img_size: int | Sequence[int] = 224, patch_size: int = 8, in_chans: int = 3,
                    embed_dim: int = 96, **kwargs: Any) -> HybridEmbed:
    """A ViT's token embedding by a convolutional stem instead of one linear patch projection
    (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021,
    arXiv:2106.14881): ``log2(patch_size)`` stacked 3x3 convolutions of stride 2 with batch norm
    and ReLU, channels doubling up to ``embed_dim``, then a 1x1 convolution (timm's ``ConvStem``
    inside timm's ``HybridEmbed``). The token grid is the patch
    embedding's: ``img_size / patch_size`` on each side. An ``embed_layer`` for timm's
    VisionTransformer."""
    depth = int(math.log2(patch_size))
    if 2 ** depth != patch_size or depth < 1:
        raise BioattnError(f"a convolutional stem has stride-2 layers: patch_size must be a power of 2, "
                           f"got {patch_size}")
    channels = tuple(embed_dim // 2 ** (depth - 1 - i) for i in range(depth)) + (embed_dim,)
    stem = ConvStem(in_chans=in_chans, depth=depth + 1, channels=channels, kernel_size=(3,) * depth + (1,),
                    stride=(2,) * depth + (1,), padding=(1,) * depth + (0,))
    return HybridEmbed(stem, img_size=img_size, patch_size=1, in_chans=in_chans, embed_dim=embed_dim, proj=False,
                       **kwargs)


# the first convolution of :func:`conv_stem_embed` under a ViT (its ``pretrained_cfg``'s ``first_conv``)
CONV_STEM_FIRST_CONV = "patch_embed.backbone.0.conv"


def _input_channels(embed: nn.Module) -> int:
    """Input channels of a ViT's token embedding (a patch projection or a convolutional stem)."""
    return int(getattr(embed, "in_chans", 0) or embed.proj.in_channels)


def check_image_batch(model: VisionTransformer, x: torch.Tensor) -> None:
    """Raise :class:`BioattnError` unless ``x`` is a batch of images the ViT accepts."""
    if not torch.is_tensor(x) or x.ndim != 4:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise BioattnError(f"{model_name(model)} expects a batch of images (B, C, H, W), got {shape}")
    in_chans = _input_channels(model.patch_embed)
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


# ------------------------------------------------------------------------------------------
# checkpoints: the steps every family's checkpoint_filter_fn shares
# ------------------------------------------------------------------------------------------
STATE_DICT_ENTRIES = ("model", "state_dict", "model_state_dict")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def unwrap_state_dict(checkpoint: Any, what: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """The state dict in ``checkpoint``: its ``model`` entry (the authors' releases),
    ``state_dict`` or ``model_state_dict`` where it has one, else the object itself, with the key
    prefixes that DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add taken off. A new
    dict; a :class:`BioattnError` unless the object holds a dict of tensors."""
    state = checkpoint
    if isinstance(state, dict):
        for entry in STATE_DICT_ENTRIES:
            if isinstance(state.get(entry), dict):
                state = state[entry]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise BioattnError(f"{what} holds no state dict of tensors")
    unwrapped = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        unwrapped[key] = value
    return unwrapped


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """The module names of the model's classifier: its ``pretrained_cfg``'s ``classifier``, else
    the module ``get_classifier()`` returns."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if names:
        return (names,) if isinstance(names, str) else tuple(names)
    head = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    return tuple(name for name, module in model.named_modules() if head is not None and module is head and name)


def classifier_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, list[str]] | None:
    """``(classes, keys)`` when the classifier in ``state`` is for another number of classes than
    the model's (a model without classifier has 0): that number and the classifier's keys."""
    for name in classifier_names(model):
        weight = state.get(f"{name}.weight")
        if weight is None or weight.ndim < 2:
            continue
        classes = int(weight.shape[0])
        if classes != getattr(model, "num_classes", classes):
            return classes, [k for k in state if k.rpartition(".")[0] == name]
    return None


def _loader_drops_classifier(model: nn.Module) -> bool:
    """Whether timm's ``load_pretrained`` leaves the classifier out: the model was built for
    another number of classes than its ``pretrained_cfg`` says the weights are for."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("num_classes") is not None and cfg["num_classes"] != getattr(model, "num_classes", None)


def fit_checkpoint(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint"
                   ) -> dict[str, torch.Tensor]:
    """The last step of every ``checkpoint_filter_fn``: the adapted ``state`` must fit the model
    key for key and shape for shape, else a one-line :class:`BioattnError` names everything that
    does not. A classifier for another number of classes is the one difference let through, and
    only where timm's loader leaves it out (see :func:`_loader_drops_classifier`); so is an input
    conv that differs in its input channels alone (timm's loader adapts it to ``in_chans``).
    Returns ``state``."""
    own = model.state_dict()
    ignore: set[str] = set()
    first_conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv") or ()
    for name in (first_conv,) if isinstance(first_conv, str) else first_conv:
        key = f"{name}.weight"
        if key in state and key in own and state[key].ndim == own[key].ndim >= 2:
            given, wanted = list(state[key].shape), list(own[key].shape)
            given[1] = wanted[1] = 0
            if given == wanted:
                ignore.add(key)
    missing, extra, shapes = _state_dict_problems(model, state, ignore=ignore)
    other = classifier_mismatch(model, state)
    classifier = set(other[1]) if other is not None else set()
    classifier |= {k for name in classifier_names(model) for k in own if k.rpartition(".")[0] == name}
    problems = (*missing, *extra, *shapes)
    if all(k in classifier for k in problems):
        if not problems or _loader_drops_classifier(model):
            return state
        if other is not None:
            classes, keys = other
            raise BioattnError(
                f"{what} does not fit the model: its classifier ({keys[0]}) is for {classes} classes, the "
                f"model's for {getattr(model, 'num_classes', '?')}; build the model with num_classes={classes} "
                f"(with timm.create_model: pretrained_cfg_overlay=dict(file=..., num_classes={classes}))")
    _raise_problems(what, missing, extra, shapes)
    return state


def resample_pos_embed(model: VisionTransformer, pos: torch.Tensor) -> tuple[torch.Tensor, str]:
    """A ViT position embedding of another (square) token grid resampled to the model's grid,
    prefix tokens kept: bicubic, ``align_corners=False``, without antialiasing (mmsegmentation's
    ``resize_pos_embed``, which the AbSViT authors' segmentation backbone applies). Returns the
    embedding and a note."""
    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
    old = pos.shape[1] - prefix if pos.ndim == 3 else -1
    side = math.isqrt(max(old, 0))
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    if pos.ndim != 3 or side * side != old or side == 0:
        raise BioattnError(f"checkpoint's pos_embed {tuple(pos.shape)} is not a square token grid "
                           f"with {prefix} prefix token(s)")
    resized = resample_abs_pos_embed(pos, new_size=list(grid), old_size=[side, side], num_prefix_tokens=prefix,
                                     interpolation="bicubic", antialias=False)
    return resized, f"position embedding resized from {side}x{side} to {grid[0]}x{grid[1]}"


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module, notes: list[str] | None = None,
                         what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` for the families whose released checkpoints have bioattn's
    layout (AbSViT and ViT, RVT and DeiT-VARS, the glimpse models; also any timm ViT): the state
    dict unwrapped (:func:`unwrap_state_dict`), a ViT position embedding of another grid
    resampled to the model's (:func:`resample_pos_embed`; a note appended to ``notes``), then
    checked (:func:`fit_checkpoint`; ``what`` names the checkpoint in its errors)."""
    state = unwrap_state_dict(state_dict, what)
    own = model.state_dict()
    pos = state.get("pos_embed")
    if (isinstance(model, VisionTransformer) and pos is not None and "pos_embed" in own
            and pos.shape != own["pos_embed"].shape and pos.shape[-1] == own["pos_embed"].shape[-1]):
        state["pos_embed"], note = resample_pos_embed(model, pos)
        if notes is not None:
            notes.append(note)
    return fit_checkpoint(model, state, what)


def family_checkpoint_filter(model: nn.Module) -> Callable[..., dict[str, torch.Tensor]]:
    """The ``checkpoint_filter_fn`` of the model's family: the one its class declares as
    ``checkpoint_filter`` beside its models (GFNet, the segmenters), else :func:`checkpoint_filter_fn`
    (ViTs and models in bioattn's layout)."""
    return getattr(type(unwrap(model)), "checkpoint_filter", None) or checkpoint_filter_fn


def check_weights_source(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    """Before ``build_model_with_cfg(..., pretrained=True)``: the weights must come from somewhere,
    ``pretrained_cfg_overlay=dict(file=...)`` (or a ``url``, ``hf_hub_id`` or in-memory
    ``state_dict``), since no bioattn model has downloadable weights; a file must exist."""
    if not pretrained:
        return
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    if not (cfg.file or cfg.url or cfg.hf_hub_id or cfg.state_dict):
        raise BioattnError(
            f"{variant} has no weights of its own (the zoo's models load by name, e.g. rvt_micro.embedded; "
            "timm.list_pretrained() lists them): give a checkpoint with "
            "pretrained_cfg_overlay=dict(file=PATH) (the authors' .pth or a bioattn model.safetensors), or load "
            "one with bioattn.checkpoint.load_weights, or convert one with `bioattn convert`")
    path = Path(cfg.file) if cfg.file and not cfg.state_dict else None
    if path is not None and path.parent.parent == ZOO_DIR and not path.is_file():
        raise BioattnError(f"the zoo holds no weights for {variant}.{cfg.tag} yet: train them with `bioattn zoo "
                           f"--only {path.parent.name}` (or make zoo)")
    if path is not None and cfg.source == "local-dir":
        # timm's "local-dir:FOLDER" source: the folder's config.json and model.safetensors
        if not (path / "model.safetensors").is_file():
            raise BioattnError(f"no model.safetensors in {path} (a local-dir: model folder holds config.json "
                               "and model.safetensors)")
        return
    if path is not None and path.is_dir():
        raise BioattnError(f"{path} is a directory: give the checkpoint file in it (model.safetensors)")
    if path is not None and not path.is_file():
        raise BioattnError(f"checkpoint not found: {path}")
