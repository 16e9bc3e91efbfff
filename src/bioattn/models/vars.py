"""VARS: visual attention from recurrent sparse reconstruction, and VARS in timm's ViT/DeiT.

Paper: "Visual Attention Emerges from Recurrent Sparse Reconstruction", Baifeng Shi, Yale Song,
Neel Joshi, Trevor Darrell, Xin Wang, ICML 2022 (arXiv 2204.10962).
Official code: https://github.com/bfshi/VARS

Attention is read as the sparse reconstruction of the values over a dictionary of templates,
solved by a few unrolled ISTA iterations; self-attention is the special case of one iteration
without sparsity. This module holds

* the attention modules, each usable on its own on ``(B, N, C)`` tokens:
  :class:`SelfAttention` (``self-att``), :class:`PerformerAttention` (``perf``),
  :class:`VARSDAttention` (``vars_d``, dictionary built from the input),
  :class:`VARSSDAttention` (``vars_sd``, input dictionary plus a learned static one), chosen by
  name with :func:`make_attention`, and :class:`StaticFilterDictionary`, the attention of
  ``vars_s`` (a static convolutional dictionary solved in the Fourier domain on the token grid);
* :func:`replace_attention`, which puts any of the token attentions into a timm
  VisionTransformer (ViT, DeiT), and the registered ``deit_*_patch16_224_vars_{d,sd}`` models
  (``features_only=True``: block outputs, default the last 3, from ``forward_intermediates``).

The paper evaluates them in the RVT backbone, :mod:`bioattn.models.rvt`, whose ``vars_s`` block
is :class:`~bioattn.models.rvt.VARSSBlock`; GFNet's VARS mixers use them too. Parameter names
follow the authors' released checkpoints.

Attention maps (``record_maps``): for ``vars_d``/``vars_sd``/``vars_s`` one map per ISTA iteration,
``"iteration 0"`` (the first thresholding of ``b``) to ``"iteration T"``, where a token's attention at
iteration t is the L2 norm over channels of that token's reconstruction from the current sparse code
(``D x_t`` for vars_d/vars_sd, ``conv(x_t, K^H)`` for vars_s), i.e. how much of the token the sparse code
explains at that iteration (the same quantity the block passes on, before ``proj``); the sequence shows
how the recurrent dynamics redistribute attention. For ``self-att`` and ``perf`` the single map
``"attention"`` is the attention each token receives, averaged over queries and heads.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import BioattnError
from .common import (
    CONV_STEM_FIRST_CONV,
    MICRO_CFG,
    ViTConventions,
    check_weights_source,
    checkpoint_filter_fn,
    conv_stem_embed,
    embed_tokens,
    model_cfg,
    token_grid,
    zoo_cfgs,
)

ATTENTIONS = ("self-att", "perf", "vars_s", "vars_d", "vars_sd")
FIXED_GRID_ATTENTIONS = ("vars_s", "vars_sd")
TOKEN_ATTENTIONS = ("self-att", "perf", "vars_d", "vars_sd")


def check_attention(attention: str, allowed: Sequence[str] = ATTENTIONS) -> None:
    if attention not in allowed:
        raise BioattnError(f"unknown attention '{attention}'; choose one of {', '.join(allowed)}")


def check_vars_args(lam: float, num_step: int, rand_feat_dim_ratio: float | None = None,
                     compile_ista: bool = False) -> None:
    if not isinstance(num_step, int) or isinstance(num_step, bool) or num_step < 0:
        raise BioattnError(f"num_step must be a whole number >= 0, got {num_step!r}")
    number = (int, float)  # bool excluded below; a finite int or float
    if not isinstance(lam, number) or isinstance(lam, bool) or not 0 <= lam < math.inf:
        raise BioattnError(f"lam must be a number >= 0, got {lam!r}")
    if rand_feat_dim_ratio is not None and (not isinstance(rand_feat_dim_ratio, number)
                                            or isinstance(rand_feat_dim_ratio, bool)
                                            or not 0 < rand_feat_dim_ratio < math.inf):
        raise BioattnError(f"rand_feat_dim_ratio must be a number > 0, got {rand_feat_dim_ratio!r}")
    if not isinstance(compile_ista, bool):
        raise BioattnError(f"compile_ista must be true or false, got {compile_ista!r}")


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, N, d) -> (B, N, h*d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


# ------------------------------------------------------------------------------------------
# building blocks of the math
# ------------------------------------------------------------------------------------------
def random_features(u: torch.Tensor, rand_matrix: torch.Tensor) -> torch.Tensor:
    """Positive random features ``phi(u) = exp(norm_L2(u) @ R - 1/2) / sqrt(m)``.

    ``u`` is ``(B, h, N, d)``, ``rand_matrix`` R is ``(h, d, m)``; returns ``(B, h, N, m)``.
    With unit-norm rows, ``phi(q) phi(k)^T`` estimates ``exp(q.k)`` (the softmax kernel).
    """
    m = rand_matrix.shape[-1]
    return torch.exp((F.normalize(u, dim=-1) @ rand_matrix).sub_(0.5 + 0.5 * math.log(m)))


def soft_threshold(x: torch.Tensor, thresh: torch.Tensor | float, act=F.gelu) -> torch.Tensor:
    """``sign(x) * act(|x| - thresh)``: a (smooth, with GELU) shrinkage toward zero."""
    return torch.sign(x) * act(x.abs() - thresh)


class _GeluShrink(torch.autograd.Function):
    """``sign(x) * gelu(|x| - thresh)`` with a hand-written backward pass.

    The values and gradients are those of :func:`soft_threshold` with GELU; autograd of that
    expression makes about ten passes over the code per iteration (a zero gradient for ``sign``
    among them), this backward four: with ``z = |x| - thresh`` and ``s = sign(x)``,
    ``dx = s * gelu'(z) * s * grad`` and ``dthresh = -sum(gelu'(z) * s * grad)``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
        z = x.abs().sub_(thresh)
        s = torch.sign(x)
        ctx.save_for_backward(z, s)
        ctx.thresh_shape = thresh.shape
        return F.gelu(z).mul_(s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        z, s = ctx.saved_tensors
        grad_z = torch.ops.aten.gelu_backward(grad * s, z)
        grad_x = grad_z * s if ctx.needs_input_grad[0] else None
        grad_thresh = None
        if ctx.needs_input_grad[1]:
            grad_thresh = grad_z.sum_to_size(ctx.thresh_shape).neg_()
        return grad_x, grad_thresh


def gelu_shrink(x: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    """:func:`soft_threshold` with GELU for a tensor ``thresh`` that broadcasts to ``x``, computed by
    :class:`_GeluShrink` (same values and gradients, fewer passes over ``x``)."""
    if x.shape != torch.broadcast_shapes(x.shape, thresh.shape):
        return soft_threshold(x, thresh)
    return _GeluShrink.apply(x, thresh)


def factored_update_is_cheaper(num_tokens: int, num_atoms: int, head_dim: int, num_step: int) -> bool:
    """Whether :func:`ista_code` costs fewer multiply-adds with the ISTA update ``W G W / L'``
    applied in factors, ``(D W^T)^T (D (W x))``, than formed as an ``(a, a)`` matrix: so when the
    dictionary has many more atoms than tokens (VARS-SD on a small token grid). Both give the
    same values to float rounding."""
    N, a, d = num_tokens, num_atoms, head_dim
    formed = N * a * a + 2 * a ** 3 + num_step * a * a * d
    factored = 3 * N * a * a + num_step * 2 * N * a * d
    return 4 * factored < 3 * formed


def ista_code(feats: torch.Tensor, values: torch.Tensor, W: torch.Tensor, eye: torch.Tensor,
              learned_L: torch.Tensor, learned_lam: torch.Tensor, lam: float, num_step: int,
              on_iteration=None, shrink=gelu_shrink) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse code of VARS-D/VARS-SD by unrolled ISTA (see :class:`VARSDAttention`).

    ``feats`` F ``(n, N, a)`` (the unnormalised dictionary, n = images x heads), ``values``
    ``(n, N, d)``, ``W`` the learned ``(a, a)`` metric, ``eye`` the ``(a, a)`` identity. Returns the
    code ``x`` ``(n, a, d)`` and the inverse column norms ``s`` ``(n, a, 1)`` (``D x = F (s x)``).
    Every operation is batched over the n image-heads (matrix products as single batched calls)
    and nothing depends on the values on the host, so ``torch.compile`` takes the whole function
    as one graph. ``on_iteration(t, x, s)`` sees the code after each iteration (t = 0: the first
    thresholding of ``b``). The update ``I - W G W / L'`` is formed as an ``(a, a)`` matrix, or
    applied in factors where :func:`factored_update_is_cheaper`. ``shrink`` is the GELU
    shrinkage: :func:`gelu_shrink` (hand-written gradient) or :func:`soft_threshold` (autograd's,
    which ``torch.compile`` fuses).
    """
    n, N, a = feats.shape
    factored = factored_update_is_cheaper(N, a, values.shape[-1], num_step)
    Ft = feats.transpose(1, 2)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not factored):
        raw_gram = torch.bmm(Ft, feats)  # F^T F, (n, a, a)
    if factored:
        inv = feats.square().sum(dim=1).clamp_min(1e-24).rsqrt().unsqueeze(-1)  # (n, a, 1)
    else:
        inv = raw_gram.diagonal(dim1=1, dim2=2).clamp_min(1e-24).rsqrt().unsqueeze(-1)  # (n, a, 1)
    with torch.no_grad():  # L = max_row |G_row|_1 + 1, with |G_ij| = s_i |F^T F|_ij s_j
        L = (inv * torch.bmm(raw_gram.abs(), inv)).amax(dim=1, keepdim=True) + 1  # (n, 1, 1)
    rate = learned_L / L  # 1 / L'
    thresh = learned_lam * lam
    b = torch.bmm(Ft, values) * inv  # D^T v
    shift = b * rate  # b / L'
    if factored:  # W G W / L' = (D W^T)^T (D W) / L', with D = F diag(s) the (N, a) dictionary
        dictionary = (feats * inv.transpose(1, 2)).reshape(n * N, a)
        left = (dictionary @ W.t()).view(n, N, a).transpose(1, 2)  # W D^T, (n, a, N)
        right = (dictionary @ W).view(n, N, a) * rate  # D W / L', (n, N, a)
    else:
        gram_step = raw_gram * ((inv * rate) * inv.transpose(1, 2))  # G / L'
        gram_w = (gram_step.reshape(n * a, a) @ W).view(n, a, a)
        update = torch.baddbmm(eye, W.expand(n, a, a), gram_w, alpha=-1)  # I - W G W / L'
    x = shrink(b, thresh)
    if on_iteration is not None:
        on_iteration(0, x, inv)
    thresh = thresh * rate
    for t in range(num_step):
        if factored:
            pre = torch.baddbmm(shift + x, left, torch.bmm(right, x), alpha=-1)
        else:
            pre = torch.baddbmm(shift, update, x)
        x = shrink(pre, thresh)
        if on_iteration is not None:
            on_iteration(t + 1, x, inv)
    return x, inv


_compiled_ista_code = None


def compiled_ista_code():
    """:func:`ista_code` compiled by ``torch.compile`` (once per process, on first use)."""
    global _compiled_ista_code
    if _compiled_ista_code is None:
        _compiled_ista_code = torch.compile(functools.partial(ista_code, shrink=soft_threshold), fullgraph=True)
    return _compiled_ista_code


# ------------------------------------------------------------------------------------------
# token attentions
# ------------------------------------------------------------------------------------------
class _TokenAttention(nn.Module):
    """Common parts: ``(B, N, C)`` in and out, optional recording of attention maps.

    Set ``record_maps = True`` and run a forward pass: ``recorded_maps`` then holds an ordered
    dict of non-negative per-token maps ``(B, N)``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise BioattnError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.record_maps = False
        self.recorded_maps: OrderedDict[str, torch.Tensor] | None = None

    def _refuse_mask(self, attn_mask: torch.Tensor | None) -> None:
        if attn_mask is not None:
            raise BioattnError(f"{type(self).__name__} cannot apply an attention mask")


class SelfAttention(_TokenAttention):
    """``self-att``: ``proj(softmax(q k^T / sqrt(d)) v)``, heads merged.

    ``mask_tokens`` > 0 adds the learned attention mask of RVT's ``*_plus`` models, a
    ``(h, N, N)`` parameter ``att_mask`` that multiplies the logits through a sigmoid (zeros at
    init: a uniform factor 1/2).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, mask_tokens: int = 0,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads)
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.mask_tokens = mask_tokens
        if mask_tokens:
            self.att_mask = nn.Parameter(torch.zeros(num_heads, mask_tokens, mask_tokens))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if not self.mask_tokens and not self.record_maps and attn_mask is None:
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if self.mask_tokens:
                if N != self.mask_tokens:
                    raise BioattnError(
                        f"the learned attention mask covers {self.mask_tokens} tokens, got {N}")
                attn = attn * torch.sigmoid(self.att_mask)
            if attn_mask is not None:
                attn = attn + attn_mask if attn_mask.dtype != torch.bool else attn.masked_fill(
                    ~attn_mask, float("-inf"))
            attn = attn.softmax(dim=-1)
            if self.record_maps:
                self.recorded_maps = OrderedDict(attention=attn.detach().mean(dim=(1, 2)))
            out = self.attn_drop(attn) @ v
        return self.proj_drop(self.proj(_merge_heads(out)))


class PerformerAttention(_TokenAttention):
    """``perf``: linear attention with positive random features.

    ``A = phi(q) phi(k)^T`` with rows L1-normalised, ``out = A v``; computed as
    ``phi(q) (phi(k)^T v) / (phi(q) phi(k)^T 1)`` so the cost is linear in N. ``m = 2d``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0,
                 rand_feat_dim_ratio: float = 2) -> None:
        super().__init__(dim, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        m = int(self.head_dim * rand_feat_dim_ratio)
        self.register_buffer("rand_matrix", torch.randn(num_heads, self.head_dim, m))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        self._refuse_mask(attn_mask)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scale = self.head_dim ** -0.25
        phi_q = random_features(q * scale, self.rand_matrix)
        phi_k = random_features(k * scale, self.rand_matrix)
        kv = phi_k.transpose(-2, -1) @ v  # (B, h, m, d)
        denom = phi_q @ phi_k.sum(dim=-2).unsqueeze(-1)  # (B, h, N, 1)
        out = (phi_q @ kv) / denom
        if self.record_maps:
            attn = (phi_q @ phi_k.transpose(-2, -1)) / denom
            self.recorded_maps = OrderedDict(attention=attn.detach().mean(dim=(1, 2)))
        return self.proj_drop(self.proj(_merge_heads(out)))


class VARSDAttention(_TokenAttention):
    """``vars_d``: attention as sparse reconstruction over a dynamic dictionary.

    ``qkv = Linear(C, 2C)`` gives q and v (no k). Per image and head:

    * dictionary ``D = norm_L2(phi(q d^-1/4), dim=tokens)`` (N x m, unit-norm columns);
    * Gram ``G = D^T D``, target ``b = D^T v``;
    * step size ``L = max_row ||G_row||_1 + 1`` (no gradient), ``L' = L / learned_L``;
      threshold ``lam' = learned_lam * lam``; ``G' = W G W`` with the learned ``W = learned_k``;
    * ``x = sign(b) gelu(|b| - lam')``, then ``num_step`` ISTA iterations
      ``x = x - (G' x - b) / L'``, ``x = sign(x) gelu(|x| - lam'/L')``;
    * output ``proj(D x)`` with heads merged.

    With ``num_step = 0`` the output is ``proj(D sign(b) gelu(|b| - lam'))``. ``compile_ista=True``
    runs the sparse coding (:func:`ista_code`) compiled by ``torch.compile``, which fuses the
    iterations' element-wise steps into a few kernels (same results to float rounding).

    Computed without forming D: with ``F = phi(q)`` and ``s`` the inverse column norms of F,
    ``G = diag(s) F^T F diag(s)``, ``b = diag(s) F^T v`` and ``D x = F (diag(s) x)``; an iteration is
    one fused ``x <- (I - G'/L') x + b/L'`` followed by the shrinkage, batched over images and
    heads (with many more atoms than tokens, ``G' x`` is applied in factors instead, see
    :func:`factored_update_is_cheaper`). ``rand_matrix`` (the fixed random features) and ``L``
    (h,) are buffers that never train; ``L`` is kept for checkpoint compatibility and not used.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, lam: float = 0.3,
                 num_step: int = 5, rand_feat_dim_ratio: float = 2, proj_drop: float = 0.0,
                 compile_ista: bool = False) -> None:
        super().__init__(dim, num_heads)
        check_vars_args(lam, num_step, rand_feat_dim_ratio, compile_ista)
        self.lam = lam
        self.num_step = num_step
        self.compile_ista = compile_ista
        self.qkv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.num_feat = int(self.head_dim * rand_feat_dim_ratio)
        self.register_buffer("rand_matrix", torch.randn(num_heads, self.head_dim, self.num_feat))
        self.register_buffer("L", torch.full((num_heads,), 25.0))
        self.learned_k = nn.Parameter(torch.eye(self.num_atoms))
        self.learned_lam = nn.Parameter(torch.ones(1))
        self.learned_L = nn.Parameter(torch.ones(1))
        self.register_buffer("eye", torch.eye(self.num_atoms), persistent=False)

    @property
    def num_atoms(self) -> int:
        return self.num_feat

    def features(self, q: torch.Tensor) -> torch.Tensor:
        """Unnormalised dictionary ``(B, h, N, atoms)`` from queries ``(B, h, N, d)`` (the
        ``d^-1/4`` query scale cancels in the L2 normalisation of ``phi``)."""
        return random_features(q, self.rand_matrix)

    def sparse_code(self, feats: torch.Tensor, v: torch.Tensor,
                    on_iteration=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unrolled ISTA for ``min_x |v - D x|^2 / 2 + lam' |x|_1`` (GELU shrinkage), with
        ``D`` the column-normalised ``feats`` ``(B, h, N, atoms)``: :func:`ista_code` (compiled
        with ``compile_ista``, unless ``on_iteration`` watches the iterations) on ``(B*h, ., .)``
        batches. Returns the code ``x`` ``(B*h, atoms, d)`` and the inverse column norms ``s``
        ``(B*h, atoms, 1)`` (so ``D x = feats @ (s * x)``).
        """
        B, h, N, a = feats.shape
        solve = compiled_ista_code() if self.compile_ista and on_iteration is None else ista_code
        return solve(feats.reshape(B * h, N, a), v.reshape(B * h, N, -1), self.learned_k,
                     self.eye.to(feats.dtype), self.learned_L, self.learned_lam, self.lam, self.num_step,
                     on_iteration)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        self._refuse_mask(attn_mask)
        B, N, C = x.shape
        q, v = self.qkv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        feats = self.features(q)
        F3 = feats.reshape(B * self.num_heads, N, -1)

        def reconstruct(code: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:  # D x, (B, N, C)
            out = torch.bmm(F3, code * inv).view(B, self.num_heads, N, self.head_dim)
            return _merge_heads(out)

        on_iteration = None
        if self.record_maps:
            maps: OrderedDict[str, torch.Tensor] = OrderedDict()

            def on_iteration(t: int, code: torch.Tensor, inv: torch.Tensor) -> None:
                maps[f"iteration {t}"] = reconstruct(code, inv).detach().norm(dim=-1)

            self.recorded_maps = maps
        code, inv = self.sparse_code(feats, v, on_iteration)
        return self.proj_drop(self.proj(reconstruct(code, inv)))


class VARSSDAttention(VARSDAttention):
    """``vars_sd``: as :class:`VARSDAttention` with the dictionary
    ``D = norm_L2(concat(phi(q), K), dim=tokens)``, where ``K = kernel`` ``(1, h, N, m)`` is a
    learned static dictionary shared by all images. D is N x 2m and ``learned_k`` 2m x 2m, so the
    token count N is fixed at construction (``num_tokens``)."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, qkv_bias: bool = True,
                 lam: float = 0.3, num_step: int = 5, rand_feat_dim_ratio: float = 2,
                 proj_drop: float = 0.0, compile_ista: bool = False) -> None:
        if not num_tokens or num_tokens < 1:
            raise BioattnError("vars_sd needs the number of tokens (num_tokens) of its fixed grid")
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, lam=lam, num_step=num_step,
                         rand_feat_dim_ratio=rand_feat_dim_ratio, proj_drop=proj_drop,
                         compile_ista=compile_ista)
        self.num_tokens = num_tokens
        self.kernel = nn.Parameter(torch.randn(1, num_heads, num_tokens, self.num_feat))

    @property
    def num_atoms(self) -> int:
        return 2 * self.num_feat

    def features(self, q: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = q.shape
        if N != self.num_tokens:
            raise BioattnError(
                f"vars_sd holds a static dictionary for {self.num_tokens} tokens, got {N}: "
                "use the image size the model was built for")
        dynamic = random_features(q, self.rand_matrix)
        return torch.cat([dynamic, self.kernel.expand(B, -1, -1, -1)], dim=-1)


class _ClampShrink(torch.autograd.Function):
    """``x - clamp(x, -thresh, thresh)`` (that is ``sign(x) relu(|x| - thresh)``) for a threshold
    without gradient, with a hand-written backward pass: the gradient passes where the output is
    non-zero (``|x| > thresh``), as autograd's of the expression, in one pass instead of six."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
        out = x - x.clamp(-thresh, thresh)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.softshrink_backward(grad, out, 0.0), None


_DFT_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _dft_matrices(H: int, W: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense real matrices of ``rfft2``/``irfft2`` (``norm='ortho'``) on an H x W grid.

    ``x.flatten(-2) @ M`` holds the spectrum as interleaved (real, imaginary) pairs, and
    ``spectrum @ M_inv`` maps it back (imaginary parts of self-conjugate bins ignored, as in
    ``irfft2``). On token grids this small, one matrix product is several times faster than
    an FFT call per channel.
    """
    key = (H, W, str(device), dtype)
    if key not in _DFT_CACHE:
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable with autograd
            _DFT_CACHE[key] = _make_dft_matrices(H, W, device, dtype)
    return _DFT_CACHE[key]


def _make_dft_matrices(H: int, W: int, device: torch.device,
                       dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    Wf = W // 2 + 1
    eye = torch.eye(H * W, dtype=torch.float64).reshape(H * W, H, W)
    M = torch.view_as_real(torch.fft.rfft2(eye, norm="ortho")).reshape(H * W, H * Wf * 2)
    basis = torch.eye(H * Wf * 2, dtype=torch.float64).reshape(-1, H, Wf, 2)
    M_inv = torch.fft.irfft2(torch.view_as_complex(basis), s=(H, W), norm="ortho").reshape(-1, H * W)
    return M.to(device=device, dtype=dtype), M_inv.to(device=device, dtype=dtype)


class StaticFilterDictionary(nn.Module):
    """The attention of ``vars_s``: sparse reconstruction of ``(B, N, C)`` tokens over a static
    convolutional dictionary, solved in the Fourier domain on the ``grid`` of tokens.

    Each channel c has a dictionary of 5 complex filters ``K_c`` (``kernel``,
    ``(C, 5, 1, H, W/2+1, 2)``, real and imaginary parts last) applied as circular
    convolutions through ``rfft2``/``irfft2`` with ``norm='ortho'``; per frequency
    ``conv(v, K) = K v``, ``conv(x, K^H) = K^H x`` and ``KK = K K^H`` (5 x 5).

    * ``v = Linear(C, C)(x_in)``; ``b = conv(v, K)``, 5C channels;
    * ``x = sign(b) relu(|b| - lam)``, then ``num_step`` ISTA iterations
      ``x = x - (conv(x, KK) - b) / L``, ``x = sign(x) relu(|x| - lam / L)``, with ``L`` (C,)
      an estimate of the largest singular value of KK over frequencies (a buffer, refreshed by
      :meth:`update_L`);
    * ``r = conv(conv(x, K^H), kernel2)`` with a second learned filter per channel.

    The transforms are dense DFT matrices (:func:`_dft_matrices`) applied to the flattened grid;
    per channel they are multiplied into the filters once per forward pass, so that an ISTA
    iteration is two matrix products batched over channels (no per-frequency products of the
    5 atoms' spectra) followed by the shrinkage. ``after_train_step(global_step)`` calls
    ``update_L(L_update_rate)`` every ``L_update_interval`` optimizer steps (0.1 and 100, as in
    the authors' trainer). RVT's :class:`~bioattn.models.rvt.VARSSBlock` and GFNet's ``vars_s``
    mixer are built on it.
    """

    num_atoms = 5

    def __init__(self, dim: int, grid: tuple[int, int], lam: float = 3.5, num_step: int = 3,
                 L_update_interval: int = 100, L_update_rate: float = 0.1) -> None:
        super().__init__()
        check_vars_args(lam, num_step)
        self.dim = dim
        self.grid = tuple(grid)
        self.lam = lam
        self.num_step = num_step
        self.L_update_interval = L_update_interval
        self.L_update_rate = L_update_rate
        H, W = self.grid
        freq = (H, W // 2 + 1)
        self.v = nn.Linear(dim, dim)
        kernel = torch.randn(dim, self.num_atoms, 1, *freq, 2)
        # Gaussian atoms rescaled to squared norm H*W/2 over their half spectrum
        atom_norm = kernel.pow(2).sum(dim=(2, 3, 4, 5), keepdim=True).sqrt()
        self.kernel = nn.Parameter(kernel / atom_norm * math.sqrt(H * W / 2))
        self.kernel2 = nn.Parameter(torch.randn(dim, 1, 1, *freq, 2) * 0.02)
        self.register_buffer("L", torch.ones(dim))
        self.record_maps = False
        self.recorded_maps: OrderedDict[str, torch.Tensor] | None = None
        self.update_L(1.0)

    def _filters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``K`` (C, 5, H*Wf) and ``kernel2`` (C, H*Wf) as complex spectra."""
        C = self.dim
        K = torch.view_as_complex(self.kernel).reshape(C, self.num_atoms, -1)
        return K, torch.view_as_complex(self.kernel2).reshape(C, -1)

    @torch.no_grad()
    def update_L(self, rate: float) -> None:
        """``L <- (1 - rate) L + rate * sigma_max``, sigma_max per channel the largest singular
        value of ``KK = K K^H`` over frequencies (``|K_f|^2``, KK being of rank one)."""
        K, _ = self._filters()
        sigma = K.abs().pow(2).sum(dim=1).amax(dim=1)
        self.L.mul_(1 - rate).add_(rate * sigma.to(self.L.dtype))

    def after_train_step(self, global_step: int) -> None:
        if self.L_update_interval and global_step % self.L_update_interval == 0:
            self.update_L(self.L_update_rate)

    def reconstruct(self, x_in: torch.Tensor) -> torch.Tensor:
        """The attention output ``r`` (B, N, C) of tokens ``x_in`` (before BN1 and proj)."""
        B, N, C = x_in.shape
        H, W = self.grid
        if N != H * W:
            raise BioattnError(
                f"vars_s holds a convolutional dictionary for a {H}x{W} token grid, got {N} tokens: "
                "use the image size the model was built for")
        K, K2 = self._filters()
        A, S = K.shape[1], K.shape[2]
        M, M_inv = _dft_matrices(H, W, x_in.device, x_in.dtype)
        # Per channel, conv(x, K^H) maps the A atoms' grids to one spectrum and conv(., K) maps a
        # spectrum back to A grids: two real matrices, ``analysis`` (A*N, 2S) and ``synthesis``
        # (2S, A*N), products of the DFT matrices with the filters, so that an iteration is two
        # matrix products batched over channels on codes laid out as (C, B, A*N).
        Kc = K.conj()
        M_c = torch.view_as_complex(M.view(N, S, 2))  # rfft2 of each grid position, (N, S)
        M_inv_c = torch.view_as_complex(M_inv.view(S, 2, N).transpose(1, 2).contiguous())  # (S, N)
        analysis = torch.view_as_real(Kc.unsqueeze(2) * M_c).reshape(C, A * N, 2 * S)
        synthesis = torch.view_as_real(Kc.unsqueeze(-1) * M_inv_c).permute(0, 2, 4, 1, 3).reshape(C, 2 * S, A * N)

        def grid(spectrum: torch.Tensor) -> torch.Tensor:  # irfft2 back to flattened grids
            return spectrum @ M_inv

        inv_L = self.L.reciprocal().view(C, 1, 1)
        v = self.v(x_in).permute(2, 0, 1).contiguous()  # (C, B, N)
        v_spectrum = (v.view(C * B, N) @ M).view(C, B, 2 * S)
        b = torch.bmm(v_spectrum, synthesis)  # conv(v, K), (C, B, A*N)
        # the iteration x - (conv(x, KK) - b) / L as x + conv(v - conv(x, K^H), K / L), the
        # difference taken on spectra; sign(x) relu(|x| - t) as x - clamp(x, -t, t)
        synthesis_scaled = synthesis * inv_L
        thresh = self.lam * inv_L
        maps = None
        if self.record_maps:
            maps = OrderedDict()
            self.recorded_maps = maps
        x = F.softshrink(b, self.lam)  # b - clamp(b, -lam, lam)
        for t in range(self.num_step + 1):
            if t > 0:
                residual = v_spectrum - torch.bmm(x, analysis)
                x = _ClampShrink.apply(torch.baddbmm(x, residual, synthesis_scaled), thresh)
            if maps is not None:
                maps[f"iteration {t}"] = grid(torch.bmm(x, analysis)).detach().norm(dim=0)
        # Two circular convolutions, each back on the grid: conv(x, K^H), then kernel2. They
        # cannot be fused into one spectral product, because a spectrum that is not Hermitian
        # (K^H X is not) loses its non-Hermitian part on the way back to the grid, and the
        # second filter acts on what is left.
        rec = grid(torch.bmm(x, analysis))  # conv(x, K^H), (C, B, N)
        filtered = torch.view_as_complex((rec @ M).unflatten(-1, (-1, 2))) * K2.unsqueeze(1)
        r = grid(torch.view_as_real(filtered).flatten(-2))
        return r.permute(1, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)


def make_attention(attention: str, dim: int, num_heads: int, *, num_tokens: int | None = None,
                   mask_tokens: int = 0, qkv_bias: bool = True, attn_drop: float = 0.0,
                   proj_drop: float = 0.0, lam: float = 0.3, num_step: int = 5,
                   rand_feat_dim_ratio: float = 2, compile_ista: bool = False) -> nn.Module:
    """A token attention module by name (``self-att``, ``perf``, ``vars_d``, ``vars_sd``);
    ``compile_ista`` compiles the sparse coding of vars_d/vars_sd (``torch.compile``)."""
    check_attention(attention, TOKEN_ATTENTIONS)
    if attention == "self-att":
        return SelfAttention(dim, num_heads, qkv_bias=qkv_bias, mask_tokens=mask_tokens,
                             attn_drop=attn_drop, proj_drop=proj_drop)
    if attention == "perf":
        return PerformerAttention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop)
    vars_kwargs = dict(qkv_bias=qkv_bias, lam=lam, num_step=num_step,
                       rand_feat_dim_ratio=rand_feat_dim_ratio, proj_drop=proj_drop, compile_ista=compile_ista)
    if attention == "vars_d":
        return VARSDAttention(dim, num_heads, **vars_kwargs)
    return VARSSDAttention(dim, num_heads, num_tokens=num_tokens, **vars_kwargs)


# ------------------------------------------------------------------------------------------
# VARS in timm's VisionTransformer
# ------------------------------------------------------------------------------------------
def replace_attention(model: VisionTransformer, attention: str, **vars_kwargs: Any) -> VisionTransformer:
    """Swap the ``attn`` of every block of a timm VisionTransformer (ViT, DeiT) for ``attention``
    (``self-att``, ``perf``, ``vars_d`` or ``vars_sd``), in place; returns the model.

    ``vars_kwargs``: ``lam``, ``num_step``, ``rand_feat_dim_ratio``, ``compile_ista``. The new module keeps the
    old one's weights where they mean the same thing: q and v rows of ``qkv`` (vars_d/vars_sd
    have no keys), all of ``qkv`` (self-att, perf) and ``proj``, so a pretrained ViT is a
    reasonable starting point for fine-tuning.

    Class (and other prefix) tokens take part like any token: they are rows of the dynamic
    dictionary and are reconstructed from the sparse code; vars_sd's static dictionary has one
    row per token, prefix tokens included (``N = num_patches + num_prefix_tokens``), so it fixes
    the image size. vars_s needs a token grid without class token and is only offered by the
    RVT models.
    """
    if attention == "vars_s":
        raise BioattnError("vars_s replaces whole blocks on a token grid without class token; "
                           "use an rvt_* model with attention='vars_s'")
    check_attention(attention, TOKEN_ATTENTIONS)
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "patch_embed"):
        raise BioattnError(f"replace_attention needs a timm VisionTransformer, got {type(model).__name__}")
    num_tokens = model.patch_embed.num_patches + getattr(model, "num_prefix_tokens", 0)
    if getattr(model, "dynamic_img_size", False) and attention == "vars_sd":
        raise BioattnError("vars_sd needs a fixed image size: build the ViT without dynamic_img_size")
    for blk in blocks:
        old = blk.attn
        if not (hasattr(old, "qkv") and hasattr(old, "proj") and hasattr(old, "num_heads")):
            raise BioattnError(f"block attention {type(old).__name__} has no qkv/proj to replace")
        dim = old.qkv.in_features
        bias = old.qkv.bias is not None
        new = make_attention(attention, dim, old.num_heads, num_tokens=num_tokens, qkv_bias=bias,
                             **vars_kwargs)
        new = new.to(device=old.qkv.weight.device, dtype=old.qkv.weight.dtype)
        with torch.no_grad():
            if attention in ("vars_d", "vars_sd"):
                w = old.qkv.weight.view(3, dim, dim)
                new.qkv.weight.copy_(torch.cat([w[0], w[2]]))
                if bias:
                    bv = old.qkv.bias.view(3, dim)
                    new.qkv.bias.copy_(torch.cat([bv[0], bv[2]]))
            else:
                new.qkv.load_state_dict(old.qkv.state_dict())
            new.proj.load_state_dict(old.proj.state_dict())
        blk.attn = new
    model.vars_attention = attention
    return model


def vit_attention_maps(model: VisionTransformer, x: torch.Tensor,
                       block: int = -1) -> OrderedDict[str, torch.Tensor]:
    """Attention maps ``(B, h, w)`` of one block (default the last) of a ViT whose attention was
    swapped by :func:`replace_attention`, on the patch grid (prefix tokens dropped); same
    definitions as the module docstring's."""
    blocks = model.blocks
    if not -len(blocks) <= block < len(blocks):
        raise BioattnError(f"block {block} out of range: the model has {len(blocks)} blocks")
    block = block % len(blocks)
    attn = blocks[block].attn
    if not isinstance(attn, _TokenAttention):
        raise BioattnError("the ViT's attention is not a bioattn module: call replace_attention first")
    attn.record_maps = True
    try:
        with torch.no_grad():
            tokens = embed_tokens(model, x)
            for blk in blocks[: block + 1]:
                tokens = blk(tokens)
        recorded = attn.recorded_maps
    finally:
        attn.record_maps = False
        attn.recorded_maps = None
    prefix = getattr(model, "num_prefix_tokens", 0)
    h, w = token_grid(model, x)
    return OrderedDict((k, v[:, prefix:].reshape(v.shape[0], h, w)) for k, v in recorded.items())


class VARSVisionTransformer(ViTConventions, VisionTransformer):
    """timm's VisionTransformer with a VARS (or other bioattn) attention in every block.

    The registered ``deit_*_vars_d`` models are built with ``dynamic_img_size=True``: they run
    at any image size, resampling the position embedding as timm's ViT does. ``vars_sd``'s static
    dictionary fixes the token count, hence the image size.
    """

    def __init__(self, attention: str = "vars_d", lam: float = 0.3, num_step: int = 5,
                 rand_feat_dim_ratio: float = 2, compile_ista: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        replace_attention(self, attention, lam=lam, num_step=num_step,
                          rand_feat_dim_ratio=rand_feat_dim_ratio, compile_ista=compile_ista)

    def attention_maps(self, x: torch.Tensor, block: int = -1) -> OrderedDict[str, torch.Tensor]:
        return vit_attention_maps(self, x, block=block)

    def saliency(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return next(reversed(self.attention_maps(x, **kwargs).values()))


# ------------------------------------------------------------------------------------------
# timm registration
# ------------------------------------------------------------------------------------------
_DEIT_ARCHS: dict[str, dict[str, Any]] = {
    "deit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "deit_small_patch16_224": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "deit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
}

default_cfgs = generate_default_cfgs({
    f"{name}_{att}": model_cfg(first_conv="patch_embed.proj", classifier="head", paper_ids="arXiv:2204.10962",
                               paper_name="Visual Attention Emerges from Recurrent Sparse Reconstruction",
                               origin_url="https://github.com/bfshi/VARS", fixed_input_size=(att == "vars_sd"))
    for name in _DEIT_ARCHS for att in ("vars_d", "vars_sd")
})


# DeiT-style ViTs with VARS-D in the micro ViT's layout (``vit_micro_patch8_64``: 64x64 images,
# 8x8 tokens, 6 blocks of 96 channels, 3 heads, average pooling), with its patch projection or its
# convolutional stem (``vit_micro_convstem_64``); the micro data's size and statistics
_DEIT_ARCHS.update({
    "deit_micro_patch8_64": dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3, global_pool="avg"),
    "deit_micro_convstem_64": dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3,
                                   global_pool="avg", embed_layer=conv_stem_embed),
})
default_cfgs.update(generate_default_cfgs({
    **zoo_cfgs("deit_micro_patch8_64_vars_d", model_cfg(
        **MICRO_CFG, first_conv="patch_embed.proj", classifier="head", paper_ids="arXiv:2204.10962",
        paper_name="Visual Attention Emerges from Recurrent Sparse Reconstruction",
        origin_url="https://github.com/bfshi/VARS")),
    **zoo_cfgs("deit_micro_convstem_64_vars_d", model_cfg(
        **MICRO_CFG, first_conv=CONV_STEM_FIRST_CONV, classifier="head", paper_ids="arXiv:2204.10962,arXiv:2106.14881",
        paper_name="Visual Attention Emerges from Recurrent Sparse Reconstruction",
        origin_url="https://github.com/bfshi/VARS")),
}))


def _create_vars_vit(variant: str, attention: str, pretrained: bool = False, **kwargs: Any):
    name = f"{variant}_{attention}"
    check_weights_source(name, pretrained, kwargs)
    args = dict(_DEIT_ARCHS[variant])
    if attention == "vars_d":
        args["dynamic_img_size"] = True
    args.update(kwargs)
    feature_cfg = dict(out_indices=args.pop("out_indices", min(3, args["depth"])), feature_cls="getter")
    return build_model_with_cfg(VARSVisionTransformer, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=feature_cfg, attention=attention, **args)


@register_model
def deit_tiny_patch16_224_vars_d(pretrained: bool = False, **kwargs: Any):
    """DeiT-Ti with VARS-D attention in every block."""
    return _create_vars_vit("deit_tiny_patch16_224", "vars_d", pretrained, **kwargs)


@register_model
def deit_small_patch16_224_vars_d(pretrained: bool = False, **kwargs: Any):
    """DeiT-S with VARS-D attention in every block."""
    return _create_vars_vit("deit_small_patch16_224", "vars_d", pretrained, **kwargs)


@register_model
def deit_base_patch16_224_vars_d(pretrained: bool = False, **kwargs: Any):
    """DeiT-B with VARS-D attention in every block."""
    return _create_vars_vit("deit_base_patch16_224", "vars_d", pretrained, **kwargs)


@register_model
def deit_micro_patch8_64_vars_d(pretrained: bool = False, **kwargs: Any):
    """The micro ViT's layout (64x64 images, 8x8 patches, 6 blocks of 96 channels) with VARS-D
    attention in every block."""
    return _create_vars_vit("deit_micro_patch8_64", "vars_d", pretrained, **kwargs)


@register_model
def deit_micro_convstem_64_vars_d(pretrained: bool = False, **kwargs: Any):
    """``deit_micro_patch8_64_vars_d`` with a convolutional stem (Xiao et al., arXiv:2106.14881)
    in place of the patch projection: the twin of ``vit_micro_convstem_64``."""
    return _create_vars_vit("deit_micro_convstem_64", "vars_d", pretrained, **kwargs)


@register_model
def deit_tiny_patch16_224_vars_sd(pretrained: bool = False, **kwargs: Any):
    """DeiT-Ti with VARS-SD attention in every block (fixed 224x224 input)."""
    return _create_vars_vit("deit_tiny_patch16_224", "vars_sd", pretrained, **kwargs)


@register_model
def deit_small_patch16_224_vars_sd(pretrained: bool = False, **kwargs: Any):
    """DeiT-S with VARS-SD attention in every block (fixed 224x224 input)."""
    return _create_vars_vit("deit_small_patch16_224", "vars_sd", pretrained, **kwargs)


@register_model
def deit_base_patch16_224_vars_sd(pretrained: bool = False, **kwargs: Any):
    """DeiT-B with VARS-SD attention in every block (fixed 224x224 input)."""
    return _create_vars_vit("deit_base_patch16_224", "vars_sd", pretrained, **kwargs)
