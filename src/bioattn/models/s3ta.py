"""S3TA: soft, spatial, sequential, top-down attention, a covert glimpse baseline.

Paper: "Towards Robust Image Classification Using Sequential Attention Models", Zoran et al.,
CVPR 2020 (arXiv 1912.02184). It has no official code that bioattn follows: :class:`S3TA`
implements it on the glimpse models' shared encoders (:mod:`bioattn.models.glimpse`), as a
baseline of RS-RNN (:mod:`bioattn.models.rsrnn`).

:class:`S3TA` (``s3ta_*``) attends covertly: the whole image goes once through Encoder1; an
  LSTM issues queries over a key/value feature map (with a Fourier spatial basis), reads the
  attention-weighted values each glimpse and classifies from its state. Its "fixation" per
  glimpse is the centroid of its attention.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from torch import nn

from .common import MICRO_CFG, zoo_cfgs
from .glimpse import (
    MICRO,
    RESNET18,
    ClassifierHead,
    GlimpseModel,
    Glimpses,
    _check_train_glimpses,
    build_encoder,
    check_input,
    create_glimpse_model,
    glimpse_cfg,
)
from .retina import coordinate_grid

__all__ = ["S3TA", "fourier_basis"]


def fourier_basis(height: int, width: int, frequencies: int, device=None, dtype=None) -> torch.Tensor:
    """Spatial basis ``(4 * frequencies, height, width)``: sin and cos of x and y at frequencies
    ``pi * 2^k / 2`` over ``[-1, 1]``."""
    grid = coordinate_grid(height, width, device, dtype)  # (h, w, 2)
    feats = []
    for k in range(frequencies):
        w = math.pi * (2 ** k) / 2
        feats += [torch.sin(w * grid[..., 0]), torch.cos(w * grid[..., 0]),
                  torch.sin(w * grid[..., 1]), torch.cos(w * grid[..., 1])]
    return torch.stack(feats)


class S3TA(GlimpseModel):
    """Soft, spatial, sequential, top-down attention (covert; module docstring).

    The image goes once through Encoder1; keys and values are 1x1 projections of its feature
    map, each with a Fourier spatial basis appended. Every glimpse the LSTM state gives
    ``num_queries`` queries; each attends over all positions (softmax of query-key products);
    the answers (attention-weighted values) and the queries feed the LSTM; an MLP on the LSTM
    state gives the logits. Its attention is deterministic and differentiable: everything
    learns from the classification loss.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        encoder: str = "resnet18",
        encoder_widths: Sequence[int] | None = None,
        num_glimpses: int = 4,
        num_queries: int = 2,
        key_size: int = 16,
        value_size: int | None = None,
        basis_frequencies: int = 4,
        hidden_size: int | None = None,
        train_glimpses: Sequence[int] | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self._init_common(num_classes, num_glimpses, in_chans, img_size)
        self.train_glimpses = _check_train_glimpses(train_glimpses)
        encoder_full = build_encoder(encoder, in_chans, encoder_widths, drop_path_rate)
        self.stage1 = encoder_full.stage1  # Encoder1 only: the finer attention grid
        c1 = encoder_full.channels[0]
        self.stride = encoder_full.strides[0]
        value_size = int(value_size or c1)
        hidden = int(hidden_size or 2 * encoder_full.channels[1])
        self.basis_frequencies = int(basis_frequencies)
        nb = 4 * self.basis_frequencies
        self.num_queries = int(num_queries)
        self.key_size = int(key_size) + nb
        # no key bias: it would shift every position's logit by the same amount (softmax-invariant)
        self.keys = nn.Conv2d(c1, int(key_size), 1, bias=False)
        self.values = nn.Conv2d(c1, value_size, 1)
        self.query_net = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, self.num_queries * self.key_size))
        answer = self.num_queries * (value_size + nb + self.key_size)
        self.lstm = nn.LSTMCell(answer, hidden)
        self.output_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.head = ClassifierHead(hidden, num_classes, drop_rate)
        self.hidden_size = hidden
        self.map_size = max(1, self.img_size // self.stride)

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None,
                         return_maps: bool = False) -> Glimpses:
        """``glimpses`` covert glimpses over one encoding of the image; ``return_maps`` adds the
        ``attention`` (mean over queries) of every glimpse ``(T, B, h, w)``."""
        check_input(x)
        glimpses = self._resolve_glimpses(glimpses)
        b = x.shape[0]
        feats = self.stage1(x)
        fh, fw = feats.shape[-2:]
        basis = fourier_basis(fh, fw, self.basis_frequencies, x.device, feats.dtype)
        basis = basis.reshape(1, -1, fh * fw).expand(b, -1, -1)
        keys = torch.cat([self.keys(feats).flatten(2), basis], dim=1)  # (B, Ck, N)
        values = torch.cat([self.values(feats).flatten(2), basis], dim=1)  # (B, Cv, N)
        positions = coordinate_grid(fh, fw, x.device, torch.float32).reshape(fh * fw, 2)
        h = feats.new_zeros(b, self.hidden_size)
        c = feats.new_zeros(b, self.hidden_size)
        logits, fixes, sigmas, attn_maps = [], [], [], []
        for _ in range(glimpses):
            q = self.query_net(h).reshape(b, self.num_queries, self.key_size)
            attn = torch.softmax(q @ keys / math.sqrt(self.key_size), dim=-1)  # (B, Q, N)
            answers = attn @ values.transpose(1, 2)  # (B, Q, Cv)
            h, c = self.lstm(torch.cat([answers.flatten(1), q.flatten(1)], dim=1), (h, c))
            logits.append(self.head(self.output_mlp(h)))
            mean_attn = attn.float().mean(dim=1)  # (B, N)
            centre = mean_attn @ positions
            spread = (mean_attn @ positions.pow(2) - centre.pow(2)).sum(-1).clamp(min=1e-6).sqrt()
            fixes.append(centre.detach().clamp(-1, 1))
            sigmas.append(spread.detach())
            attn_maps.append(mean_attn.detach().reshape(b, fh, fw))
        return Glimpses(
            logits=torch.stack(logits),
            fixations=torch.stack(fixes),
            sigmas=torch.stack(sigmas),
            maps={"attention": torch.stack(attn_maps)} if return_maps else None,
        )

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, glimpses: int | None = None) -> OrderedDict[str, torch.Tensor]:
        """``{"attention": (B, h, w)}``: the attention over Encoder1's grid, averaged over
        queries and glimpses (sums to 1)."""
        g = self.forward_glimpses(x, glimpses=glimpses, return_maps=True)
        return OrderedDict([("attention", g.maps["attention"].mean(dim=0))])

    def glimpse_images(self, x: torch.Tensor, fixations: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The image weighted by each glimpse's attention (upsampled, scaled to max 1); ``fixations``
        is ignored (covert attention)."""
        check_input(x)
        g = self.forward_glimpses(x, return_maps=True,
                                  glimpses=None if fixations is None else int(fixations.shape[0]))
        attn = g.maps["attention"]
        t, b = attn.shape[:2]
        up = F.interpolate(attn.reshape(t * b, 1, *attn.shape[-2:]), size=x.shape[-2:], mode="bilinear",
                           align_corners=False).reshape(t, b, 1, *x.shape[-2:])
        up = up / up.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None, None]
        return [x[None] * up.to(x.dtype)]



# ------------------------------------------------------------------------------------------
# registration with timm
# ------------------------------------------------------------------------------------------
_S3TA_PAPER = dict(paper_ids="arXiv:1912.02184",
                   paper_name="Towards Robust Image Classification Using Sequential Attention Models")

default_cfgs = generate_default_cfgs({
    **zoo_cfgs("s3ta_micro", glimpse_cfg("stage1.0.conv", **MICRO_CFG, **_S3TA_PAPER)),
    "s3ta_resnet18": glimpse_cfg("stage1.0", **_S3TA_PAPER),
})


@register_model
def s3ta_micro(pretrained: bool = False, **kwargs) -> S3TA:
    """S3TA (covert soft attention with an LSTM) with the micro encoder."""
    return create_glimpse_model("s3ta_micro", S3TA, MICRO, pretrained, kwargs)



@register_model
def s3ta_resnet18(pretrained: bool = False, **kwargs) -> S3TA:
    """S3TA (covert soft attention with an LSTM) with ResNet-18 stages."""
    return create_glimpse_model("s3ta_resnet18", S3TA, RESNET18, pretrained, kwargs)
