"""AbSViT: a ViT whose attention is steered top-down by analysis by synthesis.

Paper: "Top-Down Visual Attention from Analysis by Synthesis", Baifeng Shi, Trevor Darrell,
Xin Wang, CVPR 2023 (arXiv 2303.13043). Official code: https://github.com/bfshi/AbSViT

A first feedforward pass produces tokens; a prior (the learned ``prompt``, a class's classifier
row, or any vector) weights the tokens by their cosine similarity to it; per-layer decoders send
the weighted tokens back down; a second feedforward pass adds each layer's top-down signal to
its attention values. The decoders learn to reconstruct each block's input from its output
(the variational loss).

The backbone is timm's :class:`~timm.models.vision_transformer.VisionTransformer`; the
state-dict layout equals the authors' released checkpoints (timm ViT keys plus ``prompt`` and
``decoders.{l}.linear(2).weight``), so those load unchanged:
``timm.create_model("absvit_base_patch16_224", pretrained=True,
pretrained_cfg_overlay=dict(file="absvit_base.pth"))`` (the checkpoint filter,
:func:`~bioattn.models.common.checkpoint_filter_fn`, unwraps the ``model`` entry and resamples a
position embedding of another grid). ``features_only=True`` gives the blocks' outputs
(``out_indices``, default the last 3) from ``forward_intermediates``.

Registered with timm: ``absvit_{tiny,small,base}_patch16_224``, ``absvit_tiny_patch8_224_gap``,
``absvit_micro_patch8_64`` (for small 64x64 data sets), and the feedforward twins
``vit_tiny_patch8_224_gap`` and ``vit_micro_patch8_64`` (timm itself provides
``vit_{tiny,small,base}_patch16_224``).

:class:`PromptedAbSViT` (``absvit_prompted_micro_patch8_64``) is not the paper's model but a
declared change of its training protocol: the top-down pass is trained under the class prior of
one of the image's objects, the one it is then asked to classify, instead of the learned prompt.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Attention, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import BioattnError
from ..protocol import ModelOutput, readout_loss
from .common import (
    CONV_STEM_FIRST_CONV,
    MICRO_CFG,
    ViTConventions,
    check_image_batch,
    check_output_fmt,
    check_weights_source,
    checkpoint_filter_fn,
    conv_stem_embed,
    embed_tokens,
    model_cfg,
    take_indices,
    token_grid,
    zoo_cfgs,
)

__all__ = [
    "checkpoint_filter_fn",
    "AbSViT",
    "PromptedAbSViT",
    "PROMPTED_MODELS",
    "ViT",
    "TopDownAttention",
    "TopDownBlock",
    "Decoder",
    "check_image_batch",
    "map_depth",
    "patch_token_norms",
    "bottom_up_map",
]

# Blocks run before the token norms are read off, counted from the end: maps use the output of
# block ``depth - MAP_BLOCKS_FROM_END`` (the authors' visualisation recipe).
MAP_BLOCKS_FROM_END = 3


# ------------------------------------------------------------------------------------------
# helpers shared by every timm ViT (also used by bioattn.attention.maps for plain timm ViTs)
# ------------------------------------------------------------------------------------------
def map_depth(model: VisionTransformer) -> int:
    """Number of blocks run before attention maps are read: ``depth - 3`` (at least 1)."""
    return max(len(model.blocks) - MAP_BLOCKS_FROM_END, 1)


def patch_token_norms(model: VisionTransformer, tokens: torch.Tensor,
                      grid: tuple[int, int] | None = None) -> torch.Tensor:
    """L2 norm over channels of every patch token, on the patch grid ``(B, h, w)`` (``grid``
    defaults to the model's fixed one)."""
    h, w = grid if grid is not None else model.patch_embed.grid_size
    return tokens[:, model.num_prefix_tokens:].norm(dim=-1).reshape(tokens.shape[0], h, w)


def bottom_up_map(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Feedforward attention map of any timm ViT: patch-token norms after block ``depth - 3``."""
    tokens = embed_tokens(model, x)
    for block in model.blocks[: map_depth(model)]:
        tokens = block(tokens)
    return patch_token_norms(model, tokens, token_grid(model, x))


# ------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------
class TopDownAttention(Attention):
    """timm's multi-head self-attention that adds a top-down signal to its values.

    The top-down signal enters as ``value_part(qkv(td))``: only the value rows of the shared
    ``qkv`` projection (and its value bias) applied to the raw signal ``td``. The block receives
    that projected signal, ``td_values`` ``(B, N, C)``, and adds it to ``v``.
    """

    def value_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The value rows of ``qkv``: weight ``(C, C)`` and bias ``(C,)`` (or None)."""
        start = 2 * self.attn_dim
        bias = self.qkv.bias[start:] if self.qkv.bias is not None else None
        return self.qkv.weight[start:], bias

    def forward(self, x: torch.Tensor, td_values: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if td_values is not None:
            v = v + td_values.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))


class TopDownBlock(Block):
    """timm's pre-norm transformer block whose attention takes an optional top-down signal
    (already value-projected, see :class:`TopDownAttention`)."""

    def forward(self, x: torch.Tensor, td_values: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), td_values=td_values)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class Decoder(nn.Module):
    """One layer of the feedback path: ``a = linear(z)`` continues down the chain and
    ``linear2(a)`` is the top-down signal for this layer."""

    def __init__(self, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.linear2 = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.linear(z)
        return a, self.linear2(a)


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------
class ViT(ViTConventions, VisionTransformer):
    """timm's VisionTransformer with clear errors for bad input and the attention-map contract
    (``attention_maps`` / ``saliency``: the feedforward token-norm map)."""

    def attention_maps(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """``{"bottom-up": (B, h, w)}``: patch-token norms after block ``depth - 3``."""
        return OrderedDict([("bottom-up", bottom_up_map(self, x))])

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        return bottom_up_map(self, x)


class AbSViT(ViTConventions, VisionTransformer):
    """AbSViT (Shi, Darrell, Wang, CVPR 2023): timm's ViT with a top-down feedback pass.

    ``model(x, prior=None, prior_scale=1.0)`` returns the second (top-down) pass's logits in train
    and eval mode; :meth:`forward_features` the second pass's normalised tokens and
    :meth:`forward_feedforward` the first pass's. :meth:`forward_readouts` gives both passes'
    logits and, when training, the variational loss (a
    :class:`~bioattn.protocol.ModelOutput`): bioattn's trainer uses it for the full objective.
    ``prior`` steers the top-down attention:

    * ``None``: the learned ``prompt``;
    * an integer tensor of class indices (one, or one per image): that class's classifier row
      ``head.weight[y]`` (the authors' demo uses ``prior_scale=40``);
    * a float tensor of prior vectors, ``(C,)`` or ``(B, C)``.

    The token mask is ``prior_scale * clamp(cos(token, prior), 0, 1)``.
    """

    def __init__(self, *, var_loss_weight: float = 0.1, device=None, dtype=None, **kwargs: Any) -> None:
        kwargs.setdefault("block_fn", TopDownBlock)
        kwargs.setdefault("attn_layer", TopDownAttention)
        if kwargs.get("reg_tokens") or kwargs.get("dynamic_img_size"):
            raise BioattnError("AbSViT supports neither register tokens nor dynamic image sizes")
        super().__init__(device=device, dtype=dtype, **kwargs)
        dim, depth = self.embed_dim, len(self.blocks)
        self.var_loss_weight = float(var_loss_weight)
        self.prompt = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.decoders = nn.ModuleList(Decoder(dim, device=device, dtype=dtype) for _ in range(depth))
        if kwargs.get("weight_init") != "skip":
            self.init_top_down_weights()

    def init_top_down_weights(self) -> None:
        """Prompt from N(0, 1); decoder weights from a truncated normal with std 0.02."""
        with torch.no_grad():
            self.prompt.normal_(0.0, 1.0)
            for decoder in self.decoders:
                trunc_normal_(decoder.linear.weight, std=0.02)
                trunc_normal_(decoder.linear2.weight, std=0.02)

    # ---- passes ------------------------------------------------------------------------
    def run_blocks(
        self,
        tokens: torch.Tensor,
        td_values: Sequence[torch.Tensor] | None = None,
        stop: int | None = None,
        record: list | None = None,
    ) -> torch.Tensor:
        """Run blocks ``[0, stop)`` on ``tokens``, adding ``td_values[l]`` to block ``l``'s
        attention values if given. With ``record``, appends each block's ``(input, output)``."""
        blocks = self.blocks[:stop] if stop is not None else self.blocks
        use_checkpoint = self.grad_checkpointing and torch.is_grad_enabled()
        for i, block in enumerate(blocks):
            signal = None if td_values is None else td_values[i]
            if use_checkpoint:
                out = checkpoint(block, tokens, signal, use_reentrant=False)
            else:
                out = block(tokens, signal)
            if record is not None:
                record.append((tokens, out))
            tokens = out
        return tokens

    def forward_feedforward(self, x: torch.Tensor) -> torch.Tensor:
        """The first (feedforward) pass: tokens after the final ``norm``, ``(B, N, C)``."""
        return self.norm(self.run_blocks(embed_tokens(self, x)))

    def forward_features(self, x: torch.Tensor, prior: torch.Tensor | None = None,  # type: ignore[override]
                         prior_scale: float = 1.0) -> torch.Tensor:
        """The second (top-down) pass under ``prior``: tokens after the final ``norm``."""
        return self._two_passes(x, prior, prior_scale)[1]

    def _two_passes(self, x: torch.Tensor, prior: torch.Tensor | None, prior_scale: float,
                    record: list | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """First-pass features, second-pass features (both normalised) and the prior mask."""
        tokens = embed_tokens(self, x)
        features = self.norm(self.run_blocks(tokens))
        td_values, mask = self.top_down_values(features, prior, prior_scale)
        if self._stochastic_embedding():
            tokens = embed_tokens(self, x)  # fresh dropout for the second pass
        return features, self.norm(self.run_blocks(tokens, td_values, record=record)), mask

    def feedback(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Top-down signals ``td_l`` for every block, running the decoders from the last block
        down to the first (the chain goes through ``linear``, each ``td_l`` is ``linear2``)."""
        signals: list[torch.Tensor] = [z] * len(self.decoders)
        for layer in range(len(self.decoders) - 1, -1, -1):
            z, signals[layer] = self.decoders[layer](z)
        return signals

    def feedback_value_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The map from the masked features ``z`` to every block's value signal
        ``value_part(qkv_l(feedback(z)[l]))``, as one ``(depth*C, C)`` weight and bias.

        The decoder chain and the value projection are linear, so block ``l``'s signal is
        ``Wv_l @ W2_l @ W1_l @ ... @ W1_{depth-1} @ z + bv_l``. The products are formed in
        float32 (outside autocast), which costs ``O(depth C^3)`` once per forward instead of
        ``O(depth N C^2)`` per image.
        """
        depth = len(self.decoders)
        weights: list[torch.Tensor] = [self.prompt] * depth
        biases: list[torch.Tensor | None] = [None] * depth
        device_type = self.prompt.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            chain = None
            for layer in range(depth - 1, -1, -1):
                decoder = self.decoders[layer]
                w1 = decoder.linear.weight.float()
                chain = w1 if chain is None else w1 @ chain
                value_weight, value_bias = self.blocks[layer].attn.value_weight()
                weights[layer] = value_weight.float() @ (decoder.linear2.weight.float() @ chain)
                biases[layer] = value_bias
        dtype = self.prompt.dtype
        weight = torch.cat(weights).to(dtype)
        bias = None if biases[0] is None else torch.cat(biases).to(dtype)
        return weight, bias

    def feedback_values(self, z: torch.Tensor, stop: int | None = None) -> list[torch.Tensor]:
        """Value signals ``(B, N, C)`` for blocks ``[0, stop)`` from masked features ``z``: the
        same as applying each block's value projection to :meth:`feedback`, in one matmul."""
        weight, bias = self.feedback_value_weights()
        if stop is not None:
            rows = stop * self.embed_dim
            weight, bias = weight[:rows], (bias[:rows] if bias is not None else None)
        return list(F.linear(z, weight, bias).split(self.embed_dim, dim=-1))

    def prior_vectors(self, prior: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The prior as ``(1 or B, C)`` vectors (see the class docstring for its forms)."""
        dim = self.embed_dim
        if prior is None:
            return self.prompt[None]
        if not torch.is_tensor(prior):
            prior = torch.as_tensor(prior)
        if not (prior.is_floating_point() or prior.is_complex()):
            if not isinstance(self.head, nn.Linear):
                raise BioattnError("class priors need the model's classifier head (num_classes > 0)")
            index = prior.reshape(-1).to(device=self.head.weight.device, dtype=torch.long)
            n_classes = self.head.weight.shape[0]
            if index.numel() not in (1, batch):
                raise BioattnError(f"give one class index or one per image ({batch}), got {index.numel()}")
            bad = index[(index < 0) | (index >= n_classes)]
            if bad.numel():
                raise BioattnError(
                    f"class index {int(bad[0])} out of range: the model has {n_classes} classes (0..{n_classes - 1})"
                )
            return self.head.weight[index]
        if prior.ndim not in (1, 2) or prior.shape[-1] != dim:
            raise BioattnError(
                f"prior vectors must have width {dim} (the model's channels), shaped ({dim},) or (B, {dim}); "
                f"got {tuple(prior.shape)}"
            )
        prior = prior.reshape(-1, dim).to(self.prompt)
        if prior.shape[0] not in (1, batch):
            raise BioattnError(f"give one prior vector or one per image ({batch}), got {prior.shape[0]}")
        return prior

    def prior_mask(self, features: torch.Tensor, prior: torch.Tensor | None = None,
                   prior_scale: float = 1.0) -> torch.Tensor:
        """``prior_scale * clamp(cos(token, prior), 0, 1)`` for every token, ``(B, N, 1)``."""
        vectors = self.prior_vectors(prior, features.shape[0])
        cosine = F.normalize(features, dim=-1) @ F.normalize(vectors, dim=-1).unsqueeze(-1)
        mask = cosine.clamp(0, 1)
        return mask * prior_scale if prior_scale != 1.0 else mask

    def top_down_values(self, features: torch.Tensor, prior: torch.Tensor | None = None,
                        prior_scale: float = 1.0, stop: int | None = None
                        ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-block value signals from first-pass ``features`` under ``prior``, and the mask."""
        mask = self.prior_mask(features, prior, prior_scale)
        return self.feedback_values(features * mask, stop=stop), mask

    def variational_loss(self, record: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``w * sum_l mse(linear_l(out_l), in_l)`` on detached block inputs/outputs: trains
        only the decoders to reconstruct each block's input from its output."""
        total = None
        for layer in range(len(record) - 1, -1, -1):
            block_in, block_out = record[layer]
            recon = self.decoders[layer].linear(block_out.detach())
            term = F.mse_loss(recon, block_in.detach())
            total = term if total is None else total + term
        return self.var_loss_weight * total

    def forward_readouts(
        self,
        x: torch.Tensor,
        readouts: int | None = None,
        prior: torch.Tensor | None = None,
        prior_scale: float = 1.0,
        with_var_loss: bool | None = None,
    ) -> ModelOutput:
        """Both passes: ``logits`` of the second, ``readout_logits`` ``(2, B, K)``, and the
        variational loss as ``aux_loss`` when training (or when ``with_var_loss=True``);
        ``extras["prior_mask"]`` is the token mask. ``readouts=1`` runs the feedforward pass
        only."""
        if readouts not in (None, 1, 2):
            raise BioattnError(f"AbSViT has 2 passes: readouts must be 1 or 2, got {readouts}")
        if with_var_loss is None:
            with_var_loss = self.training
        if readouts == 1:
            logits0 = self.forward_head(self.forward_feedforward(x))
            return ModelOutput(logits=logits0, readout_logits=logits0.unsqueeze(0))
        record: list | None = [] if with_var_loss else None
        features0, features1, mask = self._two_passes(x, prior, prior_scale, record=record)
        logits0, logits1 = self.forward_head(features0), self.forward_head(features1)
        return ModelOutput(
            logits=logits1,
            readout_logits=torch.stack([logits0, logits1]),
            aux_loss=self.variational_loss(record) if record is not None else None,
            extras={"prior_mask": mask},
        )

    def _stochastic_embedding(self) -> bool:
        """Whether embedding the image twice gives different tokens (dropout while training);
        otherwise the second pass reuses the first pass's embedded tokens."""
        patch_drop = not isinstance(self.patch_drop, nn.Identity)
        return self.training and (self.pos_drop.p > 0 or patch_drop)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None,  # type: ignore[override]
                prior_scale: float = 1.0) -> torch.Tensor:
        """The second pass's logits ``(B, K)`` under ``prior``."""
        return self.forward_head(self.forward_features(x, prior, prior_scale))

    # ---- timm conventions --------------------------------------------------------------
    def forward_intermediates(  # type: ignore[override]
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        top_down: bool = True,
        prior: torch.Tensor | None = None,
        prior_scale: float = 1.0,
        record: list | None = None,
    ):
        """timm's ``forward_intermediates``: block outputs of the second (top-down) pass under
        ``prior``, or of the first (feedforward) pass with ``top_down=False``. The top-down pass
        needs the whole first pass, so ``stop_early`` shortens the second pass only. Returns the
        final normalised tokens and the list of block outputs (only the list with
        ``intermediates_only``); ``output_fmt`` is ``'NCHW'`` (patch tokens on the grid) or
        ``'NLC'``. A ``record`` list receives each block's ``(input, output)`` tokens of that
        pass, for :meth:`variational_loss`."""
        check_image_batch(self, x)
        check_output_fmt(output_fmt)
        take, last = take_indices(self, len(self.blocks), indices)
        tokens = embed_tokens(self, x)
        td_values = None
        if top_down:
            features = self.norm(self.run_blocks(tokens))
            td_values, _ = self.top_down_values(features, prior, prior_scale)
            if self._stochastic_embedding():
                tokens = embed_tokens(self, x)
        stop = last + 1 if stop_early else None
        intermediates: list[torch.Tensor] = []
        record = [] if record is None else record
        tokens = self.run_blocks(tokens, td_values, stop=stop, record=record)
        for i in take:
            out = record[i][1]
            intermediates.append(self.norm(out) if norm else out)
        prefix = [y[:, : self.num_prefix_tokens] for y in intermediates]
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == "NCHW":
            h, w = token_grid(self, x)
            intermediates = [y.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if return_prefix_tokens and self.num_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(tokens), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Not offered: the top-down signal of every block comes from the output of the last."""
        raise BioattnError("AbSViT cannot drop blocks: its top-down pass needs the whole first pass; "
                           "use forward_intermediates(x, indices, stop_early=True)")

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's ViT groups, with each block's decoder in its block's group and the prompt with
        the head."""
        return dict(
            stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",
            blocks=[(r"^blocks\.(\d+)", None), (r"^decoders\.(\d+)", None),
                    (r"^norm|^prompt", (99999,))],
        )

    # ---- attention maps ----------------------------------------------------------------
    def _first_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedded tokens, tokens after block ``depth - 3`` and final features (no top-down)."""
        tokens = embed_tokens(self, x)
        stop = map_depth(self)
        early = self.run_blocks(tokens, stop=stop)
        rest = self.blocks[stop:]
        late = early
        for block in rest:
            late = block(late)
        return tokens, early, self.norm(late)

    def _top_down_map(self, tokens: torch.Tensor, features: torch.Tensor,
                      prior: torch.Tensor | None, prior_scale: float) -> torch.Tensor:
        stop = map_depth(self)
        td_values, _ = self.top_down_values(features, prior, prior_scale, stop=stop)
        return patch_token_norms(self, self.run_blocks(tokens, td_values, stop=stop))

    def top_down_maps(self, x: torch.Tensor, priors: Sequence[torch.Tensor | None],
                      prior_scale: float = 1.0) -> list[torch.Tensor]:
        """One attention map ``(B, h, w)`` per entry of ``priors`` (each in any form
        :meth:`forward` accepts, e.g. one class index per image), sharing the first pass: the
        patch-token norms after block ``depth - 3`` of the top-down pass."""
        tokens, _, features = self._first_pass(x)
        return [self._top_down_map(tokens, features, prior, prior_scale) for prior in priors]

    def top_down_map(self, x: torch.Tensor, prior: torch.Tensor | None = None,
                     prior_scale: float = 1.0) -> torch.Tensor:
        """Attention ``(B, h, w)`` under ``prior`` (the learned prompt by default)."""
        return self.top_down_maps(x, [prior], prior_scale)[0]

    def attention_maps(self, x: torch.Tensor, priors: Sequence[int | torch.Tensor] = (),
                       prior_scale: float = 40.0) -> OrderedDict[str, torch.Tensor]:
        """Named maps ``(B, h, w)`` on the patch grid: ``"bottom-up"`` (no top-down signal),
        ``"top-down"`` (the learned prompt) and one per entry of ``priors``: ``"class <k>"``
        for a class index ``k`` (prior ``head.weight[k]``, mask scaled by ``prior_scale``) or
        ``"prior <i>"`` for a prior vector."""
        tokens, early, features = self._first_pass(x)
        maps: OrderedDict[str, torch.Tensor] = OrderedDict()
        maps["bottom-up"] = patch_token_norms(self, early)
        maps["top-down"] = self._top_down_map(tokens, features, None, 1.0)
        for i, prior in enumerate(priors):
            if isinstance(prior, str):
                raise BioattnError(f"prior '{prior}' must be a class index or a prior vector")
            prior = torch.as_tensor(prior)
            one_class = not prior.is_floating_point() and prior.numel() == 1
            name = f"class {int(prior)}" if one_class else f"prior {i}"
            maps[name] = self._top_down_map(tokens, features, prior, prior_scale)
        return maps

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """The top-down map under the learned prompt, ``(B, h, w)``."""
        return self.top_down_map(x)


class PromptedAbSViT(AbSViT):
    """AbSViT whose top-down pass is trained under class priors: a change of the training
    protocol, not the paper's model.

    The official protocol trains the top-down pass under the learned ``prompt`` only, on images
    of one object; the class priors ``head.weight[y]`` that steer it at test time are never seen
    in training. This variant trains it under them: in each training pass, every image is
    prompted with the class of one of its objects, drawn at random (on a two-object image with
    classes ``(a, b)``, ``a`` or ``b`` with probability 1/2, drawn afresh every pass), through
    the same prior as :meth:`~AbSViT.top_down_maps` forms for a class index, with the mask scaled
    by ``train_prior_scale``; and the classification target of that pass is the prompted class.
    To classify the prompted object, the second pass must then attend to it.

    The network, the variational loss and the feedback decoders are the official model's, and
    so is the state-dict layout: a checkpoint of either loads into the other. Only the training
    step differs. The trainer hands it the labels (:class:`~bioattn.protocol.LabelPrompted`):
    ``forward_readouts(x, labels=y)`` draws the prompted class of every image from ``y`` (one
    class per image ``(B,)``, or every object's class ``(B, objects)``) and records it in
    ``extras["prompted_class"]``; :meth:`compute_loss` scores every readout against it (the
    first, feedforward pass cannot see the prompt, so it learns to share its prediction between
    the objects). Without labels the model is AbSViT: ``model(x)`` runs the second pass under
    the ``prompt``, which this protocol leaves at its initial value, and ``model(x, prior=y)``
    under a class prior.
    """

    def __init__(self, *, train_prior_scale: float = 1.0, **kwargs: Any) -> None:
        if isinstance(train_prior_scale, bool) or not isinstance(train_prior_scale, (int, float)) or not (
                train_prior_scale > 0 and train_prior_scale < float("inf")):
            raise BioattnError(f"train_prior_scale must be a positive number, got {train_prior_scale!r}")
        super().__init__(**kwargs)
        self.train_prior_scale = float(train_prior_scale)

    @property
    def has_unused_parameters(self) -> bool:
        """The learned ``prompt`` takes no part in a label-prompted training pass (DDP is told)."""
        return True

    def prompted_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """One class per image ``(B,)``: each image's own class, or one of its objects' classes
        ``(B, objects)`` drawn uniformly (from torch's generator, which the trainer seeds per
        epoch). Negative labels mark absent objects and are never drawn."""
        labels = torch.as_tensor(labels)
        if labels.is_floating_point() or labels.ndim not in (1, 2):
            raise BioattnError(f"prompting labels must be class indices (B,) or (B, objects), got "
                               f"{labels.dtype} {tuple(labels.shape)}")
        labels = labels.to(device=self.head.weight.device, dtype=torch.long)
        if labels.ndim == 1:
            return labels
        present = labels >= 0
        if not bool(present.any(dim=1).all()):
            raise BioattnError("every image needs at least one labelled object to prompt")
        weights = present.float()
        slot = torch.multinomial(weights / weights.sum(dim=1, keepdim=True), 1).to(labels.device)
        return labels.gather(1, slot).squeeze(1)

    def forward_readouts(
        self,
        x: torch.Tensor,
        readouts: int | None = None,
        prior: torch.Tensor | None = None,
        prior_scale: float = 1.0,
        with_var_loss: bool | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """:meth:`AbSViT.forward_readouts`; with ``labels``, the label-prompted pass: the
        prior is the classifier row of a class drawn from each image's ``labels`` (see
        :meth:`prompted_classes`), its mask scaled by ``train_prior_scale``, and
        ``extras["prompted_class"]`` holds the drawn classes ``(B,)``."""
        if labels is None:
            return super().forward_readouts(x, readouts, prior, prior_scale, with_var_loss)
        if prior is not None:
            raise BioattnError("give labels (the prior is drawn from them) or a prior, not both")
        if readouts == 1:
            raise BioattnError("a label-prompted pass needs both passes: leave readouts unset")
        prompted = self.prompted_classes(labels)
        if prompted.shape[0] != x.shape[0]:
            raise BioattnError(f"give labels for every image ({x.shape[0]}), got {prompted.shape[0]}")
        output = super().forward_readouts(x, readouts, prompted, self.train_prior_scale, with_var_loss)
        output.extras = dict(output.extras or {}, prompted_class=prompted)
        return output

    def compute_loss(self, output: ModelOutput, target: torch.Tensor, criterion) -> torch.Tensor:
        """The criterion averaged over both readouts plus the variational loss, against the
        prompted class of a label-prompted pass (``target`` otherwise)."""
        prompted = (output.extras or {}).get("prompted_class")
        if prompted is None:
            if target.ndim == 2 and not target.is_floating_point():
                raise BioattnError("targets with every object's class need a label-prompted pass "
                                   "(forward_readouts(x, labels=targets))")
            prompted = target
        return readout_loss(output, prompted, criterion)



# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
def _cfg(**kwargs: Any) -> dict[str, Any]:
    return model_cfg(**{"fixed_input_size": True, "first_conv": "patch_embed.proj", "classifier": "head",
                        "paper_ids": "arXiv:2303.13043",
                        "paper_name": "Top-Down Visual Attention from Analysis by Synthesis",
                        "origin_url": "https://github.com/bfshi/AbSViT", **kwargs})


# What the label-prompted models change: stated in their pretrained_cfg and their docstrings.
_PROMPTED_PROTOCOL = ("a change of AbSViT's training protocol, not the paper's model: the top-down pass is trained "
                      "under the class prior of one of the image's objects, drawn at random, with that class as the "
                      "target, instead of under the learned prompt")
# The registered names of :class:`PromptedAbSViT`: the trainer hands their training step the labels of
# every object of an image (bioattn.models.prompted_by_labels).
PROMPTED_MODELS: frozenset[str] = frozenset({"absvit_prompted_micro_patch8_64"})

default_cfgs = generate_default_cfgs({
    "absvit_tiny_patch16_224": _cfg(),
    "absvit_small_patch16_224": _cfg(),
    "absvit_base_patch16_224": _cfg(),
    "absvit_tiny_patch8_224_gap": _cfg(),
    **zoo_cfgs("absvit_micro_patch8_64", _cfg(**MICRO_CFG)),
    "absvit_prompted_micro_patch8_64": _cfg(
        **MICRO_CFG,
        description=_PROMPTED_PROTOCOL,
        notes=(_PROMPTED_PROTOCOL, "no weights of its own: train it with `bioattn train --model "
               "absvit_prompted_micro_patch8_64 --data embedded:pair`")),
    "vit_tiny_patch8_224_gap": _cfg(),
    **zoo_cfgs("vit_micro_patch8_64", _cfg(**MICRO_CFG)),
    **zoo_cfgs("absvit_micro_convstem_64", _cfg(**MICRO_CFG, first_conv=CONV_STEM_FIRST_CONV,
                                                     paper_ids="arXiv:2303.13043,arXiv:2106.14881")),
    **zoo_cfgs("vit_micro_convstem_64", _cfg(**MICRO_CFG, first_conv=CONV_STEM_FIRST_CONV,
                                                   paper_ids="arXiv:2303.13043,arXiv:2106.14881")),
})

_TINY = dict(embed_dim=192, depth=12, num_heads=3)
_SMALL = dict(embed_dim=384, depth=12, num_heads=6)
_BASE = dict(embed_dim=768, depth=12, num_heads=12)
# Average pooling, as in the ``_gap`` models: every patch token then feeds the classifier, so the
# patch tokens are trained against the classifier rows that class priors are made of.
_MICRO = dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3, global_pool="avg")
# the micro layout with a convolutional stem in place of the 8x8 patch projection (three 3x3
# stride-2 convolutions, then 1x1): the same 8x8 token grid, each token seeing its neighbourhood
_MICRO_CONV_STEM = dict(_MICRO, embed_layer=conv_stem_embed)


def _create(cls: type, variant: str, pretrained: bool, model_args: dict, kwargs: dict) -> nn.Module:
    check_weights_source(variant, pretrained, kwargs)
    args = dict(model_args, **kwargs)
    # features_only: the last 3 blocks' outputs through forward_intermediates; AbSViT keeps every block,
    # since its top-down signal comes from the last
    last = min(3, args["depth"])
    feature_cfg = dict(out_indices=args.pop("out_indices", last), feature_cls="getter",
                       prune=not issubclass(cls, AbSViT))
    return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=feature_cfg, **args)


@register_model
def absvit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> AbSViT:
    """AbSViT-Ti/16 (C 192, depth 12, 3 heads)."""
    return _create(AbSViT, "absvit_tiny_patch16_224", pretrained, dict(patch_size=16, **_TINY), kwargs)


@register_model
def absvit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> AbSViT:
    """AbSViT-S/16 (C 384, depth 12, 6 heads)."""
    return _create(AbSViT, "absvit_small_patch16_224", pretrained, dict(patch_size=16, **_SMALL), kwargs)


@register_model
def absvit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> AbSViT:
    """AbSViT-B/16 (C 768, depth 12, 12 heads)."""
    return _create(AbSViT, "absvit_base_patch16_224", pretrained, dict(patch_size=16, **_BASE), kwargs)


@register_model
def absvit_tiny_patch8_224_gap(pretrained: bool = False, **kwargs: Any) -> AbSViT:
    """AbSViT-Ti/8 with average pooling of patch tokens (784 patches)."""
    args = dict(patch_size=8, global_pool="avg", **_TINY)
    return _create(AbSViT, "absvit_tiny_patch8_224_gap", pretrained, args, kwargs)


@register_model
def absvit_micro_patch8_64(pretrained: bool = False, **kwargs: Any) -> AbSViT:
    """AbSViT for 64x64 images: C 96, depth 6, 3 heads, 8x8 patches (64 tokens), average
    pooling."""
    return _create(AbSViT, "absvit_micro_patch8_64", pretrained, dict(_MICRO), kwargs)


@register_model
def absvit_prompted_micro_patch8_64(pretrained: bool = False, **kwargs: Any) -> PromptedAbSViT:
    """The micro AbSViT trained under class priors (:class:`PromptedAbSViT`): a change of the
    training protocol, not the paper's model. Same network and state-dict layout as
    ``absvit_micro_patch8_64``; ``train_prior_scale`` (default 1) scales the prior's mask in
    training."""
    return _create(PromptedAbSViT, "absvit_prompted_micro_patch8_64", pretrained, dict(_MICRO), kwargs)


@register_model
def absvit_micro_convstem_64(pretrained: bool = False, **kwargs: Any) -> AbSViT:
    """The micro AbSViT with a convolutional stem (Xiao et al., arXiv:2106.14881) in place of the
    8x8 patch projection: same 8x8 token grid, blocks and pooling."""
    return _create(AbSViT, "absvit_micro_convstem_64", pretrained, dict(_MICRO_CONV_STEM), kwargs)


@register_model
def vit_tiny_patch8_224_gap(pretrained: bool = False, **kwargs: Any) -> ViT:
    """ViT-Ti/8 with average pooling: the feedforward twin of ``absvit_tiny_patch8_224_gap``."""
    args = dict(patch_size=8, global_pool="avg", **_TINY)
    return _create(ViT, "vit_tiny_patch8_224_gap", pretrained, args, kwargs)


@register_model
def vit_micro_patch8_64(pretrained: bool = False, **kwargs: Any) -> ViT:
    """ViT for 64x64 images: the feedforward twin of ``absvit_micro_patch8_64``."""
    return _create(ViT, "vit_micro_patch8_64", pretrained, dict(_MICRO), kwargs)


@register_model
def vit_micro_convstem_64(pretrained: bool = False, **kwargs: Any) -> ViT:
    """The micro ViT with a convolutional stem: the feedforward twin of
    ``absvit_micro_convstem_64``."""
    return _create(ViT, "vit_micro_convstem_64", pretrained, dict(_MICRO_CONV_STEM), kwargs)
