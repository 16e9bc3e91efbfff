"""Semantic segmentation: a UperNet head on the feature maps of a bioattn or timm backbone.

The set-up is the AbSViT paper's (Shi, Darrell & Wang, CVPR 2023; the authors' mmsegmentation
config ``upernet_vit-top-down-b16``), which is mmsegmentation's UperNet for plain ViTs:

* backbone features: the outputs of 4 evenly spaced blocks, the last one the final block (blocks
  3, 6, 9, 12 of a depth-12 ViT; all units when there are at most 4), as ``(B, C, h, w)`` maps on
  the backbone's own grid (stride 16 for a /16 ViT), no neck; the last level also passes through
  the backbone's final norms (``norm``, then ``fc_norm``). An AbSViT backbone gives the features
  of its second, top-down pass (under the learned prompt unless a prior is given);
* decode head (mmsegmentation's ``UPerHead``, 512 channels): pyramid pooling with scales
  1, 2, 3, 6 on the last level, 1x1 lateral convs and 3x3 FPN convs on the others with the
  top-down path, a fused 3x3 bottleneck over all levels at the finest level's resolution, then
  ``Dropout2d(0.1)`` and a 1x1 classifier; every conv is conv (no bias) + BatchNorm + ReLU;
* auxiliary head (mmsegmentation's ``FCNHead`` with one conv, no input concatenation) on the last
  level: a 3x3 conv to 256 channels + BatchNorm + ReLU, ``Dropout2d(0.1)``, a 1x1 classifier; its
  loss weighs 0.4;
* logits upsampled bilinearly (``align_corners=False``) to the input size.

The decode head is segmentation-models-pytorch's ``UPerNetDecoder``, which computes mmseg's
``UPerHead`` dataflow (PPM on the last level, cumulative top-down lateral sums, FPN convs,
concatenation finest-first, fused bottleneck) with two differences that this module removes or
works around: smp LayerNorms every input level (``feature_norms``, replaced here by identities)
and expects encoder outputs from stride 1 on (it drops the first two entries of its
``encoder_channels`` and of its input list, so two placeholders are put in front). What smp
lacks is written here: the dropout and classifier after the decoder, and the FCN auxiliary
head. Weights start as mmcv's ``ConvModule`` does (Kaiming normal, fan-out, for the convs;
BatchNorm at identity) and the classifiers from N(0, 0.01). ``tests/models/test_upernet.py``
checks the decoder against a direct transcription of ``UPerHead``'s forward on the same
weights, and the AbSViT backbone's features against the authors' segmentation backbone.

Backbones whose units are stages (the hierarchical RVT-Ti and GFNet) give one level per stage
at the stage's own stride; the isotropic RVT-S is read as a ViT (4 evenly spaced blocks). The
heads' BatchNorms need at least 2 images per batch in training (the 1x1 pooled map), as in
mmsegmentation; the trainer turns them into SyncBatchNorm under DDP.
An AbSViT backbone's variational loss is left out of the objective unless ``var_loss=True``:
the authors' segmentation backbone returns features only and trains its decoders through the
segmentation loss.

ImageNet weights: :func:`load_backbone_weights` loads a classification checkpoint into the
backbone, resizing a ViT position embedding of another grid as the authors' backbone does
(mmseg's ``resize_pos_embed``: class token kept, grid resized bicubically with
``align_corners=False``). That is timm's ``resample_abs_pos_embed`` with ``antialias=False``
(timm's default antialiasing changes the golden 4x4 -> 6x6 resize by up to 0.3). The adaptation
is :func:`checkpoint_filter_fn`, which timm's loader uses too: ``timm.create_model(name,
pretrained=True, pretrained_cfg_overlay=dict(file=path))`` takes a segmenter's checkpoint, or a
classifier's into the backbone.

Top-down steering (AbSViT backbones): ``model(x, prior=..., prior_scale=...)`` passes the prior
to the backbone's top-down pass; the paper trains and evaluates with the learned prompt
(``prior=None``). A prior is a vector in the backbone's feature space (``(C,)`` or ``(B, C)``),
or a class index per image. Class indices refer to the *backbone's* classifier, as in AbSViT
classification (prior = classifier row ``head.weight[k]``, the direction of class k in the
feature space the prior is compared with), not to the segmentation classes: the segmentation
heads classify 512- or 256-channel decoder features, so they have no row in the backbone's
space that could act as a prior. Build with ``prior_classes=N`` to keep the backbone's N-class
classifier for this (load ImageNet weights with :func:`load_backbone_weights` so its rows mean
the ImageNet classes); it is frozen, since the segmentation loss never trains it.

Registered with timm (``upernet_<backbone>``): the paper sizes at 512x512 (150 classes, as for
ADE20K), the micro ones at 64x64 (11 classes: background and the 10 shapes of the embedded
data) with heads of 128 and 64 channels instead of 512 and 256.
``bioattn.models.create_model("upernet_<any backbone>")`` builds the segmenter on any other
backbone that has feature maps in the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs, load_pretrained, register_model, resolve_pretrained_cfg
from torch import nn

from ..data.stats import IMAGENET_MEAN, IMAGENET_STD
from ..errors import BioattnError, listing
from ..protocol import ModelOutput, TopDownSteerable, unwrap
from . import absvit, gfnet, rvt, vars  # noqa: F401  (the backbones' cfgs are registered first)
from .common import (
    MICRO_CFG,
    check_num_classes,
    check_weights_source,
    classifier_names,
    family_checkpoint_filter,
    fit_checkpoint,
    image_pair,
    model_cfg,
    model_name,
    take_indices,
    unwrap_state_dict,
    zoo_cfgs,
    zoo_model_args,
)
from .common import resample_pos_embed as resize_vit_pos_embed

__all__ = [
    "UperNetSegmenter",
    "UperHead",
    "FCNHead",
    "create_segmenter",
    "create_named_segmenter",
    "checkpoint_filter_fn",
    "load_backbone_weights",
    "resize_vit_pos_embed",
    "segmenter_name",
    "default_indices",
    "PREFIX",
    "MICRO_HEAD",
]

PREFIX = "upernet_"
LEVELS = 4
POOL_SCALES = (1, 2, 3, 6)  # smp's UPerNetDecoder pools at these scales, as mmseg's UPerHead
SEG_SIZE = 512
MICRO_SEG_CLASSES = 11  # background and the embedded data's 10 shapes
PAPER_SEG_CLASSES = 150  # ADE20K
# Head widths of the registered micro segmenters, scaled down to their backbones' widest level
# (C 48-96), which also keeps each zoo segmenter's fp16 weights under 5 MB:
# with the paper's 512/256 the heads would count about 38 times the micro ViT's FLOPs.
MICRO_HEAD = dict(channels=96, aux_channels=48)


def default_indices(num_units: int, levels: int = LEVELS) -> list[int]:
    """``levels`` evenly spaced units of ``num_units``, the last one the final unit (blocks 2, 5,
    8, 11 of 12 counted from 0); all units when there are at most ``levels``."""
    n = min(levels, num_units)
    return [num_units * (i + 1) // n - 1 for i in range(n)]


def segmenter_name(backbone: str) -> str:
    """The registered name of the segmenter on ``backbone`` (``upernet_<backbone>``)."""
    return backbone if backbone.startswith(PREFIX) else PREFIX + backbone


# ------------------------------------------------------------------------------------------
# heads
# ------------------------------------------------------------------------------------------
def _init_conv_module(module: nn.Module) -> None:
    """mmcv ``ConvModule`` initialisation: Kaiming normal (fan-out, ReLU) convs with zero
    biases, BatchNorm at identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _classifier(channels: int, num_classes: int, device=None) -> nn.Conv2d:
    """mmseg's ``conv_seg``: a 1x1 conv with bias, weights from N(0, 0.01)."""
    conv = nn.Conv2d(channels, num_classes, kernel_size=1, device=device)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class UperHead(nn.Module):
    """mmsegmentation's ``UPerHead``: smp's ``UPerNetDecoder`` without its input LayerNorms
    (``decoder``), ``Dropout2d`` and a 1x1 classifier (``conv_seg``). Takes the levels finest
    first and returns logits at the finest level's resolution."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 dropout: float = 0.1) -> None:
        super().__init__()
        # deferred: segmentation-models-pytorch (about 0.1 s to import) loads when a segmenter is
        # built, not each time timm registers bioattn's models
        from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

        in_channels = [int(c) for c in in_channels]
        # smp skips the first two entries (its stride-1 and stride-2 encoder outputs)
        self.decoder = UPerNetDecoder(encoder_channels=[0, 0, *in_channels],
                                      encoder_depth=max(3, len(in_channels) + 1),
                                      decoder_channels=channels, use_norm="batchnorm")
        self.decoder.feature_norms = nn.ModuleList(nn.Identity() for _ in in_channels)
        self.dropout = nn.Dropout2d(dropout)
        _init_conv_module(self.decoder)
        self.conv_seg = _classifier(channels, num_classes)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.decoder([None, None, *levels])))


class FCNHead(nn.Module):
    """mmsegmentation's ``FCNHead`` with one conv and no input concatenation: 3x3 conv + BN +
    ReLU (``conv``), ``Dropout2d``, 1x1 classifier (``conv_seg``)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        # deferred: segmentation-models-pytorch loads only when a segmenter is built
        from segmentation_models_pytorch.base.modules import Conv2dReLU

        self.conv = Conv2dReLU(in_channels, channels, kernel_size=3, padding=1, use_norm="batchnorm")
        self.dropout = nn.Dropout2d(dropout)
        _init_conv_module(self.conv)
        self.conv_seg = _classifier(channels, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.conv(feature)))


# ------------------------------------------------------------------------------------------
# the segmenter
# ------------------------------------------------------------------------------------------
def _built_size(backbone: nn.Module) -> tuple[int, int] | None:
    size = getattr(getattr(backbone, "patch_embed", None), "img_size", None) or getattr(backbone, "img_size", None)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BioattnError(f"{what} must be a whole number >= 1, got {value!r}")
    return value


class UperNetSegmenter(nn.Module):
    """A backbone with a UperNet decode head and an FCN auxiliary head (see the module
    docstring for the set-up).

    ``model(x, prior=None, prior_scale=1.0)`` returns per-pixel logits ``(B, K, H, W)`` at the
    input size in train and eval mode; :meth:`forward_readouts` a
    :class:`~bioattn.protocol.ModelOutput` with those logits, the auxiliary head's logits in
    ``extras["aux_logits"]`` and the backbone's own loss as ``aux_loss`` (AbSViT's variational
    loss when built with ``var_loss=True``, else None); :meth:`compute_loss` the training
    objective. ``prior`` steers an AbSViT backbone (a prior vector, or with ``prior_classes`` a
    class index of the backbone's classifier).

    ``indices``: the backbone units (blocks, or stages of a hierarchical backbone) whose outputs
    feed the head, as ``forward_intermediates`` reads them; default :func:`default_indices`.
    ``var_loss``: add the AbSViT backbone's variational loss (its decoders learn to reconstruct
    each block's input) while training; the authors' segmentation code trains without it.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, indices: int | Sequence[int] | None = None,
                 channels: int = 512, aux_channels: int = 256, dropout: float = 0.1,
                 aux_weight: float = 0.4, var_loss: bool = False) -> None:
        super().__init__()
        name = model_name(backbone)
        info = getattr(backbone, "feature_info", None)
        if not callable(getattr(backbone, "forward_intermediates", None)) or not info:
            raise BioattnError(f"{name} has no feature maps (no forward_intermediates over blocks or stages), "
                               "so it cannot carry a segmentation head; use a ViT, AbSViT, RVT, DeiT or GFNet")
        self.num_classes = self._check_classes(num_classes)
        channels = _positive_int(channels, "channels")
        aux_channels = _positive_int(aux_channels, "aux_channels")
        if not 0.0 <= float(dropout) < 1.0:
            raise BioattnError(f"dropout must be in [0, 1), got {dropout}")
        if not (math.isfinite(float(aux_weight)) and float(aux_weight) >= 0):
            raise BioattnError(f"aux_weight must be >= 0, got {aux_weight}")
        self.steerable = isinstance(backbone, TopDownSteerable)
        if var_loss and not callable(getattr(backbone, "variational_loss", None)):
            raise BioattnError(f"var_loss needs an AbSViT backbone; {name} has no variational loss")
        take, _ = take_indices(backbone, len(info), default_indices(len(info)) if indices is None else indices)
        self.indices = sorted(set(take))
        self.in_channels = [int(info[i]["num_chs"]) for i in self.indices]
        self.reductions = [info[i].get("reduction") for i in self.indices]
        # the backbone's final norms belong to its last unit
        self.norm_last = self.indices[-1] == len(info) - 1
        self.backbone = backbone
        self.decode_head = UperHead(self.in_channels, self.num_classes, channels, dropout)
        self.auxiliary_head = FCNHead(self.in_channels[-1], self.num_classes, aux_channels, dropout)
        self.aux_weight = float(aux_weight)
        self.var_loss = bool(var_loss)
        self.img_size = _built_size(backbone)
        cfg = getattr(backbone, "pretrained_cfg", None) or {}
        self.fixed_input_size = bool(cfg.get("fixed_input_size", True)) and not getattr(
            backbone, "dynamic_img_size", False)
        first_conv = cfg.get("first_conv")
        conv = backbone.get_submodule(first_conv) if first_conv else None
        self.in_chans = conv.in_channels if isinstance(conv, nn.Conv2d) else 3
        self.name = PREFIX + name

    @staticmethod
    def _check_classes(num_classes: Any) -> int:
        num_classes = check_num_classes(num_classes)
        if num_classes < 1:
            raise BioattnError("a segmenter needs num_classes >= 1 (background counts as a class)")
        return num_classes

    # ---- features ----------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.in_chans:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise BioattnError(f"{self.name} expects a batch of images (B, {self.in_chans}, H, W), got {shape}")
        if self.fixed_input_size and self.img_size is not None and tuple(x.shape[-2:]) != self.img_size:
            h, w = self.img_size
            raise BioattnError(f"{self.name} was built for {h}x{w} inputs, got {x.shape[-2]}x{x.shape[-1]}: "
                               f"resize the input to {h}x{w}, or build it with img_size={x.shape[-2]}")

    def _backbone_prior(self, prior: Any) -> Any:
        if prior is None:
            return None
        if not self.steerable:
            raise BioattnError(f"{self.name}: the backbone has no top-down attention to steer with a prior")
        prior = torch.as_tensor(prior)
        if not (prior.is_floating_point() or isinstance(self.backbone.head, nn.Linear)):
            raise BioattnError(f"{self.name}: class priors index the backbone's classifier; build the segmenter "
                               "with prior_classes=N (and load ImageNet weights), or give prior vectors")
        return prior

    def _final_norm(self, feature: torch.Tensor) -> torch.Tensor:
        """The backbone's final norms (``norm``, then ``fc_norm``) over the channels of a map."""
        for attr in ("norm", "fc_norm"):
            norm = getattr(self.backbone, attr, None)
            if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
                feature = norm(feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return feature

    def forward_levels(self, x: torch.Tensor, prior: Any = None, prior_scale: float = 1.0,
                       record: list | None = None) -> list[torch.Tensor]:
        """The feature maps the heads take, finest first: the backbone's outputs at
        ``indices`` (``(B, C, h, w)``), the last through the final norms when it is the last
        unit. AbSViT: the top-down pass under ``prior``; ``record`` receives its block inputs and
        outputs."""
        self._check_input(x)
        kwargs: dict[str, Any] = {}
        if self.steerable:
            kwargs.update(prior=self._backbone_prior(prior), prior_scale=prior_scale)
            if record is not None:
                kwargs["record"] = record
        else:
            self._backbone_prior(prior)
        levels = list(self.backbone.forward_intermediates(x, indices=self.indices, output_fmt="NCHW",
                                                          intermediates_only=True, stop_early=True, **kwargs))
        if self.norm_last:
            levels[-1] = self._final_norm(levels[-1])
        return levels

    def _upsample(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    # ---- outputs -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, prior: Any = None, prior_scale: float = 1.0) -> torch.Tensor:
        """Per-pixel logits ``(B, K, H, W)`` at the input size."""
        return self._upsample(self.decode_head(self.forward_levels(x, prior, prior_scale)), x)

    def forward_readouts(self, x: torch.Tensor, readouts: int | None = None, prior: Any = None,
                         prior_scale: float = 1.0) -> ModelOutput:
        """``logits`` of the decode head, ``extras["aux_logits"]`` of the auxiliary head (both
        ``(B, K, H, W)``), ``aux_loss`` the backbone's variational loss when training with
        ``var_loss``."""
        if readouts not in (None, 1):
            raise BioattnError(f"{self.name} has one readout: readouts must be 1, got {readouts}")
        record: list | None = [] if self.var_loss and self.training else None
        levels = self.forward_levels(x, prior, prior_scale, record=record)
        logits = self._upsample(self.decode_head(levels), x)
        aux_logits = self._upsample(self.auxiliary_head(levels[-1]), x)
        aux_loss = self.backbone.variational_loss(record) if record else None
        return ModelOutput(logits=logits, aux_loss=aux_loss, extras={"aux_logits": aux_logits})

    def compute_loss(self, output: ModelOutput, target: torch.Tensor, criterion) -> torch.Tensor:
        """``criterion(logits) + aux_weight * criterion(aux_logits) + aux_loss``."""
        loss = criterion(output.logits, target)
        aux_logits = (output.extras or {}).get("aux_logits")
        if aux_logits is not None and self.aux_weight:
            loss = loss + self.aux_weight * criterion(aux_logits, target)
        if output.aux_loss is not None:
            loss = loss + output.aux_loss
        return loss

    # ---- timm conventions --------------------------------------------------------------
    def accepts_backbone_state(self, state: dict[str, torch.Tensor]) -> bool:
        """Whether ``state`` is a classifier's (no segmentation heads), to be loaded into the
        backbone alone (:meth:`load_backbone_state`)."""
        return not _is_segmenter_state(state)

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> str:
        """Load a classifier's ``state`` into the backbone (:func:`load_backbone_weights`);
        returns a note of what was loaded, resized and left out."""
        return load_backbone_weights(self, state)

    def get_classifier(self) -> nn.Module:
        return self.decode_head.conv_seg

    def reset_classifier(self, num_classes: int) -> None:
        """New classifiers for ``num_classes`` in both heads."""
        self.num_classes = self._check_classes(num_classes)
        for head in (self.decode_head, self.auxiliary_head):
            head.conv_seg = _classifier(head.conv_seg.in_channels, self.num_classes, device=head.conv_seg.weight.device)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The backbone's exemptions (position embedding, class token), under ``backbone.``."""
        inner = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{n}" for n in (inner() if callable(inner) else ())}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The backbone's parameter groups under ``backbone.``; the heads match none, so timm
        puts them in the last group, which layer-wise learning-rate decay leaves at the full
        rate (as it does a classifier)."""
        groups = self.backbone.group_matcher(coarse=coarse)
        out: dict[str, Any] = {}
        for key, matcher in groups.items():
            if isinstance(matcher, str):
                out[key] = _under_backbone(matcher)
            else:
                out[key] = [(_under_backbone(m[0]), *m[1:]) if isinstance(m, tuple) else _under_backbone(m)
                            for m in matcher]
        return out

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)


def _under_backbone(regex: str) -> str:
    """A parameter-name regex of the backbone (matched from the start of the name, as timm's
    grouping does) for the same parameters under ``backbone.``."""
    return r"^backbone\.(?:" + re.sub(r"(?<!\[)(?<!\\)\^", "", regex) + ")"


# ------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------
def _backbone_cfg(backbone: str):
    if not timm.is_model(backbone) or backbone.startswith(PREFIX):
        close = [n for n in timm.list_models(f"*{backbone.split('_')[0]}*") if not n.startswith(PREFIX)][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise BioattnError(f"unknown backbone '{backbone}'{hint}; `bioattn models` lists bioattn's")
    return timm.get_pretrained_cfg(backbone)


def segmentation_cfg(backbone: str) -> dict[str, Any]:
    """The ``pretrained_cfg`` of the segmenter on ``backbone``: 512x512 inputs with ImageNet
    statistics and 150 classes, or for backbones of 64x64 images the micro data's size,
    statistics and 11 classes."""
    cfg = _backbone_cfg(backbone)
    micro = cfg is not None and cfg.input_size[-1] <= MICRO_CFG["input_size"][-1]
    size = dict(MICRO_CFG, num_classes=MICRO_SEG_CLASSES) if micro else dict(
        num_classes=PAPER_SEG_CLASSES, input_size=(3, SEG_SIZE, SEG_SIZE), crop_pct=1.0,
        interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    first_conv = (cfg.first_conv if cfg is not None else None) or "patch_embed.proj"
    paper = (cfg.paper_ids if cfg is not None else None) or ""
    return model_cfg(**size, first_conv=f"backbone.{first_conv}", classifier="decode_head.conv_seg",
                     fixed_input_size=bool(cfg.fixed_input_size) if cfg is not None else True,
                     paper_ids=",".join(p for p in ("arXiv:1807.10221", paper) if p),
                     paper_name="Unified Perceptual Parsing for Scene Understanding",
                     origin_url="https://github.com/open-mmlab/mmsegmentation")


def create_segmenter(backbone: str, num_classes: int, img_size: int | None = None, channels: int = 512,
                     aux_channels: int = 256, dropout: float = 0.1, aux_weight: float = 0.4,
                     indices: int | Sequence[int] | None = None, *, prior_classes: int = 0,
                     var_loss: bool = False, **backbone_kwargs: Any) -> UperNetSegmenter:
    """A :class:`UperNetSegmenter` on the registered ``backbone`` built for ``img_size`` inputs
    (default: its segmentation size, 512, or 64 for the micro backbones) with
    ``backbone_kwargs`` (e.g. ``drop_path_rate``). The backbone has no classifier unless
    ``prior_classes`` asks for one to steer an AbSViT with class priors (it is then frozen)."""
    cfg = _backbone_cfg(backbone)
    seg_size = segmentation_cfg(backbone)["input_size"][-1]
    img_size = seg_size if img_size is None else img_size
    prior_classes = check_num_classes(prior_classes)
    args = dict(backbone_kwargs, num_classes=prior_classes)
    if cfg is None or tuple(cfg.input_size[-2:]) != image_pair(img_size):
        args["img_size"] = img_size  # only where needed, so backbones without the argument still build
    try:
        net = timm.create_model(backbone, **args)
    except BioattnError:
        raise
    except TypeError as exc:
        raise BioattnError(f"cannot build {backbone} as a segmentation backbone: {exc}") from None
    model = UperNetSegmenter(net, num_classes, indices=indices, channels=channels, aux_channels=aux_channels,
                             dropout=dropout, aux_weight=aux_weight, var_loss=var_loss)
    if prior_classes:
        if not model.steerable:
            raise BioattnError(f"prior_classes is for AbSViT backbones (class priors steer their top-down "
                               f"attention); {backbone} has none")
        net.head.requires_grad_(False)
    return model


def create_named_segmenter(name: str, pretrained_cfg: Any = None, pretrained_cfg_overlay: dict | None = None,
                           **kwargs: Any) -> UperNetSegmenter:
    """The segmenter ``upernet_<backbone>`` (registered or not) with its ``pretrained_cfg``;
    ``num_classes`` and ``img_size`` default to that cfg's, and for the micro backbones the head
    widths to :data:`MICRO_HEAD` (96 and 48 channels)."""
    backbone = name[len(PREFIX):] if name.startswith(PREFIX) else name
    name = PREFIX + backbone
    if timm.get_pretrained_cfg(name) is None:
        pretrained_cfg = pretrained_cfg or segmentation_cfg(backbone)
    cfg = resolve_pretrained_cfg(name, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=pretrained_cfg_overlay).to_dict()
    kwargs.setdefault("num_classes", cfg["num_classes"])
    kwargs["img_size"] = kwargs.get("img_size") or cfg["input_size"][-1]
    if cfg["input_size"][-1] <= MICRO_CFG["input_size"][-1]:
        kwargs = dict(MICRO_HEAD, **kwargs)
    model = create_segmenter(backbone, **kwargs)
    cfg.update(num_classes=model.num_classes, fixed_input_size=model.fixed_input_size)
    if model.img_size is not None:
        cfg["input_size"] = (cfg["input_size"][0], *model.img_size)
    model.pretrained_cfg = model.default_cfg = cfg
    return model


# ------------------------------------------------------------------------------------------
# ImageNet weights into the backbone
# ------------------------------------------------------------------------------------------
def _is_segmenter_state(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("decode_head.", "auxiliary_head.")) for k in state)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module, notes: list[str] | None = None,
                         what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` for the segmenters. A segmenter's checkpoint (it has
    segmentation heads) must fit as it is. A classifier's (bioattn's or a release, keys
    optionally under ``backbone.``) goes into the backbone through the backbone family's filter
    (position embedding, a GFNet's global filters resized), its classifier left out unless the
    backbone keeps one of the same shape for class priors; the segmentation heads keep the
    model's own weights. ``notes`` receives what was loaded, resized and left out."""
    model = unwrap(model)
    state = unwrap_state_dict(state_dict, what)
    if _is_segmenter_state(state):
        return fit_checkpoint(model, state, what)
    backbone = model.backbone
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    own = backbone.state_dict()
    classifiers = classifier_names(backbone) or ("head",)

    def in_classifier(key: str) -> bool:
        return any(key.startswith(c + ".") for c in classifiers)

    left_out = [k for k in state if in_classifier(k) and (k not in own or own[k].shape != state[k].shape)]
    fitted = {k: v for k, v in state.items() if k not in left_out}
    fresh = [k for k in own if k not in fitted and in_classifier(k)]
    fitted.update({k: own[k] for k in fresh})
    name = model_name(backbone)
    backbone_notes: list[str] = []
    fitted = family_checkpoint_filter(backbone)(fitted, backbone, backbone_notes,
                                                  what=f"{what} for the {name} backbone")
    if notes is not None:
        notes.append(f"loaded {len(fitted) - len(fresh)} tensors into the {name} backbone")
        notes.extend(backbone_notes)
        if left_out:
            notes.append(f"left out the classifier ({listing(left_out)})")
    heads = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    return {**{f"backbone.{k}": v for k, v in fitted.items()}, **heads}


UperNetSegmenter.checkpoint_filter = staticmethod(checkpoint_filter_fn)  # the family's filter, found by the loaders


def load_backbone_weights(segmenter: nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """Load a classification checkpoint (bioattn's or a released one, in the backbone's layout,
    keys optionally under ``backbone.``) into the segmenter's backbone with
    :func:`checkpoint_filter_fn`: the position embedding (and a GFNet's global filters) resized to
    the backbone's grid, the classifier left out unless the backbone keeps one of the same shape
    for class priors. Every other key must fit. Returns a one-line note of what was loaded and
    left out."""
    model = unwrap(segmenter)
    if not isinstance(model, UperNetSegmenter):
        raise BioattnError(f"load_backbone_weights needs a UperNetSegmenter, got {type(model).__name__}")
    state = unwrap_state_dict(state_dict)
    heads = [k for k in state if k.startswith(("decode_head.", "auxiliary_head."))]
    if heads:
        raise BioattnError(f"the checkpoint holds segmentation heads ({heads[0]}, ...): it is a segmenter's; "
                           "load it with load_state_dict")
    notes: list[str] = []
    model.load_state_dict(checkpoint_filter_fn(state, model, notes), strict=True)
    return "; ".join(notes + ["the segmentation heads start from random weights"])


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
BACKBONES = (
    "vit_micro_patch8_64", "absvit_micro_patch8_64", "rvt_micro", "gfnet_micro", "rvt_micro_vars_d",
    "vit_micro_convstem_64", "absvit_micro_convstem_64",
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
    "absvit_tiny_patch16_224", "absvit_small_patch16_224", "absvit_base_patch16_224",
    "rvt_tiny", "rvt_small", "deit_tiny_patch16_224_vars_d", "deit_small_patch16_224_vars_d", "gfnet_ti",
)

# the micro segmenters' tags name the zoo's weights (``upernet_rvt_micro.embedded``)
default_cfgs = generate_default_cfgs({name: cfg for b in BACKBONES
                                      for name, cfg in zoo_cfgs(PREFIX + b, segmentation_cfg(b)).items()})


def _create(backbone: str, pretrained: bool, kwargs: dict) -> UperNetSegmenter:
    check_weights_source(PREFIX + backbone, pretrained, kwargs)
    model = create_named_segmenter(PREFIX + backbone, **zoo_model_args(PREFIX + backbone, kwargs, pretrained))
    if pretrained:
        load_pretrained(model, pretrained_cfg=model.pretrained_cfg, num_classes=model.num_classes,
                        in_chans=model.in_chans, filter_fn=checkpoint_filter_fn)
    return model


@register_model
def upernet_vit_micro_patch8_64(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on the micro ViT (64x64 images, 6 blocks: levels after blocks 1, 3, 4, 6)."""
    return _create("vit_micro_patch8_64", pretrained, kwargs)


@register_model
def upernet_absvit_micro_patch8_64(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on the micro AbSViT's top-down pass (64x64 images)."""
    return _create("absvit_micro_patch8_64", pretrained, kwargs)


@register_model
def upernet_rvt_micro(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on the micro RVT's two stages (8x8 and 4x4 grids)."""
    return _create("rvt_micro", pretrained, kwargs)


@register_model
def upernet_rvt_micro_vars_d(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on the micro RVT with VARS-D attention."""
    return _create("rvt_micro_vars_d", pretrained, kwargs)


@register_model
def upernet_vit_micro_convstem_64(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on the micro ViT with a convolutional stem."""
    return _create("vit_micro_convstem_64", pretrained, kwargs)


@register_model
def upernet_absvit_micro_convstem_64(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on the micro AbSViT with a convolutional stem (its top-down pass)."""
    return _create("absvit_micro_convstem_64", pretrained, kwargs)


@register_model
def upernet_gfnet_micro(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on the micro GFNet's 4 blocks (8x8 grid)."""
    return _create("gfnet_micro", pretrained, kwargs)


@register_model
def upernet_vit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on ViT-Ti/16 at 512x512 (blocks 3, 6, 9, 12): the feedforward twin of
    ``upernet_absvit_tiny_patch16_224``."""
    return _create("vit_tiny_patch16_224", pretrained, kwargs)


@register_model
def upernet_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on ViT-S/16 at 512x512."""
    return _create("vit_small_patch16_224", pretrained, kwargs)


@register_model
def upernet_vit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on ViT-B/16 at 512x512 (the paper's ViT baseline)."""
    return _create("vit_base_patch16_224", pretrained, kwargs)


@register_model
def upernet_absvit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on AbSViT-Ti/16's top-down pass at 512x512."""
    return _create("absvit_tiny_patch16_224", pretrained, kwargs)


@register_model
def upernet_absvit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on AbSViT-S/16's top-down pass at 512x512."""
    return _create("absvit_small_patch16_224", pretrained, kwargs)


@register_model
def upernet_absvit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on AbSViT-B/16's top-down pass at 512x512 (the paper's AbSViT model)."""
    return _create("absvit_base_patch16_224", pretrained, kwargs)


@register_model
def upernet_rvt_tiny(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on RVT-Ti's two stages (strides 16 and 32) at 512x512."""
    return _create("rvt_tiny", pretrained, kwargs)


@register_model
def upernet_rvt_small(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on RVT-S at 512x512: one stage of 12 blocks, read as a ViT's (levels after blocks
    3, 6, 9, 12, all at stride 16)."""
    return _create("rvt_small", pretrained, kwargs)


@register_model
def upernet_deit_tiny_patch16_224_vars_d(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on DeiT-Ti with VARS-D attention at 512x512."""
    return _create("deit_tiny_patch16_224_vars_d", pretrained, kwargs)


@register_model
def upernet_deit_small_patch16_224_vars_d(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on DeiT-S with VARS-D attention at 512x512."""
    return _create("deit_small_patch16_224_vars_d", pretrained, kwargs)


@register_model
def upernet_gfnet_ti(pretrained: bool = False, **kwargs: Any) -> UperNetSegmenter:
    """UperNet on GFNet-Ti at 512x512 (blocks 3, 6, 9, 12 on a 32x32 grid)."""
    return _create("gfnet_ti", pretrained, kwargs)
