"""GFNet: global filter networks, with a choice of token mixer including the VARS attentions.

Paper: "Global Filter Networks for Image Classification", Yongming Rao, Wenliang Zhao, Zheng Zhu,
Jiwen Lu, Jie Zhou, NeurIPS 2021 (arXiv 2107.00645).
Official code: https://github.com/raoyongming/GFNet

VARS (the third backbone of "Visual Attention Emerges from Recurrent Sparse Reconstruction",
arXiv 2204.10962) replaces GFNet's token mixer; the VARS modules come from
:mod:`bioattn.models.vars`.

The computation (bioattn's code; the state-dict keys and shapes are those of the released
checkpoints, so they load with ``strict=True``):

* isotropic :class:`GFNet` (``gfnet_ti/xs/s/b``, ``gfnet_micro``): a ``patch_size`` conv patch
  embedding to an h x w token grid, a learned position embedding (no class token), ``depth``
  blocks, a final LayerNorm, the mean over tokens, a linear head;
* hierarchical :class:`GFNetPyramid` (``gfnet_h_ti/s/b``, ``gfnet_h_micro``): a 4x4 patch
  embedding with the position embedding, then four stages, each but the first entered through a
  2x2 stride-2 conv (``patch_embed.1..3``), blocks with a per-channel layer scale ``gamma``;
* a block is ``x + DropPath(gamma * MLP(LN2(mixer(LN1(x)))))``: one residual around the token
  mixer and the MLP together (``gamma`` = 1 in the isotropic model).

Token mixers (``mixer=``):

``"filter"`` (default), GFNet's global filter :class:`GlobalFilter`: per channel c,
``y_c = irfft2(W_c * rfft2(x_c))`` on the token grid (``norm='ortho'``, float32), ``W``
(``complex_weight``, ``(h, w//2+1, C, 2)``) one learned complex frequency response per channel.

``"vars_s"``, :class:`StaticFilterDictionary`. The global filter is one learned frequency
response per channel, i.e. a circular convolution with one learned kernel. VARS-S keeps, per
channel, a dictionary of five such global filters ``K_c1..K_c5`` and explains the (projected)
tokens ``v = Linear(x)`` as a sparse combination of them: it infers codes ``z_ck`` (maps on the
token grid) for ``min_z |v_c - sum_k K_ck^H * z_ck|^2 / 2 + lam |z|_1`` by ``num_step`` ISTA
iterations (default 3; ``lam`` 0.1, where RVT's VARS-S uses 3.5 on tokens that are not
layer-normalised), solved frequency by frequency, where each convolution is a
product, starting from the thresholded analysis ``b = K * v``; the mixer's output is the
reconstruction ``sum_k K_ck^H * z_ck`` filtered by one more learned global filter per channel
(``kernel2``), the counterpart of GFNet's ``complex_weight``. So where GFNet mixes tokens with a
fixed linear frequency response, VARS-S mixes them with the part of the input that a sparse code
over a filter dictionary can explain: an input-dependent, recurrent, competitive (shrinkage)
filter, which is what VARS reads as attention. Without iterations or shrinkage (``num_step=0``,
``lam=0``) the mixer is linear and shift-equivariant on the grid, a global filter again (analysis,
synthesis and ``kernel2`` composed). The mixer is
:class:`bioattn.models.vars.StaticFilterDictionary`, the attention part of RVT's
:class:`~bioattn.models.rvt.VARSSBlock`, without that block's BatchNorm, projection and MLP,
which GFNet's own block supplies (LN2, MLP).

``"vars_d"`` / ``"vars_sd"``, :class:`bioattn.models.vars.VARSDAttention` /
:class:`~bioattn.models.vars.VARSSDAttention` via ``make_attention`` (heads of 32 channels by
default, ``num_heads=``): sparse reconstruction of the tokens over a dictionary of random
features of the queries (plus, for vars_sd, a static dictionary with one row per token).

``model.attention_maps(x)``: for the VARS mixers one map per ISTA iteration, ``"iteration 0"`` ..
``"iteration T"`` (a token's value: the L2 norm over channels of its reconstruction from the
current sparse code, as for RVT); for the global filter the single map ``"filter response"``
(the L2 norm over channels of the filter's output per token).

Input size: the filters (and vars_s / vars_sd dictionaries) and the position embedding are
sized for the ``img_size`` the model is built with, so a model accepts only that size
(``fixed_input_size``); build it with ``img_size=`` for another size. Loading a state dict of
another image size into a model with the global filter resizes it as the authors' fine-tuning
code does: the position embedding bicubically over its token grid (``align_corners=False``),
each ``complex_weight`` bicubically over its frequency grid, real and imaginary parts as separate
channels, to ``(h, w//2+1)`` with ``align_corners=True``. :func:`checkpoint_filter_fn` does this
(after unwrapping the ``model`` entry of a released ``.pth``) for timm's loader
(``timm.create_model("gfnet_h_ti", pretrained=True, pretrained_cfg_overlay=dict(file="gfnet-h-ti.pth"))``)
and bioattn's, and ``model.load_state_dict`` does the same resizing.

``features_only=True`` gives the outputs of the last 3 blocks (isotropic) or of every stage
(hierarchical) from ``forward_intermediates``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import BioattnError
from .common import (
    MICRO_CFG,
    check_num_classes,
    check_output_fmt,
    check_state_dict,
    check_weights_source,
    fit_checkpoint,
    image_pair,
    init_linear_and_norm,
    model_cfg,
    prune_units,
    take_indices,
    unwrap_state_dict,
    zoo_cfgs,
)
from .vars import StaticFilterDictionary, make_attention

MIXERS = ("filter", "vars_s", "vars_d", "vars_sd")
# lam and num_step of each VARS mixer when not given: those of RVT, but for VARS-S a threshold
# for the LayerNorm'd tokens GFNet's mixer sees (RVT's 3.5 would zero every code at init)
MIXER_DEFAULTS: dict[str, dict[str, Any]] = {
    "vars_s": dict(lam=0.1, num_step=3),
    "vars_d": dict(lam=0.3, num_step=5),
    "vars_sd": dict(lam=0.3, num_step=5),
}


def _check_mixer(mixer: Any) -> None:
    if mixer not in MIXERS:
        raise BioattnError(f"unknown mixer {mixer!r}; choose one of {', '.join(MIXERS)}")


# ------------------------------------------------------------------------------------------
# token mixers
# ------------------------------------------------------------------------------------------
class GlobalFilter(nn.Module):
    """GFNet's global filter on ``(B, N, C)`` tokens laid out as the ``grid`` (h, w):
    ``irfft2(rfft2(x) * W)`` per channel, ``norm='ortho'``, computed in float32.

    ``complex_weight`` ``(h, w//2+1, C, 2)`` holds the real and imaginary parts of ``W``.
    """

    def __init__(self, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = tuple(grid)
        h, w = self.grid
        self.complex_weight = nn.Parameter(torch.randn(h, w // 2 + 1, dim, 2) * 0.02)
        self.record_maps = False
        self.recorded_maps: OrderedDict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h, w = self.grid
        spectrum = torch.fft.rfft2(x.float().view(B, h, w, C), dim=(1, 2), norm="ortho")
        spectrum = spectrum * torch.view_as_complex(self.complex_weight.float())
        out = torch.fft.irfft2(spectrum, s=(h, w), dim=(1, 2), norm="ortho").reshape(B, N, C)
        if self.record_maps:
            self.recorded_maps = OrderedDict([("filter response", out.detach().norm(dim=-1))])
        return out.to(x.dtype)


def make_mixer(mixer: str, dim: int, grid: tuple[int, int], *, num_heads: int | None = None,
               lam: float | None = None, num_step: int | None = None,
               rand_feat_dim_ratio: float = 2, proj_drop: float = 0.0) -> nn.Module:
    """The token mixer ``mixer`` for ``dim`` channels on a ``grid`` of tokens. ``lam`` and
    ``num_step`` default to :data:`MIXER_DEFAULTS`; ``num_heads`` (vars_d / vars_sd) to heads of 32
    channels."""
    _check_mixer(mixer)
    if mixer == "filter":
        return GlobalFilter(dim, grid)
    defaults = MIXER_DEFAULTS[mixer]
    lam = defaults["lam"] if lam is None else lam
    num_step = defaults["num_step"] if num_step is None else num_step
    if mixer == "vars_s":
        return StaticFilterDictionary(dim, grid, lam=lam, num_step=num_step)
    heads = num_heads or max(1, dim // 32)
    return make_attention(mixer, dim, heads, num_tokens=grid[0] * grid[1], lam=lam,
                          num_step=num_step, rand_feat_dim_ratio=rand_feat_dim_ratio,
                          proj_drop=proj_drop)


# ------------------------------------------------------------------------------------------
# blocks and embeddings
# ------------------------------------------------------------------------------------------
class Block(nn.Module):
    """``x + DropPath(gamma * MLP(LN2(mixer(LN1(x)))))``; ``gamma`` (C,) only with
    ``init_values`` (the hierarchical model's layer scale). The mixer is stored as ``filter``."""

    def __init__(self, dim: int, grid: tuple[int, int], mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, init_values: float | None = None, mixer: str = "filter",
                 **mixer_kwargs: Any) -> None:
        super().__init__()
        if init_values is not None:
            self.gamma = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma = None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = make_mixer(mixer, dim, grid, proj_drop=drop, **mixer_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm2(self.filter(self.norm1(x))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y)


class PatchEmbed(nn.Module):
    """Conv with kernel = stride = ``patch_size``; images to ``(B, N, C)`` tokens."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DownLayer(nn.Module):
    """Between stages of the hierarchical GFNet: 2x2 stride-2 conv on the ``grid`` of tokens."""

    def __init__(self, dim_in: int, dim_out: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.proj = nn.Conv2d(dim_in, dim_out, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, *self.grid)
        return self.proj(x).flatten(2).transpose(1, 2)


def _drop_path_rates(rate: float, n: int) -> list[float]:
    """Drop-path rates rising linearly from 0 to ``rate`` over ``n`` blocks."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def _resize_grid(t: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Bicubic resize of ``(h, w, ...)`` data over its first two axes."""
    h, w = t.shape[:2]
    rest = t.shape[2:]
    grid = t.reshape(1, h, w, -1).permute(0, 3, 1, 2).float()
    out = F.interpolate(grid, size=size, mode="bicubic", align_corners=align_corners)
    return out.permute(0, 2, 3, 1).reshape(*size, *rest).to(t.dtype)


# ------------------------------------------------------------------------------------------
# the models
# ------------------------------------------------------------------------------------------
class _GFNetBase(nn.Module):
    """What both GFNets share: input checks, classifier API, attention maps, checkpoint
    resizing. Subclasses set ``patch_embed``, ``pos_embed``, ``blocks``, ``norm``, ``head``,
    ``img_size``, ``grids`` and implement ``_mixer_blocks`` / ``_run_to``."""

    def _setup_common(self, img_size: int | Sequence[int], patch_size: int, in_chans: int,
                      num_classes: int, mixer: str, global_pool: str, head_drop_rate: float) -> None:
        _check_mixer(mixer)
        self.img_size = image_pair(img_size)
        H, W = self.img_size
        if H % patch_size or W % patch_size or H < patch_size or W < patch_size:
            raise BioattnError(f"img_size {H}x{W} does not tile into {patch_size}x{patch_size} patches")
        self._check_pool(global_pool)
        self.mixer = mixer
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.num_classes = check_num_classes(num_classes)
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.head_drop = nn.Dropout(head_drop_rate)
        self.register_load_state_dict_pre_hook(self._adapt_on_load)

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool not in ("avg", ""):
            raise BioattnError(f"GFNet pools by averaging tokens or not at all: global_pool must be "
                               f"'avg' or '', got '{global_pool}'")

    # input
    def _check_input(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.in_chans:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise BioattnError(f"GFNet expects a batch of images (B, {self.in_chans}, H, W), got {shape}")
        if tuple(x.shape[-2:]) != self.img_size:
            H, W = self.img_size
            raise BioattnError(
                f"this GFNet was built for {H}x{W} inputs (its global filters and position "
                f"embedding fit a {self.grids[0][0]}x{self.grids[0][1]} token grid), got "
                f"{x.shape[-2]}x{x.shape[-1]}: resize the input to {H}x{W}, or build the model with "
                f"img_size={x.shape[-2]} (a checkpoint of another size is resized on loading)")

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.pos_drop(self.first_embed(x) + self.pos_embed)

    def _normed(self, i: int) -> bool:
        """Whether ``forward_intermediates(norm=True)`` passes unit ``i``'s output through the
        final norm."""
        return True

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's ``forward_intermediates`` over the units (blocks of the isotropic GFNet, stages
        of the hierarchical one): each unit's output in ``indices`` (None: all, an int n: the last
        n) as ``(B, C, h, w)`` maps (``NCHW``) or ``(B, N, C)`` tokens (``NLC``), through the final
        norm if ``norm`` (the hierarchical GFNet: its last stage only). Returns the normalised last
        tokens and the list (only the list with ``intermediates_only``)."""
        check_output_fmt(output_fmt)
        n = len(self.blocks)
        take, last = take_indices(self, n, indices)
        x = self._embed(x)
        intermediates = []
        for i in range(last + 1 if stop_early else n):
            x = self._unit(i, x)
            if i in take:
                out = self.norm(x) if norm and self._normed(i) else x
                if output_fmt == "NCHW":
                    out = out.transpose(1, 2).reshape(out.shape[0], -1, *self._unit_grid(i))
                intermediates.append(out)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    # classifier API
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool`` ``'avg'`` or ``''``."""
        num_classes = check_num_classes(num_classes)
        if global_pool is not None:
            self._check_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        device = self.pos_embed.device
        self.head = (nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0
                     else nn.Identity())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens ``(B, N, C)`` of the last block (stage)."""
        return self.norm(self._run_to(self._embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean over tokens (``global_pool='avg'``; the official ``forward_features``), then the
        classifier; with ``global_pool=''`` the same for every token, ``(B, N, C or K)``."""
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay: the position embedding."""
        return {"pos_embed"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    # attention maps
    def attention_maps(self, x: torch.Tensor, **where: Any) -> OrderedDict[str, torch.Tensor]:
        """Per-token maps ``(B, h, w)`` of one block's mixer on its token grid: for the VARS
        mixers ``{"iteration 0": ..., "iteration T": ...}`` (per ISTA iteration, the L2 norm over
        channels of each token's reconstruction from the current sparse code), for the global
        filter ``{"filter response": ...}``. Runs without gradients in the current mode."""
        target, grid, run = self._map_target(**where)
        target.record_maps = True
        try:
            with torch.no_grad():
                run(x)
            recorded = target.recorded_maps
        finally:
            target.record_maps = False
            target.recorded_maps = None
        return OrderedDict((k, v.reshape(v.shape[0], *grid)) for k, v in recorded.items())

    def saliency(self, x: torch.Tensor, **where: Any) -> torch.Tensor:
        """The primary map ``(B, h, w)``: the last ISTA iteration (VARS mixers), the filter
        response (global filter)."""
        return next(reversed(self.attention_maps(x, **where).values()))

    # checkpoints of another image size
    @staticmethod
    def _adapt_on_load(module: _GFNetBase, state: dict[str, torch.Tensor], prefix: str,
                       local_metadata: Any, strict: bool, missing: list, unexpected: list,
                       errors: list) -> None:
        resize_to_grids(module, state, prefix)
        if not strict:
            return
        # torch hands every module strict=True; a classifier left out of the state is the one
        # gap a non-strict load (timm's, for other classes or features only) may leave
        absent = [prefix + k for k in module.state_dict() if k.startswith("head.") and prefix + k not in state]
        check_state_dict(module, state, "state dict (another variant?)", prefix=prefix, ignore=absent)


class GFNet(_GFNetBase):
    """Isotropic GFNet (``GFNet`` of the official code): patch embedding, position embedding,
    ``depth`` blocks on one token grid, LayerNorm, mean over tokens, linear head.

    ``mixer`` chooses the token mixer (``filter``, ``vars_s``, ``vars_d``, ``vars_sd``; see the
    module docstring); ``lam``, ``num_step``, ``num_heads``, ``rand_feat_dim_ratio`` configure
    the VARS ones. ``drop_path_rate`` rises linearly over the blocks; ``head_drop_rate`` is the
    dropout before the classifier (the official ``dropcls``).
    """

    def __init__(self, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 768, depth: int = 12,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 head_drop_rate: float = 0.0, global_pool: str = "avg", mixer: str = "filter",
                 lam: float | None = None, num_step: int | None = None, num_heads: int | None = None,
                 rand_feat_dim_ratio: float = 2) -> None:
        super().__init__()
        self._setup_common(img_size, patch_size, in_chans, num_classes, mixer, global_pool,
                           head_drop_rate)
        H, W = self.img_size
        grid = (H // patch_size, W // patch_size)
        self.grids = [grid]
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = _drop_path_rates(drop_path_rate, depth)
        mixer_kwargs = dict(lam=lam, num_step=num_step, num_heads=num_heads,
                            rand_feat_dim_ratio=rand_feat_dim_ratio) if mixer != "filter" else {}
        self.blocks = nn.ModuleList(
            Block(embed_dim, grid, mlp_ratio, drop=drop_rate, drop_path=rates[i], mixer=mixer,
                  **mixer_kwargs)
            for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}")
                             for i in range(depth)]
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_linear_and_norm)

    def first_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x)

    def _run_to(self, x: torch.Tensor, last: int | None = None) -> torch.Tensor:
        last = len(self.blocks) - 1 if last is None else last
        for blk in self.blocks[: last + 1]:
            x = self._run(blk, x)
        return x

    def _map_target(self, block: int = -1):
        n = len(self.blocks)
        if not -n <= block < n:
            raise BioattnError(f"block {block} out of range: the model has {n} blocks")
        block %= n
        return (self.blocks[block].filter, self.grids[0],
                lambda x: self._run_to(self._embed(x), block))

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning rates: the embeddings, each block, the final
        norm."""
        return dict(stem=r"^pos_embed|^patch_embed",
                    blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def _unit(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.blocks[i], x)

    def _unit_grid(self, i: int) -> tuple[int, int]:
        return self.grids[0]

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last one ``indices`` asks for (and the norm and head)."""
        take, last = take_indices(self, len(self.blocks), indices)
        self.blocks = self.blocks[: last + 1]
        self.feature_info = self.feature_info[: last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


class GFNetPyramid(_GFNetBase):
    """Hierarchical GFNet (``GFNetPyramid`` of the official code): a ``patch_size`` patch embedding
    with the position embedding, four stages at ``embed_dim[s]`` channels on grids halved from
    stage to stage by 2x2 stride-2 convs, blocks with layer scale (``init_values``),
    LayerNorm, mean over tokens, linear head. Mixer arguments as :class:`GFNet`."""

    def __init__(self, img_size: int | Sequence[int] = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: Sequence[int] = (64, 128, 256, 512),
                 depth: Sequence[int] = (2, 2, 10, 4), mlp_ratio: Sequence[float] = (4, 4, 4, 4),
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, init_values: float = 1e-3,
                 head_drop_rate: float = 0.0, global_pool: str = "avg", mixer: str = "filter",
                 lam: float | None = None, num_step: int | None = None, num_heads: int | None = None,
                 rand_feat_dim_ratio: float = 2) -> None:
        super().__init__()
        if isinstance(mlp_ratio, (int, float)):
            mlp_ratio = [mlp_ratio] * len(depth)
        if not len(embed_dim) == len(depth) == len(mlp_ratio):
            raise BioattnError("embed_dim, depth and mlp_ratio need one entry per stage")
        self._setup_common(img_size, patch_size, in_chans, num_classes, mixer, global_pool,
                           head_drop_rate)
        H, W = self.img_size
        grid = (H // patch_size, W // patch_size)
        self.grids = []
        for _ in embed_dim:
            if min(grid) < 1:
                raise BioattnError(f"img_size {H}x{W} is too small for {len(embed_dim)} stages")
            self.grids.append(grid)
            grid = (grid[0] // 2, grid[1] // 2)
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim[-1]
        self.patch_embed = nn.ModuleList([PatchEmbed(in_chans, embed_dim[0], patch_size)])
        for s in range(1, len(embed_dim)):
            self.patch_embed.append(DownLayer(embed_dim[s - 1], embed_dim[s], self.grids[s - 1]))
        first = self.grids[0]
        self.pos_embed = nn.Parameter(torch.zeros(1, first[0] * first[1], embed_dim[0]))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = _drop_path_rates(drop_path_rate, sum(depth))
        mixer_kwargs = dict(lam=lam, num_step=num_step, num_heads=num_heads,
                            rand_feat_dim_ratio=rand_feat_dim_ratio) if mixer != "filter" else {}
        self.blocks = nn.ModuleList()
        index = 0
        for s, (dim, n) in enumerate(zip(embed_dim, depth)):
            self.blocks.append(nn.Sequential(*[
                Block(dim, self.grids[s], mlp_ratio[s], drop=drop_rate, drop_path=rates[index + i],
                      init_values=init_values, mixer=mixer, **mixer_kwargs)
                for i in range(n)]))
            index += n
        self.norm = nn.LayerNorm(embed_dim[-1], eps=1e-6)
        self.head = nn.Linear(embed_dim[-1], self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=dim, reduction=patch_size * 2 ** s, module=f"blocks.{s}")
                             for s, dim in enumerate(embed_dim)]
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_linear_and_norm)

    def first_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed[0](x)

    def _stage(self, s: int, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        if s > 0:
            x = self.patch_embed[s](x)
        blocks = self.blocks[s]
        for blk in blocks[: len(blocks) if upto is None else upto + 1]:
            x = self._run(blk, x)
        return x

    def _run_to(self, x: torch.Tensor, last: int | None = None) -> torch.Tensor:
        last = len(self.blocks) - 1 if last is None else last
        for s in range(last + 1):
            x = self._stage(s, x)
        return x

    def _map_target(self, stage: int = 0, block: int = -1):
        n_stages = len(self.blocks)
        if not -n_stages <= stage < n_stages:
            raise BioattnError(f"stage {stage} out of range: the model has {n_stages} stages")
        stage %= n_stages
        blocks = self.blocks[stage]
        if not -len(blocks) <= block < len(blocks):
            raise BioattnError(f"block {block} out of range: stage {stage} has {len(blocks)} blocks")
        block %= len(blocks)

        def run(x: torch.Tensor) -> torch.Tensor:
            x = self._run_to(self._embed(x), stage - 1) if stage > 0 else self._embed(x)
            return self._stage(stage, x, upto=block)

        return blocks[block].filter, self.grids[stage], run

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning rates: the first embedding, each block (each
        stage when ``coarse``) with the downsampling conv before its stage, the final norm."""
        if coarse:
            blocks = [(r"^blocks\.(\d+)", None), (r"^patch_embed\.([1-9]\d*)\.", None)]
        else:
            blocks = [(r"^blocks\.(\d+)\.(\d+)", None), (r"^patch_embed\.([1-9]\d*)\.", (0,))]
        return dict(stem=r"^pos_embed|^patch_embed\.0\.", blocks=blocks + [(r"^norm", (99999,))])

    def _unit(self, s: int, x: torch.Tensor) -> torch.Tensor:
        return self._stage(s, x)

    def _unit_grid(self, s: int) -> tuple[int, int]:
        return self.grids[s]

    def _normed(self, s: int) -> bool:
        return s == len(self.blocks) - 1  # the final norm is sized for the last stage

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last one ``indices`` asks for (and the norm and head)."""
        def cut(last: int) -> None:
            self.blocks = self.blocks[: last + 1]
            self.patch_embed = self.patch_embed[: last + 1]

        return prune_units(self, len(self.blocks), indices, prune_norm, prune_head, cut)


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------
def resize_to_grids(model: _GFNetBase, state: dict[str, torch.Tensor], prefix: str = "",
                    notes: list[str] | None = None) -> None:
    """Resize, in ``state`` (in place), the position embedding and the global filters of a
    checkpoint of another image size to the model's grids, as the authors' fine-tuning code does
    (see the module docstring); keys under ``prefix``. Entries whose channel count differs from
    the model's are left alone (the strict check then names them)."""
    own = model.state_dict()
    key = prefix + "pos_embed"
    before = tuple(state[key].shape) if key in state else None
    if key in state and state[key].ndim == 3 and state[key].shape != own["pos_embed"].shape:
        pos = state[key]
        side = math.isqrt(pos.shape[1])
        if side * side == pos.shape[1] and pos.shape[2] == own["pos_embed"].shape[2]:
            grid = _resize_grid(pos[0].reshape(side, side, -1), model.grids[0], align_corners=False)
            state[key] = grid.reshape(1, -1, pos.shape[2])
    for name, target in own.items():
        key = prefix + name
        if not name.endswith("filter.complex_weight") or key not in state:
            continue
        weight = state[key]
        if weight.ndim == 4 and weight.shape != target.shape and weight.shape[2:] == target.shape[2:]:
            state[key] = _resize_grid(weight, tuple(target.shape[:2]), align_corners=True)
    after = tuple(state[prefix + "pos_embed"].shape) if before is not None else None
    if notes is not None and before is not None and before != after:
        notes.append(f"position embedding and global filters resized ({before[1]} to {after[1]} tokens)")


def checkpoint_filter_fn(state_dict: dict[str, Any], model: _GFNetBase, notes: list[str] | None = None,
                         what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` for GFNet: the state dict of a released ``.pth`` (its
    ``model`` entry) or a bioattn checkpoint, with the position embedding and the global filters
    of another image size resized to the model's grids (:func:`resize_to_grids`; a note appended
    to ``notes``), checked to fit the model (``what`` names the checkpoint in its errors)."""
    state = unwrap_state_dict(state_dict, what)
    resize_to_grids(model, state, notes=notes)
    return fit_checkpoint(model, state, what)


_GFNetBase.checkpoint_filter = staticmethod(checkpoint_filter_fn)  # the family's filter, found by the loaders


# ------------------------------------------------------------------------------------------
# timm registration
# ------------------------------------------------------------------------------------------
# constructor arguments of the official training script (main_gfnet.py) per released variant
_ARCHS: dict[str, dict[str, Any]] = {
    "gfnet_ti": dict(patch_size=16, embed_dim=256, depth=12, mlp_ratio=4),
    "gfnet_xs": dict(patch_size=16, embed_dim=384, depth=12, mlp_ratio=4),
    "gfnet_s": dict(patch_size=16, embed_dim=384, depth=19, mlp_ratio=4, drop_path_rate=0.15),
    "gfnet_b": dict(patch_size=16, embed_dim=512, depth=19, mlp_ratio=4, drop_path_rate=0.25),
    "gfnet_h_ti": dict(patch_size=4, embed_dim=[64, 128, 256, 512], depth=[3, 3, 10, 3],
                       mlp_ratio=[4, 4, 4, 4], drop_path_rate=0.1, init_values=1e-3),
    "gfnet_h_s": dict(patch_size=4, embed_dim=[96, 192, 384, 768], depth=[3, 3, 10, 3],
                      mlp_ratio=[4, 4, 4, 4], drop_path_rate=0.2, init_values=1e-5),
    "gfnet_h_b": dict(patch_size=4, embed_dim=[96, 192, 384, 768], depth=[3, 3, 27, 3],
                      mlp_ratio=[4, 4, 4, 4], drop_path_rate=0.4, init_values=1e-6),
    # 64x64 inputs of the embedded data: an 8x8 grid of 8x8 patches
    "gfnet_micro": dict(img_size=64, patch_size=8, embed_dim=96, depth=4, mlp_ratio=2),
    "gfnet_micro_vars_s": dict(img_size=64, patch_size=8, embed_dim=96, depth=4, mlp_ratio=2, mixer="vars_s"),
    # 64x64 inputs: 16x16, 8x8, 4x4 and 2x2 grids
    "gfnet_h_micro": dict(img_size=64, patch_size=4, embed_dim=[16, 32, 64, 96], depth=[1, 1, 2, 1],
                          mlp_ratio=[2, 2, 2, 2], init_values=1e-2),
}
# which official architecture each registered name reproduces
OFFICIAL_NAMES = {"gfnet_ti": "gfnet-ti", "gfnet_xs": "gfnet-xs", "gfnet_s": "gfnet-s",
                  "gfnet_b": "gfnet-b", "gfnet_h_ti": "gfnet-h-ti", "gfnet_h_s": "gfnet-h-s",
                  "gfnet_h_b": "gfnet-h-b"}


def _cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    first_conv = "patch_embed.0.proj" if name.startswith("gfnet_h_") else "patch_embed.proj"
    return model_cfg(**{"first_conv": first_conv, "classifier": "head", "fixed_input_size": True,
                        "paper_ids": "arXiv:2107.00645",
                        "paper_name": "Global Filter Networks for Image Classification",
                        "origin_url": "https://github.com/raoyongming/GFNet", **kwargs})


default_cfgs = generate_default_cfgs({
    **{name: _cfg(name) for name in _ARCHS if "_micro" not in name},
    **zoo_cfgs("gfnet_micro", _cfg("gfnet_micro", **MICRO_CFG)),
    **zoo_cfgs("gfnet_micro_vars_s", _cfg("gfnet_micro", **MICRO_CFG, paper_ids="arXiv:2107.00645,arXiv:2204.10962")),
    "gfnet_h_micro": _cfg("gfnet_h_micro", **MICRO_CFG),
})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> _GFNetBase:
    check_weights_source(variant, pretrained, kwargs)
    args = dict(_ARCHS[variant])
    args.update(kwargs)
    _check_mixer(args.get("mixer", "filter"))
    hierarchical = variant.startswith("gfnet_h_")
    cls = GFNetPyramid if hierarchical else GFNet
    size = image_pair(args.get("img_size", 224))
    overlay = dict(args.pop("pretrained_cfg_overlay", None) or {})
    overlay.setdefault("input_size", (args.get("in_chans", 3), *size))
    default_indices = tuple(range(len(args["depth"]))) if hierarchical else min(3, args["depth"])
    feature_cfg = dict(out_indices=args.pop("out_indices", default_indices), feature_cls="getter")
    return build_model_with_cfg(cls, variant, pretrained, pretrained_cfg_overlay=overlay,
                                pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg, **args)


@register_model
def gfnet_ti(pretrained: bool = False, **kwargs: Any) -> GFNet:
    """GFNet-Ti: 12 blocks at 256 channels on a 14x14 grid (ImageNet top-1 74.6)."""
    return _create("gfnet_ti", pretrained, **kwargs)


@register_model
def gfnet_xs(pretrained: bool = False, **kwargs: Any) -> GFNet:
    """GFNet-XS: 12 blocks at 384 channels (78.6)."""
    return _create("gfnet_xs", pretrained, **kwargs)


@register_model
def gfnet_s(pretrained: bool = False, **kwargs: Any) -> GFNet:
    """GFNet-S: 19 blocks at 384 channels, drop-path 0.15 (80.0)."""
    return _create("gfnet_s", pretrained, **kwargs)


@register_model
def gfnet_b(pretrained: bool = False, **kwargs: Any) -> GFNet:
    """GFNet-B: 19 blocks at 512 channels, drop-path 0.25 (80.7)."""
    return _create("gfnet_b", pretrained, **kwargs)


@register_model
def gfnet_h_ti(pretrained: bool = False, **kwargs: Any) -> GFNetPyramid:
    """GFNet-H-Ti: stages of 3/3/10/3 blocks at 64/128/256/512 channels, layer scale 1e-3 (80.1)."""
    return _create("gfnet_h_ti", pretrained, **kwargs)


@register_model
def gfnet_h_s(pretrained: bool = False, **kwargs: Any) -> GFNetPyramid:
    """GFNet-H-S: stages of 3/3/10/3 blocks at 96/192/384/768 channels, layer scale 1e-5 (81.5)."""
    return _create("gfnet_h_s", pretrained, **kwargs)


@register_model
def gfnet_h_b(pretrained: bool = False, **kwargs: Any) -> GFNetPyramid:
    """GFNet-H-B: stages of 3/3/27/3 blocks at 96/192/384/768 channels, layer scale 1e-6 (82.9)."""
    return _create("gfnet_h_b", pretrained, **kwargs)


@register_model
def gfnet_micro(pretrained: bool = False, **kwargs: Any) -> GFNet:
    """A small isotropic GFNet for 64x64 images on a CPU: 8x8 patches (8x8 grid), 4 blocks at 96
    channels, MLP ratio 2."""
    return _create("gfnet_micro", pretrained, **kwargs)


@register_model
def gfnet_micro_vars_s(pretrained: bool = False, **kwargs: Any) -> GFNet:
    """The micro GFNet with VARS-S in place of the global filter in every block."""
    return _create("gfnet_micro_vars_s", pretrained, **kwargs)


@register_model
def gfnet_h_micro(pretrained: bool = False, **kwargs: Any) -> GFNetPyramid:
    """A small hierarchical GFNet for 64x64 images on a CPU: 4x4 patches, 1/1/2/1 blocks at
    16/32/64/96 channels on 16x16, 8x8, 4x4 and 2x2 grids, MLP ratio 2, layer scale 1e-2."""
    return _create("gfnet_h_micro", pretrained, **kwargs)
