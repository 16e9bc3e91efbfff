"""Recurrent attention model baselines: a glimpse sensor, a 1-D GRU and a learned location head.

Papers: the recurrent attention model (RAM), "Recurrent Models of Visual Attention", Mnih et al.,
NeurIPS 2014 (arXiv 1406.6247); its multi-resolution glimpses (DRAM), "Multiple Object
Recognition with Visual Attention", Ba, Mnih, Kavukcuoglu, ICLR 2015 (arXiv 1412.7755). Neither
has official code that bioattn follows: :class:`RecurrentGlimpseNet` implements their scheme on
the glimpse models' shared encoders (:mod:`bioattn.models.glimpse`), as baselines of RS-RNN
(:mod:`bioattn.models.rsrnn`). One class, three registered glimpse sensors:

* :class:`RecurrentGlimpseNet` with a retina: **Retina** (``retina_gru_*``): the same retinal
  images, Encoder1 and Encoder2 then global pooling, a 1-D GRU on the pooled features (plus a
  "where" embedding of the fixation), a linear classifier. Its fixations come from a location
  head on the GRU state (an MLP giving a ``map_size x map_size`` saliency grid over the image,
  softplus), with the same fixed-width inhibition of return, 2-D softmax, sampler and policy
  objective as RS-RNN; only the spatial memory and saliency read-out differ.
* **Crop-S** (``crop_s_*``): the same network with a single full-resolution square crop per
  glimpse (a retina with no fall-off), GFNet/RAM-like.
* **Crop-D** (``crop_d_*``): two crops per glimpse, full resolution and twice the field at half
  the resolution (DRAM-like); one shared encoder, pooled features concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ..errors import BioattnError
from .common import MICRO_CFG, zoo_cfgs
from .glimpse import (
    GLIMPSE_MICRO,
    GLIMPSE_RESNET18,
    MICRO_FIRST_CONV,
    RESNET_FIRST_CONV,
    ClassifierHead,
    FixatingModel,
    Glimpses,
    check_given_fixations,
    check_input,
    create_glimpse_model,
    fovea_outline,
    glimpse_cfg,
    retina_outline,
)
from .retina import Retina

__all__ = ["RecurrentGlimpseNet"]


class RecurrentGlimpseNet(FixatingModel):
    """Glimpse sensor(s), the shared encoder pooled to a vector, a 1-D GRU, a classifier, and a
    location head choosing the next fixation on a grid over the image (module docstring).

    ``glimpse='retina'`` (Retina baseline), ``'crop'`` (Crop-S: one full-resolution crop of
    ``retina_size`` pixels) or ``'crop2'`` (Crop-D: that crop and one of twice the field at half
    the resolution; ``retina_scale`` sets the first crop's pixels per image pixel, the retina's
    fovea and field do not apply). ``ior_sigma`` is the fixed inhibition-of-return width (image
    units). ``hidden_size`` is the GRU's width (default twice Encoder2's channels). The other
    arguments are the retina, encoder and policy settings of
    :class:`~bioattn.models.glimpse.FixatingModel`, which RS-RNN shares. The baselines keep
    permanent inhibition of return (``ior_decay=1``) and always train with ``num_glimpses``
    glimpses unless told otherwise.
    """

    fixation_modules = ("location_head",)

    def __init__(self, glimpse: str = "retina", hidden_size: int | None = None, ior_sigma: float = 0.25,
                 **kwargs: Any):
        if glimpse not in ("retina", "crop", "crop2"):
            raise BioattnError(f"glimpse must be 'retina', 'crop' or 'crop2'; got '{glimpse}'")
        if ior_sigma <= 0:
            raise BioattnError(f"ior_sigma must be > 0; got {ior_sigma}")
        super().__init__(**kwargs)
        if glimpse == "retina":
            sensors = [self.make_retina()]
        else:
            if self.retina_falloff:
                raise BioattnError(
                    "crop glimpses are uniform: retina_falloff applies to glimpse='retina' only")
            scale = self.retina_scale
            scales = (scale,) if glimpse == "crop" else (scale, 2 * scale)
            sensors = [Retina(self.retina_size, fovea=0.0, falloff=0.0, scale=s, antialias=self.retina_antialias)
                       for s in scales]
        self.glimpse = glimpse
        self.sensors = nn.ModuleList(sensors)
        c2 = self.encoder.channels[1]
        hidden = int(hidden_size or 2 * c2)
        self.what = nn.Linear(c2 * len(sensors), hidden)
        self.where = nn.Linear(2, hidden)
        self.gru = nn.GRUCell(hidden, hidden)
        self.head = ClassifierHead(hidden, self.num_classes, self.drop_rate)
        self.location_head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.map_size ** 2)
        )
        self.ior_sigma = float(ior_sigma)

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        widest = max(self.sensors, key=lambda s: s.num_levels(x.shape[-2:]))
        return widest.pyramid(x)

    def _look(self, x, fix, pyramid) -> torch.Tensor:
        views = [s(x, fix, pyramid=pyramid[: s.num_levels(x.shape[-2:])], check=False) for s in self.sensors]
        b = x.shape[0]
        pooled = self.encoder(torch.cat(views)).mean(dim=(2, 3))  # (S*B, C2)
        pooled = pooled.reshape(len(views), b, -1).permute(1, 0, 2).reshape(b, -1)
        return F.relu(self.what(pooled) + self.where(fix.to(pooled.dtype)))

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None, return_maps: bool = False,
                         fixations: torch.Tensor | None = None) -> Glimpses:
        """As :meth:`RSRNN.forward_glimpses`; the maps are ``saliency`` (the location head's
        grid), ``inhibition of return`` and ``fixation probability``."""
        return self._scan(x, glimpses, return_maps, fixations)

    def _check_images(self, x: torch.Tensor) -> None:
        for sensor in self.sensors:
            sensor.check_images(x)

    def _start(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._pyramid(x)

    def _glimpse(self, x, fix, prev_fix, h, pyramid):
        h = self.gru(self._look(x, fix, pyramid), h)
        return h, self.head(h), fix.new_full((x.shape[0],), self.ior_sigma)

    def _salience(self, h, fix, hw):
        grid = (self.map_size, self.map_size)
        return F.softplus(self.location_head(h.detach()).float()).reshape(h.shape[0], *grid)

    def glimpse_images(self, x: torch.Tensor, fixations: torch.Tensor) -> list[torch.Tensor]:
        check_input(x)
        for s in self.sensors:
            s.check_images(x)
        fixations = check_given_fixations(fixations, x.shape[0]).to(x.device, x.dtype)
        pyramid = self._pyramid(x)
        return [torch.stack([s(x, f, pyramid=pyramid[: s.num_levels(x.shape[-2:])], check=False)
                             for f in fixations]) for s in self.sensors]

    def glimpse_outlines(self, fixations: torch.Tensor, image_hw: Sequence[int]) -> list[torch.Tensor]:
        out = [retina_outline(s, fixations, image_hw) for s in self.sensors]
        first = self.sensors[0]
        if first.falloff > 0 and first.fovea > 0:
            out.append(fovea_outline(first, fixations, image_hw))
        return out



# ------------------------------------------------------------------------------------------
# registration with timm
# ------------------------------------------------------------------------------------------
_RAM_PAPER = dict(paper_ids="arXiv:1406.6247", paper_name="Recurrent Models of Visual Attention")
_DRAM_PAPER = dict(paper_ids="arXiv:1412.7755", paper_name="Multiple Object Recognition with Visual Attention")

default_cfgs = generate_default_cfgs({
    **zoo_cfgs("retina_gru_micro", glimpse_cfg(MICRO_FIRST_CONV, **MICRO_CFG, **_RAM_PAPER)),
    "retina_gru_resnet18": glimpse_cfg(RESNET_FIRST_CONV, **_RAM_PAPER),
    **zoo_cfgs("crop_s_micro", glimpse_cfg(MICRO_FIRST_CONV, **MICRO_CFG, **_RAM_PAPER)),
    "crop_s_resnet18": glimpse_cfg(RESNET_FIRST_CONV, **_RAM_PAPER),
    **zoo_cfgs("crop_d_micro", glimpse_cfg(MICRO_FIRST_CONV, **MICRO_CFG, **_DRAM_PAPER)),
    "crop_d_resnet18": glimpse_cfg(RESNET_FIRST_CONV, **_DRAM_PAPER),
})


@register_model
def retina_gru_micro(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Retina baseline (retinal glimpses, 1-D GRU) with the micro encoder."""
    return create_glimpse_model("retina_gru_micro", RecurrentGlimpseNet, dict(GLIMPSE_MICRO, glimpse="retina"),
                   pretrained, kwargs)



@register_model
def retina_gru_resnet18(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Retina baseline (retinal glimpses, 1-D GRU) with ResNet-18 stages."""
    return create_glimpse_model("retina_gru_resnet18", RecurrentGlimpseNet, dict(GLIMPSE_RESNET18, glimpse="retina"),
                   pretrained, kwargs)



@register_model
def crop_s_micro(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-S baseline (one 32-pixel full-resolution crop per glimpse) with the micro encoder."""
    return create_glimpse_model("crop_s_micro", RecurrentGlimpseNet, dict(GLIMPSE_MICRO, glimpse="crop"),
                   pretrained, kwargs)



@register_model
def crop_s_resnet18(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-S baseline (one 128-pixel full-resolution crop per glimpse) with ResNet-18 stages."""
    return create_glimpse_model("crop_s_resnet18", RecurrentGlimpseNet, dict(GLIMPSE_RESNET18, glimpse="crop"),
                   pretrained, kwargs)



@register_model
def crop_d_micro(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-D baseline (crops at two scales per glimpse) with the micro encoder."""
    return create_glimpse_model("crop_d_micro", RecurrentGlimpseNet, dict(GLIMPSE_MICRO, glimpse="crop2"),
                   pretrained, kwargs)



@register_model
def crop_d_resnet18(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-D baseline (crops at two scales per glimpse) with ResNet-18 stages."""
    return create_glimpse_model("crop_d_resnet18", RecurrentGlimpseNet, dict(GLIMPSE_RESNET18, glimpse="crop2"),
                   pretrained, kwargs)
