"""RS-RNN, the retinal sampling recurrent network, and FF-CNN, its feedforward baseline.

Paper: "Human Eyes Inspired Recurrent Neural Networks are More Robust Against Adversarial
Noises", Choi, Zhang, Han, Wang, Liu (arXiv 2206.07282; Neural Computation). The paper released
no code: bioattn's implementation is its own reading of the paper.

Both are glimpse models (:mod:`bioattn.models.glimpse`: fixations are image coordinates in
``[-1, 1]^2``, x then y; the shared encoders, interface and fixation-policy objective).

RS-RNN (:class:`RSRNN`), per glimpse t with fixation ``l_t``:

* retina: ``R_t = retina(I, l_t)`` (:mod:`bioattn.models.retina`), full resolution in the fovea,
  exponentially coarser and blurrier toward the periphery.
* ventral stream: ``Encoder1(R_t)`` feeds a ConvGRU whose spatial hidden state ``H_t`` is the
  recurrence; ``f_t = GAP(Encoder2(H_t))`` are the features of glimpse t. The classifier reads
  (``readout``):

  - ``"evidence"`` (default): the evidence pooled over the glimpses so far,
    ``F_t = sum_{τ<=t} w_τ f_τ / sum_{τ<=t} w_τ`` with ``w_τ = exp(g(f_τ)) * novelty(l_τ)``: a
    learned gate ``g`` (linear, no bias, zero at first, so the pool starts as the plain mean)
    weighs each glimpse, and ``novelty(l_τ) = prod_{s<τ} (1 - exp(-|l_τ - l_s|^2 / (2 ρ^2)))``
    with ``ρ = 1 / map_size`` (half a cell of the fixation grid) is 0 for a glimpse at a place
    already fixated: each place counts once. The logits of glimpse t are ``fc(F_t)``;
  - ``"state"``: ``fc(f_t)``, the current hidden state alone.

  Looking longer then adds evidence from new places and cannot wash out what earlier glimpses
  saw: a scan path that returns to places already seen leaves the prediction as it is, which
  acts like a stop once the model has nothing new to look at.
  The hidden state lives on the retinal feature grid. Before each update it is *remapped* from
  the previous fixation's retinal frame into the new one (:meth:`Retina.remap`: every feature cell
  is moved to where its image location falls on the new retina), so evidence stays attached to the
  image locations it came from, as in saccadic remapping. ``remap_state=False`` keeps it in place.
* dorsal stream: from ``H_t`` a saliency network gives a map on the retinal feature grid. It is
  carried onto a ``map_size x map_size`` grid over the whole image with the retina's inverse
  mapping (:meth:`Retina.to_image_grid`: each image cell reads the retinal feature cell its centre
  falls on, bilinearly; cells beyond the retina's field read the nearest edge of the field), then
  made non-negative with a softplus: ``S_t``. A σ network (pooled ``H_t``, linear, sigmoid into
  ``sigma_range``) gives ``σ_t``, the width of the region around ``l_t`` that glimpse t covered.
  The inhibition-of-return map ``IOR_t(p) = prod_{τ<=t} (1 - d^(t-τ) exp(-|p - l_τ|^2 / (2 σ_τ^2)))``
  is 0 at the current fixation and rises to 1 away from the fixations; an older fixation's
  inhibition fades by ``d = ior_decay`` (0.25) per later glimpse, so the model can come back to
  what matters (``ior_decay=1``: every past fixation stays inhibited for good). ``P_t = softmax2d(S_t * IOR_t)``
  over the grid cells; ``l_{t+1}`` is a sample of ``P_t`` in training and at evaluation with
  ``eval_sample=True``, else its mode. The next fixation is the centre of the chosen cell. The
  first fixation is ``initial_fixation`` (the image centre by default).
  Each σ is paired with the fixation whose glimpse produced it (σ_t with l_t), so every σ the
  network outputs shapes a later choice and receives a learning signal.
  The dorsal stream reads a detached copy of ``H_t`` (``detach_dorsal``): the classifier's
  features learn from the classification loss only, the saliency and σ networks from the policy
  term of the training objective (:meth:`~bioattn.models.glimpse.GlimpseModel.compute_loss`).

``readout="state", ior_decay=1`` is the paper's model read literally (the prediction of the
current hidden state, permanent inhibition of return). Its accuracy falls beyond the glimpses it
was trained with: permanent inhibition drives the fixations off the object and the state forgets
it (docs/rsrnn.md compares the two on the embedded data).

FF-CNN (:class:`FFCNN`, ``ffcnn_*``), the feedforward baseline: the same Encoder1, Encoder2 and
classifier on the whole image, one glimpse; asked for more glimpses it repeats its prediction
(fixation: the image centre).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ..errors import BioattnError
from .common import MICRO_CFG, zoo_cfgs
from .glimpse import (
    GLIMPSE_MICRO,
    GLIMPSE_RESNET18,
    MICRO,
    MICRO_FIRST_CONV,
    RESNET18,
    RESNET_FIRST_CONV,
    ClassifierHead,
    FixatingModel,
    GlimpseModel,
    Glimpses,
    build_encoder,
    check_given_fixations,
    check_input,
    create_glimpse_model,
    fixation_density,
    fovea_outline,
    glimpse_cfg,
    make_retina,
    retina_outline,
)

__all__ = ["RSRNN", "FFCNN", "ConvGRUCell", "Evidence", "novelty", "pool_evidence", "READOUTS"]


# What RS-RNN's classifier reads after glimpse t: "evidence", the features of glimpses 1..t
# pooled with learned weights; "state", the features of the hidden state after glimpse t alone.
READOUTS = ("evidence", "state")


# ------------------------------------------------------------------------------------------
# ventral stream: the recurrence
# ------------------------------------------------------------------------------------------
class ConvGRUCell(nn.Module):
    """Convolutional GRU: ``z, r = σ(conv[x, h])``, ``n = tanh(conv[x, r h])``,
    ``h' = (1 - z) h + z n``; a missing ``h`` is zeros."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel_size, padding=pad)
        self.candidate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[-2:])
        h = h.to(x.dtype)
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * n



# ------------------------------------------------------------------------------------------
# RS-RNN
# ------------------------------------------------------------------------------------------
class RSRNN(FixatingModel):
    """Retinal sampling recurrent network (module docstring for the computation).

    Args (besides the retina, encoder and policy settings of :class:`~bioattn.models.glimpse.
    FixatingModel`, which it passes on; its ``ior_decay`` defaults to 0.25):
        gru_kernel: kernel size of the ConvGRU.
        remap_state: remap the hidden state into each new fixation's retinal frame.
        detach_dorsal: the dorsal stream reads a detached hidden state.
        sigma_range: (min, max) IOR width in image units.
        readout: ``"evidence"`` (the gated, novelty-weighted pool of the glimpses' features) or
            ``"state"`` (the current hidden state's features); module docstring.
    """

    fixation_modules = ("saliency_net", "sigma_net")

    def __init__(
        self,
        gru_kernel: int = 3,
        remap_state: bool = True,
        detach_dorsal: bool = True,
        sigma_range: Sequence[float] = (0.05, 0.75),
        readout: str = "evidence",
        ior_decay: float = 0.25,
        **kwargs: Any,
    ):
        if readout not in READOUTS:
            raise BioattnError(f"readout must be one of {', '.join(READOUTS)}; got {readout!r}")
        super().__init__(ior_decay=ior_decay, **kwargs)
        self.readout = readout
        self.retina = self.make_retina()
        c1, c2 = self.encoder.channels
        self.gru = ConvGRUCell(c1, c1, gru_kernel)
        self.head = ClassifierHead(c2, self.num_classes, self.drop_rate)
        self.saliency_net = nn.Sequential(
            nn.Conv2d(c1, max(8, c1 // 2), 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(max(8, c1 // 2), 1, 1),
        )
        self.sigma_net = nn.Linear(c1, 1)
        if readout == "evidence":
            # log-weight of each glimpse's evidence, zero at first (the plain mean over glimpses);
            # no bias: the weights are normalised over the glimpses, a shared offset cancels
            self.evidence_gate = nn.Linear(c2, 1, bias=False)
            nn.init.zeros_(self.evidence_gate.weight)
        lo, hi = float(sigma_range[0]), float(sigma_range[1])
        if not 0 < lo < hi:
            raise BioattnError(f"sigma_range must be (min, max) with 0 < min < max; got {tuple(sigma_range)}")
        self.sigma_range = (lo, hi)
        with torch.no_grad():  # start near an IOR width of 0.25
            target = min(max((0.25 - lo) / (hi - lo), 0.05), 0.95)
            self.sigma_net.weight.mul_(0.1)
            self.sigma_net.bias.fill_(math.log(target / (1 - target)))
        self.remap_state = bool(remap_state)
        self.detach_dorsal = bool(detach_dorsal)

    def _sigma(self, h: torch.Tensor) -> torch.Tensor:
        lo, hi = self.sigma_range
        return lo + (hi - lo) * torch.sigmoid(self.sigma_net(h.mean(dim=(2, 3))).squeeze(-1).float())

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None, return_maps: bool = False,
                         fixations: torch.Tensor | None = None) -> Glimpses:
        """Run ``glimpses`` glimpses (default ``num_glimpses``). ``fixations (T, B, 2)`` replays a
        given scan path instead of the policy (the policy's log-probabilities of it are still
        returned). ``return_maps`` adds, per glimpse, the maps that chose the next fixation:
        ``saliency``, ``inhibition of return`` and ``fixation probability`` ``(T, B, G, G)``."""
        return self._scan(x, glimpses, return_maps, fixations)

    def _dorsal_input(self, h: torch.Tensor) -> torch.Tensor:
        return h.detach() if self.detach_dorsal else h

    def _check_images(self, x: torch.Tensor) -> None:
        self.retina.check_images(x)

    def _start(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.retina.pyramid(x)

    def _glimpse(self, x, fix, prev_fix, state, pyramid):
        h, evidence = state if state is not None else (None, None)
        feat = self.encoder.stage1(self.retina(x, fix, pyramid=pyramid, check=False))
        if h is not None and self.remap_state:
            h = self.retina.remap(h, prev_fix, fix, x.shape[-2:])
        h = self.gru(feat, h)
        sigma = self._sigma(self._dorsal_input(h))
        if self.readout == "state":
            return (h, None), self.head(self.encoder.stage2(h)), sigma
        pooled = self.encoder.stage2(h).mean(dim=(2, 3))
        # the same place: the same cell of the fixation grid (half a cell is 1 / map_size)
        evidence = pool_evidence(evidence, pooled, self.evidence_gate(pooled).squeeze(-1), fix, 1 / self.map_size)
        return (h, evidence), self.head(evidence.features.to(pooled.dtype)), sigma

    def _salience(self, state, fix, hw):
        h = state[0]
        grid = (self.map_size, self.map_size)
        salient = self.retina.to_image_grid(self.saliency_net(self._dorsal_input(h)).float(), fix, hw, grid,
                                            padding_mode="border")
        return F.softplus(salient[:, 0])

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, glimpses: int | None = None) -> OrderedDict[str, torch.Tensor]:
        """``fixation density`` (the primary map), then the ``saliency`` and ``inhibition of
        return`` maps that chose the last fixation, all ``(B, map_size, map_size)``."""
        g = self.forward_glimpses(x, glimpses=glimpses, return_maps=True)
        size = (self.map_size, self.map_size)
        out = OrderedDict([("fixation density", fixation_density(g.fixations, g.sigmas, size))])
        if g.fixations.shape[0] > 1:
            out["saliency"] = g.maps["saliency"][-2]
            out["inhibition of return"] = g.maps["inhibition of return"][-2]
        return out

    def glimpse_images(self, x: torch.Tensor, fixations: torch.Tensor) -> list[torch.Tensor]:
        check_input(x)
        self.retina.check_images(x)
        fixations = check_given_fixations(fixations, x.shape[0]).to(x.device, x.dtype)
        pyramid = self.retina.pyramid(x)
        return [torch.stack([self.retina(x, f, pyramid=pyramid, check=False) for f in fixations])]

    def glimpse_outlines(self, fixations: torch.Tensor, image_hw: Sequence[int]) -> list[torch.Tensor]:
        out = [retina_outline(self.retina, fixations, image_hw)]
        if self.retina.falloff > 0 and self.retina.fovea > 0:
            out.append(fovea_outline(self.retina, fixations, image_hw))
        return out


class Evidence(NamedTuple):
    """RS-RNN's pooled evidence after some glimpses: their features pooled with weights
    ``exp(gate) * novelty``, kept as a running (max, weighted sum, sum of weights) so that each
    glimpse adds in constant time, and the places already counted."""

    top: torch.Tensor  # (B,) largest log-weight so far
    total: torch.Tensor  # (B, C) sum of exp(log-weight - top) * features
    weight: torch.Tensor  # (B,) sum of exp(log-weight - top)
    places: torch.Tensor  # (N, B, 2) fixations counted so far

    @property
    def features(self) -> torch.Tensor:
        """The pooled features ``(B, C)``."""
        return self.total / self.weight[:, None]


def novelty(fix: torch.Tensor, places: torch.Tensor, width: float) -> torch.Tensor:
    """How new the place ``fix (B, 2)`` is after the fixations ``places (N, B, 2)``:
    ``prod_n (1 - exp(-|fix - l_n|^2 / (2 width^2)))``, 0 at a place already fixated and near 1
    more than a few ``width`` from all of them. ``(B,)``."""
    d2 = (fix[None].float() - places.float()).pow(2).sum(-1)
    return (1 - torch.exp(-d2 / (2 * float(width) ** 2))).prod(dim=0)


def pool_evidence(evidence: Evidence | None, features: torch.Tensor, gate: torch.Tensor,
                  fix: torch.Tensor, width: float) -> Evidence:
    """Add one glimpse's ``features (B, C)``, made at ``fix (B, 2)``, to the pool. Its weight is
    ``exp(gate) * novelty(fix)`` (after the earlier glimpses, with ``width``; 1 for the first)
    and the pooled features are the weighted mean over the glimpses so far: a place looked at
    again adds (almost) nothing, a new place adds in proportion to ``exp(gate)``."""
    features, gate, fix = features.float(), gate.float(), fix.detach().float()
    if evidence is None:
        return Evidence(gate, features, torch.ones_like(gate), fix[None])
    log_weight = gate + torch.log(novelty(fix, evidence.places, width).clamp(min=1e-12))
    top = torch.maximum(evidence.top, log_weight)
    old, new = torch.exp(evidence.top - top), torch.exp(log_weight - top)
    return Evidence(top, evidence.total * old[:, None] + features * new[:, None], evidence.weight * old + new,
                    torch.cat([evidence.places, fix[None]]))


# ------------------------------------------------------------------------------------------
# FF-CNN
# ------------------------------------------------------------------------------------------
class FFCNN(GlimpseModel):
    """The shared encoder and classifier, feedforward on the whole image: one glimpse.

    Asked for more glimpses it repeats its prediction, so per-glimpse curves cover it; its
    fixation is the image centre. ``attention_maps`` gives the L2 norm over channels of
    Encoder2's feature map.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        encoder: str = "resnet18",
        encoder_widths: Sequence[int] | None = None,
        num_glimpses: int = 1,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self._init_common(num_classes, num_glimpses, in_chans, img_size)
        self.encoder = build_encoder(encoder, in_chans, encoder_widths, drop_path_rate)
        self.head = ClassifierHead(self.encoder.channels[1], num_classes, drop_rate)
        self.map_size = max(1, self.img_size // self.encoder.strides[1])

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None,
                         return_maps: bool = False) -> Glimpses:
        check_input(x)
        glimpses = self._resolve_glimpses(glimpses)
        feats = self.encoder(x)
        logits = self.head(feats)
        b = x.shape[0]
        maps = None
        if return_maps:
            norm = feats.detach().float().norm(dim=1)
            maps = {"feature norm": norm[None].expand(glimpses, -1, -1, -1)}
        return Glimpses(
            logits=logits[None].expand(glimpses, -1, -1),
            fixations=x.new_zeros(glimpses, b, 2),
            sigmas=x.new_ones(glimpses, b),
            maps=maps,
        )

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, glimpses: int | None = None) -> OrderedDict[str, torch.Tensor]:
        """``{"feature norm": (B, h, w)}``: L2 norm over channels of Encoder2's features."""
        check_input(x)
        return OrderedDict([("feature norm", self.encoder(x).float().norm(dim=1))])

    def glimpse_images(self, x: torch.Tensor, fixations: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The whole image at every glimpse."""
        check_input(x)
        t = 1 if fixations is None else int(fixations.shape[0])
        return [x[None].expand(t, *x.shape)]




# ------------------------------------------------------------------------------------------
# Retina-CNN: FF-CNN on the retina's view of the image
# ------------------------------------------------------------------------------------------
class RetinaCNN(FFCNN):
    """FF-CNN given the image as RS-RNN's retina samples it at one central fixation: the same
    retina (fovea at full resolution, a blurred, coarser periphery), the same encoder and
    classifier, one feedforward pass, no recurrence and no eye movements.

    A baseline of this library, not of the paper: with FF-CNN (full image, no retina) and RS-RNN
    (retina, recurrence, fixations chosen glimpse by glimpse) it separates what the retina's
    low-pass periphery does for robustness from what recurrence and eye movements add. Asked for
    more glimpses it repeats its prediction, fixating the centre.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        encoder: str = "resnet18",
        encoder_widths: Sequence[int] | None = None,
        num_glimpses: int = 1,
        retina_size: int | None = None,
        retina_fovea: float = 0.5,
        retina_field: float | None = 1.0,
        retina_falloff: float | None = None,
        retina_scale: float = 1.0,
        retina_antialias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, img_size, encoder, encoder_widths, num_glimpses, drop_rate,
                         drop_path_rate)
        retina_size = int(retina_size or self.img_size // 2)
        self.retina = make_retina(retina_size, self.img_size, retina_fovea, retina_field,
                                   retina_falloff, retina_scale, retina_antialias)
        self.map_size = max(1, retina_size // self.encoder.strides[1])

    def retinal_image(self, x: torch.Tensor) -> torch.Tensor:
        """The retina's sample of ``x`` at the image centre, ``(B, C, retina_size, retina_size)``."""
        check_input(x)
        self.retina.check_images(x)
        return self.retina(x, x.new_zeros(x.shape[0], 2), check=False)

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None,
                         return_maps: bool = False) -> Glimpses:
        return super().forward_glimpses(self.retinal_image(x), glimpses, return_maps)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, glimpses: int | None = None) -> OrderedDict[str, torch.Tensor]:
        """``{"feature norm": (B, h, w)}`` on the retinal image's feature grid."""
        return super().attention_maps(self.retinal_image(x), glimpses)

    def glimpse_images(self, x: torch.Tensor, fixations: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The retinal image at every glimpse."""
        return super().glimpse_images(self.retinal_image(x), fixations)

    def glimpse_outlines(self, fixations: torch.Tensor, image_hw: Sequence[int]) -> list[torch.Tensor]:
        out = [retina_outline(self.retina, fixations, image_hw)]
        if self.retina.falloff > 0 and self.retina.fovea > 0:
            out.append(fovea_outline(self.retina, fixations, image_hw))
        return out


# ------------------------------------------------------------------------------------------
# registration with timm
# ------------------------------------------------------------------------------------------
_RSRNN_PAPER = dict(paper_ids="arXiv:2206.07282",
                    paper_name="Human Eyes Inspired Recurrent Neural Networks are More Robust Against "
                    "Adversarial Noises")

# RS-RNN's micro retina without its fixation grid (Retina-CNN has no fixation policy)
GLIMPSE_MICRO_RETINA = {k: v for k, v in GLIMPSE_MICRO.items() if k != "map_size"}

default_cfgs = generate_default_cfgs({
    **zoo_cfgs("rsrnn_micro", glimpse_cfg(MICRO_FIRST_CONV, **MICRO_CFG, **_RSRNN_PAPER)),
    "rsrnn_resnet18": glimpse_cfg(RESNET_FIRST_CONV, **_RSRNN_PAPER),
    **zoo_cfgs("ffcnn_micro", glimpse_cfg(MICRO_FIRST_CONV, **MICRO_CFG, **_RSRNN_PAPER)),
    "ffcnn_resnet18": glimpse_cfg(RESNET_FIRST_CONV, **_RSRNN_PAPER),
    **zoo_cfgs("retina_cnn_micro", glimpse_cfg(MICRO_FIRST_CONV, **MICRO_CFG, **_RSRNN_PAPER)),
})


@register_model
def rsrnn_micro(pretrained: bool = False, **kwargs) -> RSRNN:
    """RS-RNN with the micro encoder for 64x64 images (32-pixel retina, 16x16 fixation grid)."""
    return create_glimpse_model("rsrnn_micro", RSRNN, GLIMPSE_MICRO, pretrained, kwargs)



@register_model
def rsrnn_resnet18(pretrained: bool = False, **kwargs) -> RSRNN:
    """RS-RNN with ResNet-18 stages for 224x224 images (128-pixel retina, 28x28 fixation grid)."""
    return create_glimpse_model("rsrnn_resnet18", RSRNN, GLIMPSE_RESNET18, pretrained, kwargs)



@register_model
def ffcnn_micro(pretrained: bool = False, **kwargs) -> FFCNN:
    """FF-CNN: the micro encoder and classifier, feedforward on the whole image."""
    return create_glimpse_model("ffcnn_micro", FFCNN, MICRO, pretrained, kwargs)



@register_model
def retina_cnn_micro(pretrained: bool = False, **kwargs) -> RetinaCNN:
    """Retina-CNN: FF-CNN's micro encoder on RS-RNN's 32-pixel retinal image at the centre."""
    return create_glimpse_model("retina_cnn_micro", RetinaCNN, GLIMPSE_MICRO_RETINA, pretrained, kwargs)


@register_model
def ffcnn_resnet18(pretrained: bool = False, **kwargs) -> FFCNN:
    """FF-CNN: ResNet-18 (as the shared encoder) and classifier on the whole image."""
    return create_glimpse_model("ffcnn_resnet18", FFCNN, RESNET18, pretrained, kwargs)
