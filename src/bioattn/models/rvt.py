"""RVT, the Robust Vision Transformer, with a choice of attention (VARS among them).

Paper: "Towards Robust Vision Transformer", Xiaofeng Mao, Gege Qi, Yuefeng Chen, Xiaodan Li,
Ranjie Duan, Shaokai Ye, Yuan He, Hui Xue, CVPR 2022 (arXiv 2105.07926).
Official code: https://github.com/alibaba/easyrobust (first released at
https://github.com/vtddggg/Robust-Vision-Transformer, the code the VARS authors built on).

RVT is the backbone in which "Visual Attention Emerges from Recurrent Sparse Reconstruction"
(ICML 2022, :mod:`bioattn.models.vars`) evaluates its attentions. This module holds the RVT
PoolingTransformer (:class:`RVT`): a convolutional stem, stages of pre-norm blocks (:class:`Block`,
with RVT's convolutional MLP) on a token grid with a pooling convolution between stages, and
:class:`VARSSBlock`, the whole block that ``vars_s`` puts in place of a block. It is registered
with timm as ``rvt_tiny``, ``rvt_small``, ``rvt_base`` (+ ``*_plus`` with the learned attention
mask) and ``rvt_micro`` (64 x 64 inputs, an 8 x 8 token grid, trains on two CPU cores), all
taking ``attention=`` (``self-att``, ``perf``, ``vars_s``, ``vars_d``, ``vars_sd``) and the VARS
arguments::

    timm.create_model('rvt_tiny', attention='vars_d', num_classes=10)

State-dict keys follow the authors' released checkpoints, so those ``.pth`` files load with
``strict=True``: ``timm.create_model("rvt_small", attention="vars_d", pretrained=True,
pretrained_cfg_overlay=dict(file="vars_d_small.pth"))`` or ``bioattn.checkpoint.load_weights``
(the checkpoint filter, :func:`~bioattn.models.common.checkpoint_filter_fn`, unwraps the
``model`` entry). ``features_only=True`` gives unit outputs from ``forward_intermediates``, as
timm's models of each kind do: the last 3 blocks of an isotropic RVT (RVT-S, RVT-B: one stage),
every stage of a hierarchical one (RVT-Ti) (``out_indices`` chooses others).

Attention maps (``model.attention_maps(x)``) are those of the chosen attention
(:mod:`bioattn.models.vars`: one map per ISTA iteration for ``vars_*``, the attention each token
receives for ``self-att`` and ``perf``), taken in the last block of the chosen stage (default:
stage 0, the finest token grid, which holds most of the blocks).
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any

import torch
from timm.layers import DropPath, Mlp
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import BioattnError
from .common import (
    MICRO_CFG,
    check_num_classes,
    check_output_fmt,
    check_weights_source,
    checkpoint_filter_fn,
    image_pair,
    init_linear_and_norm,
    model_cfg,
    prune_units,
    take_indices,
    zoo_cfgs,
)
from .vars import (
    FIXED_GRID_ATTENTIONS,
    StaticFilterDictionary,
    check_attention,
    check_vars_args,
    make_attention,
)


class TokenBatchNorm(nn.Module):
    """BatchNorm over the channels of ``(B, N, C)`` tokens (statistics over batch and tokens)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class ConvMlp(nn.Module):
    """RVT's MLP on the token grid: 1x1 conv -> BN -> GELU -> depthwise 3x3 -> BN -> GELU ->
    1x1 conv -> BN."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.bn3 = nn.BatchNorm2d(dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, grid[0], grid[1])
        x = self.drop(self.act(self.bn1(self.fc1(x))))
        x = self.act(self.bn2(self.dwconv(x)))
        x = self.drop(self.bn3(self.fc2(x)))
        return x.flatten(2).transpose(1, 2)


def _make_mlp(dim: int, mlp_ratio: float, drop: float) -> nn.Module:
    hidden = int(dim * mlp_ratio)
    if dim == 768:  # RVT-B keeps ViT's token MLP
        return Mlp(dim, hidden, act_layer=nn.GELU, drop=drop)
    return ConvMlp(dim, hidden, drop=drop)


def _run_mlp(mlp: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return mlp(x, grid) if isinstance(mlp, ConvMlp) else mlp(x)


class Block(nn.Module):
    """Pre-norm transformer block of RVT: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attention: str,
                 grid: tuple[int, int], drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, mask_tokens: int = 0, **vars_kwargs: Any) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = make_attention(attention, dim, num_heads, num_tokens=grid[0] * grid[1],
                                   mask_tokens=mask_tokens, attn_drop=attn_drop, proj_drop=drop,
                                   **vars_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _make_mlp(dim, mlp_ratio, drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(_run_mlp(self.mlp, self.norm2(x), grid))


class VARSSBlock(StaticFilterDictionary):
    """``vars_s``: a whole RVT block whose attention is :class:`StaticFilterDictionary`:
    ``y = x_in + proj(BN1(r))``, ``out = y + mlp(BN2(y))`` with BatchNorm over channels instead
    of LayerNorm. ``kernel_norm`` is kept for checkpoint compatibility and not used.
    """

    def __init__(self, dim: int, grid: tuple[int, int], mlp_ratio: float = 4.0,
                 lam: float = 3.5, num_step: int = 3, drop: float = 0.0, drop_path: float = 0.0,
                 L_update_interval: int = 100, L_update_rate: float = 0.1) -> None:
        super().__init__(dim, grid, lam=lam, num_step=num_step, L_update_interval=L_update_interval,
                         L_update_rate=L_update_rate)
        self.norm1 = TokenBatchNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("kernel_norm", torch.tensor(1.0))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = TokenBatchNorm(dim)
        self.mlp = _make_mlp(dim, mlp_ratio, drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        y = x + self.drop_path(self.proj(self.norm1(self.reconstruct(x))))
        return y + self.drop_path(_run_mlp(self.mlp, self.norm2(y), self.grid))


class ConvStem(nn.Module):
    """Conv(3->32, k7, s2, p2) -> BN -> MaxPool(k3, s2, p1) -> Conv(32->C, k=s=stride/4)
    (``chans`` replaces the 32 in small models)."""

    def __init__(self, in_chans: int, dim: int, stride: int = 16, chans: int = 32) -> None:
        super().__init__()
        last = stride // 4
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, chans, kernel_size=7, stride=2, padding=2),
            nn.BatchNorm2d(chans),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(chans, dim, kernel_size=last, stride=last),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class HeadPooling(nn.Module):
    """Between stages: depthwise-grouped Conv(C_s -> C_{s+1}, k3, s2, p1)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module):
    """Leaves the batch-norm running statistics of ``module`` as they were on entering: the
    recomputation of a block for gradient checkpointing must not count its batch a second time."""
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _recompute_contexts(block: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    return contextlib.nullcontext(), _running_stats_kept(block)


class Stage(nn.Module):
    """``depth`` blocks on one token grid; takes and returns ``(B, C, H, W)`` maps. With
    ``grad_checkpointing`` each block is recomputed in the backward pass (its batch norms'
    running statistics updated once, as without)."""

    def __init__(self, blocks: list[nn.Module], grid: tuple[int, int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.grid = grid
        self.grad_checkpointing = False

    def forward_blocks(self, x: torch.Tensor, take: Collection[int] = (),
                       stop: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The map after the first ``stop`` blocks (None: all) and the maps after each block in
        ``take``."""
        B, C, H, W = x.shape
        grid = (H, W)
        x = x.flatten(2).transpose(1, 2)
        use_checkpoint = self.grad_checkpointing and torch.is_grad_enabled()
        taken = []
        for i, blk in enumerate(self.blocks):
            if stop is not None and i >= stop:
                break
            if use_checkpoint:
                x = checkpoint(blk, x, grid, use_reentrant=False,
                               context_fn=functools.partial(_recompute_contexts, blk))
            else:
                x = blk(x, grid)
            if i in take:
                taken.append(x.transpose(1, 2).reshape(B, C, H, W))
        return x.transpose(1, 2).reshape(B, C, H, W), taken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(x)[0]


class RVT(nn.Module):
    """RVT PoolingTransformer ("Towards Robust Vision Transformer") with a choice of attention.

    Conv stem to a token grid at 1/``stem_stride`` of the image, stages of blocks at
    ``base_dims[s] * heads[s]`` channels with a pooling conv between stages, global average
    pool -> LayerNorm -> Linear. No position embedding, no class token.

    ``attention`` is one of ``self-att``, ``perf``, ``vars_s``, ``vars_d``, ``vars_sd``;
    ``lam``, ``num_step`` (ISTA iterations), ``rand_feat_dim_ratio`` configure vars_d/vars_sd,
    and ``compile_ista=True`` runs their sparse coding compiled by ``torch.compile``;
    vars_s uses its own ``s_lam`` (3.5) and ``s_num_step`` (3). vars_s and vars_sd learn
    dictionaries tied to the token grid, and the ``*_plus`` models a learned attention mask over
    its token pairs, so they only accept images of ``img_size``; the others run at any size.

    ``global_pool='avg'`` averages the token grid before the norm and the classifier; ``''``
    keeps the grid: ``forward_head`` then normalises and classifies every token, giving
    ``(B, K, H, W)`` maps. ``forward_intermediates`` returns the outputs of units, as timm's
    models of each kind do: the blocks of an isotropic RVT (one stage: RVT-S, RVT-B, as a ViT's
    blocks), the stages of a hierarchical one (RVT-Ti, as PiT's stages).
    """

    def __init__(self, img_size: int | Sequence[int] = 224, base_dims: Sequence[int] = (32, 32),
                 depth: Sequence[int] = (10, 2), heads: Sequence[int] = (6, 12),
                 mlp_ratio: float = 4.0, num_classes: int = 1000, in_chans: int = 3,
                 attention: str = "self-att", lam: float = 0.3, num_step: int = 5,
                 rand_feat_dim_ratio: float = 2, s_lam: float = 3.5, s_num_step: int = 3,
                 compile_ista: bool = False, masked_blocks: int = 0, stem_stride: int = 16, stem_chans: int = 32,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "avg") -> None:
        super().__init__()
        check_attention(attention)
        # every VARS argument is checked, also those the chosen attention leaves unused
        check_vars_args(lam, num_step, rand_feat_dim_ratio, compile_ista)
        check_vars_args(s_lam, s_num_step)
        if global_pool not in ("avg", ""):
            raise BioattnError(
                f"RVT pools by averaging tokens: global_pool must be 'avg', got '{global_pool}'")
        if not (len(base_dims) == len(depth) == len(heads)):
            raise BioattnError("base_dims, depth and heads need one entry per stage")
        if stem_stride not in (4, 8, 16):
            raise BioattnError(f"stem_stride must be 4, 8 or 16, got {stem_stride}")
        self.img_size = image_pair(img_size)
        self.attention = attention
        self.stem_stride = stem_stride
        H, W = self.img_size
        fixed = attention in FIXED_GRID_ATTENTIONS or masked_blocks > 0
        if H % stem_stride or W % stem_stride:
            if fixed:
                raise BioattnError(
                    f"img_size {H}x{W} does not tile into a token grid: {attention} needs a fixed grid, "
                    f"so the image side must be a multiple of {stem_stride} (e.g. {stem_stride * 14})")
        self.fixed_grid = fixed
        self.num_classes = check_num_classes(num_classes)
        self.global_pool = global_pool
        self.grad_checkpointing = False
        dims = [b * h for b, h in zip(base_dims, heads)]
        self.num_features = self.head_hidden_size = self.embed_dim = dims[-1]
        self.patch_embed = ConvStem(in_chans, dims[0], stem_stride, stem_chans)
        self.patch_embed.img_size = self.img_size
        self.pos_drop = nn.Dropout(drop_rate)
        grid = (H // stem_stride, W // stem_stride)
        self.grids: list[tuple[int, int]] = []
        total = sum(depth)
        rates = [drop_path_rate * i / total for i in range(total)]
        index = 0
        self.transformers = nn.ModuleList()
        self.pools = nn.ModuleList()
        vars_kwargs = dict(lam=lam, num_step=num_step, rand_feat_dim_ratio=rand_feat_dim_ratio,
                           compile_ista=compile_ista)
        for s, (dim, n_blocks, n_heads) in enumerate(zip(dims, depth, heads)):
            blocks: list[nn.Module] = []
            for i in range(n_blocks):
                if attention == "vars_s":
                    blocks.append(VARSSBlock(dim, grid, mlp_ratio, lam=s_lam, num_step=s_num_step,
                                             drop=drop_rate, drop_path=rates[index]))
                else:
                    mask = grid[0] * grid[1] if (s == 0 and i < masked_blocks) else 0
                    blocks.append(Block(dim, n_heads, mlp_ratio, attention, grid, drop=drop_rate,
                                        attn_drop=attn_drop_rate, drop_path=rates[index],
                                        mask_tokens=mask, **vars_kwargs))
                index += 1
            self.transformers.append(Stage(blocks, grid))
            self.grids.append(grid)
            if s < len(dims) - 1:
                self.pools.append(HeadPooling(dim, dims[s + 1]))
                grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
        self.isotropic = len(dims) == 1
        if self.isotropic:
            self.feature_info = [dict(num_chs=dims[0], reduction=stem_stride, module=f"transformers.0.blocks.{i}")
                                 for i in range(depth[0])]
        else:
            self.feature_info = [dict(num_chs=dim, reduction=stem_stride * 2 ** s, module=f"transformers.{s}")
                                 for s, dim in enumerate(dims)]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_linear_and_norm)

    # timm classifier API
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool`` ``'avg'`` or ``''``."""
        num_classes = check_num_classes(num_classes)
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise BioattnError(f"RVT pools by averaging tokens or not at all: global_pool must be "
                                   f"'avg' or '', got '{global_pool}'")
            self.global_pool = global_pool
        self.num_classes = num_classes
        device = self.patch_embed.proj[0].weight.device
        self.head = (nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0
                     else nn.Identity())

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay: none (RVT has no position embedding or class
        token)."""
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning rates: the stem, each block (each stage when
        ``coarse``) with the pooling after it, then the final norm."""
        if coarse:
            blocks = [(r"^transformers\.(\d+)", None), (r"^pools\.(\d+)", (0.5,))]
        else:
            blocks = [(r"^transformers\.(\d+)\.blocks\.(\d+)", None), (r"^pools\.(\d+)", (99998,))]
        return dict(stem=r"^patch_embed", blocks=blocks + [(r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.transformers:
            stage.grad_checkpointing = enable

    def _check_input(self, x: torch.Tensor) -> None:
        in_chans = self.patch_embed.proj[0].in_channels
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != in_chans:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise BioattnError(f"RVT expects a batch of images (B, {in_chans}, H, W), got {shape}")
        if self.fixed_grid and tuple(x.shape[-2:]) != self.img_size:
            H, W = self.img_size
            g = self.grids[0]
            raise BioattnError(
                f"this RVT with {self.attention} attention needs {H}x{W} inputs (a {g[0]}x{g[1]} token "
                f"grid), got {x.shape[-2]}x{x.shape[-1]}")

    def _stages(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        last = len(self.transformers) - 1 if upto is None else upto
        for s in range(last + 1):
            x = self.transformers[s](x)
            if s < len(self.pools) and s < last:
                x = self.pools[s](x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Token maps ``(B, C, H, W)`` of the last stage."""
        return self._stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled, normalised features ``(B, C)`` (``pre_logits``) or logits ``(B, K)``; with
        ``global_pool=''`` the same per token, as ``(B, C or K, H, W)`` maps."""
        if self.global_pool == "avg":
            x = self.head_drop(self.norm(x.mean(dim=(2, 3))))
            return x if pre_logits else self.head(x)
        x = self.head_drop(self.norm(x.permute(0, 2, 3, 1)))
        if not pre_logits:
            x = self.head(x)
        return x.permute(0, 3, 1, 2)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's ``forward_intermediates`` over the units (``feature_info``: blocks of an
        isotropic RVT, stages of a hierarchical one): the output of each unit in ``indices``
        (None: all, an int n: the last n) as ``(B, C, H, W)`` maps, a stage's before the pooling
        to the next. ``norm`` applies the final norm to the last unit's output. Returns the last
        unit's output and the list (only the list with ``intermediates_only``)."""
        check_output_fmt(output_fmt, ("NCHW",))
        n_units = len(self.feature_info)
        take, last = take_indices(self, n_units, indices)
        self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        stop = last + 1 if stop_early else n_units
        if self.isotropic:
            x, intermediates = self.transformers[0].forward_blocks(x, take, stop)
        else:
            intermediates = []
            for s in range(stop):
                x = self.transformers[s](x)
                if s in take:
                    intermediates.append(x)
                if s < len(self.pools) and s < stop - 1:
                    x = self.pools[s](x)
        if norm and n_units - 1 in take and not isinstance(self.norm, nn.Identity):
            intermediates[-1] = self.norm(intermediates[-1].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the units after the last one ``indices`` asks for (and the norm and head)."""
        def cut(last: int) -> None:
            if self.isotropic:
                self.transformers[0].blocks = self.transformers[0].blocks[: last + 1]
            else:
                self.transformers = self.transformers[: last + 1]
                self.pools = self.pools[:last]

        return prune_units(self, len(self.feature_info), indices, prune_norm, prune_head, cut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # attention maps
    def attention_maps(self, x: torch.Tensor, stage: int = 0,
                       block: int = -1) -> OrderedDict[str, torch.Tensor]:
        """Per-token attention maps ``(B, h, w)`` of one block on its stage's token grid.

        vars_d / vars_sd / vars_s: ``{"iteration 0": ..., "iteration T": ...}``, one map per ISTA
        iteration, a token's value being the L2 norm over channels of its reconstruction from
        the current sparse code. self-att / perf: ``{"attention": ...}``, the attention each token receives,
        averaged over queries and heads. ``stage`` (default 0, the finest grid) and ``block``
        (default the stage's last) choose where the maps are read. Runs without gradients, in
        the model's current mode (call ``model.eval()`` first for inference statistics).
        """
        n_stages = len(self.transformers)
        if not -n_stages <= stage < n_stages:
            raise BioattnError(f"stage {stage} out of range: the model has {n_stages} stages")
        stage = stage % n_stages
        blocks = self.transformers[stage].blocks
        if not -len(blocks) <= block < len(blocks):
            raise BioattnError(f"block {block} out of range: stage {stage} has {len(blocks)} blocks")
        target = blocks[block]
        target = target if isinstance(target, VARSSBlock) else target.attn
        target.record_maps = True
        try:
            with torch.no_grad():
                h, w = self._stages(x, upto=stage).shape[-2:]
            recorded = target.recorded_maps
        finally:
            target.record_maps = False
            target.recorded_maps = None
        return OrderedDict((k, v.reshape(v.shape[0], h, w)) for k, v in recorded.items())

    def saliency(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The primary map ``(B, h, w)``: the last ISTA iteration (vars_*), the received attention
        (self-att / perf)."""
        maps = self.attention_maps(x, **kwargs)
        return next(reversed(maps.values()))


# ------------------------------------------------------------------------------------------
# timm registration
# ------------------------------------------------------------------------------------------
def _cfg(**kwargs: Any) -> dict[str, Any]:
    # the RVT backbone's paper and code (the VARS attentions inside it come from the VARS paper)
    return model_cfg(**{"first_conv": "patch_embed.proj.0", "classifier": "head",
                        "paper_ids": "arXiv:2105.07926,arXiv:2204.10962",
                        "paper_name": "Towards Robust Vision Transformer",
                        "origin_url": "https://github.com/vtddggg/Robust-Vision-Transformer", **kwargs})


_RVT_ARCHS: dict[str, dict[str, Any]] = {
    "rvt_tiny": dict(base_dims=[32, 32], depth=[10, 2], heads=[6, 12], mlp_ratio=4),
    "rvt_small": dict(base_dims=[64], depth=[12], heads=[6], mlp_ratio=4),
    "rvt_base": dict(base_dims=[64], depth=[12], heads=[12], mlp_ratio=4),
    "rvt_tiny_plus": dict(base_dims=[32, 32], depth=[10, 2], heads=[6, 12], mlp_ratio=4, masked_blocks=10),
    "rvt_small_plus": dict(base_dims=[64], depth=[12], heads=[6], mlp_ratio=4, masked_blocks=5),
    "rvt_base_plus": dict(base_dims=[64], depth=[12], heads=[12], mlp_ratio=4, masked_blocks=5),
    # 64 x 64 inputs, stride-8 stem: an 8x8 grid, then 4x4 after pooling
    "rvt_micro": dict(base_dims=[16, 16], depth=[2, 1], heads=[3, 6], mlp_ratio=2, img_size=64,
                      stem_stride=8, stem_chans=16),
}

# the micro RVT with each VARS attention in every block (the zoo's compared models, by name)
_RVT_ARCHS.update({f"rvt_micro_{att}": dict(_RVT_ARCHS["rvt_micro"], attention=att)
                   for att in ("vars_s", "vars_d", "vars_sd")})


def _rvt_pool_size(arch: dict[str, Any]) -> tuple[int, int]:
    """The token grid of the last stage at the registered image size (``forward_features``)."""
    side = arch.get("img_size", 224) // arch.get("stem_stride", 16)
    for _ in arch["depth"][1:]:
        side = (side + 1) // 2
    return (side, side)



default_cfgs = generate_default_cfgs({
    # the *_plus models learn an attention mask over the token pairs of a 14x14 grid
    **{name: _cfg(fixed_input_size=name.endswith("_plus"), pool_size=_rvt_pool_size(arch))
       for name, arch in _RVT_ARCHS.items() if not name.startswith("rvt_micro")},
    **{name: cfg for variant, arch in _RVT_ARCHS.items() if variant.startswith("rvt_micro")
       for name, cfg in zoo_cfgs(variant, _cfg(**MICRO_CFG, pool_size=_rvt_pool_size(arch))).items()},
})


def _create_rvt(variant: str, pretrained: bool = False, **kwargs: Any) -> RVT:
    check_weights_source(variant, pretrained, kwargs)
    args = dict(_RVT_ARCHS[variant])
    args.update(kwargs)
    attention = args.get("attention", "self-att")
    check_attention(attention)
    if variant.endswith("_plus") and attention != "self-att":
        raise BioattnError(f"{variant} has the learned attention mask of self-attention: "
                           f"use attention='self-att' (got '{attention}')")
    if attention in FIXED_GRID_ATTENTIONS or args.get("masked_blocks"):
        overlay = dict(args.pop("pretrained_cfg_overlay", None) or {})
        overlay.setdefault("fixed_input_size", True)
        size = image_pair(args.get("img_size", 224))
        overlay.setdefault("input_size", (args.get("in_chans", 3), *size))
        args["pretrained_cfg_overlay"] = overlay
    # features_only: every stage of a hierarchical RVT, the last 3 blocks of an isotropic one
    depth = args["depth"]
    units = tuple(range(len(depth))) if len(depth) > 1 else min(3, depth[0])
    feature_cfg = dict(out_indices=args.pop("out_indices", units), feature_cls="getter")
    return build_model_with_cfg(RVT, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=feature_cfg, **args)


@register_model
def rvt_tiny(pretrained: bool = False, **kwargs: Any) -> RVT:
    """RVT-Ti: 2 stages (10 blocks at 192 ch on 14x14, 2 at 384 on 7x7)."""
    return _create_rvt("rvt_tiny", pretrained, **kwargs)


@register_model
def rvt_small(pretrained: bool = False, **kwargs: Any) -> RVT:
    """RVT-S: 12 blocks at 384 channels, 6 heads, 14x14 grid."""
    return _create_rvt("rvt_small", pretrained, **kwargs)


@register_model
def rvt_base(pretrained: bool = False, **kwargs: Any) -> RVT:
    """RVT-B: 12 blocks at 768 channels, 12 heads, token MLP."""
    return _create_rvt("rvt_base", pretrained, **kwargs)


@register_model
def rvt_tiny_plus(pretrained: bool = False, **kwargs: Any) -> RVT:
    """RVT-Ti*: RVT-Ti with the learned attention mask in all 10 first-stage blocks."""
    return _create_rvt("rvt_tiny_plus", pretrained, **kwargs)


@register_model
def rvt_small_plus(pretrained: bool = False, **kwargs: Any) -> RVT:
    """RVT-S*: RVT-S with the learned attention mask in the first 5 blocks."""
    return _create_rvt("rvt_small_plus", pretrained, **kwargs)


@register_model
def rvt_base_plus(pretrained: bool = False, **kwargs: Any) -> RVT:
    """RVT-B*: RVT-B with the learned attention mask in the first 5 blocks."""
    return _create_rvt("rvt_base_plus", pretrained, **kwargs)


@register_model
def rvt_micro(pretrained: bool = False, **kwargs: Any) -> RVT:
    """A small RVT for 64x64 images on a CPU: stride-8 stem with 16 channels (8x8 token grid),
    2 blocks at 48 channels (3 heads of 16), 1 block at 96 channels on 4x4, MLP ratio 2."""
    return _create_rvt("rvt_micro", pretrained, **kwargs)


@register_model
def rvt_micro_vars_s(pretrained: bool = False, **kwargs: Any) -> RVT:
    """The micro RVT with VARS-S (static dictionary, sparse reconstruction) in every block."""
    return _create_rvt("rvt_micro_vars_s", pretrained, **kwargs)


@register_model
def rvt_micro_vars_d(pretrained: bool = False, **kwargs: Any) -> RVT:
    """The micro RVT with VARS-D (dynamic dictionary of the tokens) in every block."""
    return _create_rvt("rvt_micro_vars_d", pretrained, **kwargs)


@register_model
def rvt_micro_vars_sd(pretrained: bool = False, **kwargs: Any) -> RVT:
    """The micro RVT with VARS-SD (static and dynamic dictionaries) in every block."""
    return _create_rvt("rvt_micro_vars_sd", pretrained, **kwargs)


