"""RS-RNN, the retinal sampling recurrent network, and its glimpse-model baselines.

RS-RNN follows "Human Eyes Inspired Recurrent Neural Networks are More Robust Against Adversarial
Noises", Choi, Zhang, Han, Wang, Liu (arXiv 2206.07282; Neural Computation), which released no
code: bioattn's implementation is its own reading of the paper. The baselines follow: the recurrent
attention model, "Recurrent Models of Visual Attention", Mnih et al., NeurIPS 2014 (arXiv
1406.6247); its multi-resolution glimpses, "Multiple Object Recognition with Visual Attention",
Ba, Mnih, Kavukcuoglu, ICLR 2015 (arXiv 1412.7755); S3TA, "Towards Robust Image Classification
Using Sequential Attention Models", Zoran et al., CVPR 2020 (arXiv 1912.02184). None of them
has official code that bioattn follows; bioattn implements them on the shared encoders below.

All models look at an image through a sequence of glimpses and predict after every one.
Fixations are image coordinates in ``[-1, 1]^2``, x then y (the ``grid_sample`` convention,
``(-1, -1)`` the top-left corner).

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
  term below.

Training objective (:meth:`GlimpseModel.compute_loss`): the classification ``criterion`` averaged
over all glimpses, plus a REINFORCE term for the fixation policy. The decision that chose
``l_{t+1}`` is rewarded by how much it lowered the cross-entropy against the target (hard labels
or soft mixup targets), ``r_t = CE_t - CE_{t+1}``, plus the later improvements discounted by
``policy_discount``: the return ``R_t = sum_k policy_discount^(k-t) r_k``. Subtracting ``CE_t``
(which the decision cannot change) is already a baseline; the batch mean of ``R_t`` is subtracted
as a second one. The term is ``-policy_weight * mean(A_t log P_t(l_{t+1}))`` minus
``entropy_weight`` times the policy's mean entropy (which keeps it exploring early on). The sampled
fixations are not differentiable, everything else is: attacks reach the input through the
retina's ``grid_sample`` at every glimpse.

``train_glimpses=(lo, hi)`` draws the number of glimpses of each training batch uniformly from
``lo..hi`` (default: always ``num_glimpses``).

``readout="state", ior_decay=1`` is the paper's model read literally (the prediction of the
current hidden state, permanent inhibition of return). Its accuracy falls beyond the glimpses it
was trained with: permanent inhibition drives the fixations off the object and the state forgets
it (docs/rsrnn.md compares the two on the embedded data).

So the fixation networks (RS-RNN's saliency and σ networks, the baselines' location head; see
:meth:`GlimpseModel.fixation_parameter_names`) learn from the policy term only: in a plain
timm-style loop, ``criterion(model(x), y)`` gives them no gradient and they keep their initial
fixation policy. bioattn's trainer trains them through ``forward_readouts`` and
:meth:`GlimpseModel.compute_loss`.

Baselines (same encoders):

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
* :class:`S3TA` (``s3ta_*``): covert attention: the whole image goes once through Encoder1; an
  LSTM issues queries over a key/value feature map (with a Fourier spatial basis), reads the
  attention-weighted values each glimpse and classifies from its state. Its "fixation" per
  glimpse is the centroid of its attention.
* :class:`FFCNN` (``ffcnn_*``): Encoder1, Encoder2 and the classifier on the whole image, one
  glimpse; asked for more glimpses it repeats its prediction (fixation: the image centre).

Interface shared by all (:mod:`bioattn.protocol`'s multi-readout, glimpsing and map-producing
capabilities): ``model(x)`` gives the last glimpse's logits in train and eval mode;
``forward_readouts(x, readouts=None)`` gives a :class:`~bioattn.protocol.ModelOutput` with every
glimpse's logits; ``forward_glimpses(x, glimpses=None, return_maps=False)`` gives a
:class:`Glimpses` named tuple; ``attention_maps(x)`` and ``saliency(x)`` give maps on the model's
grid; ``glimpse_images`` gives what each glimpse saw. ``forward_features`` / ``forward_head``
split the last glimpse's prediction at the classifier.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ..errors import BioattnError
from ..protocol import ModelOutput, readout_loss
from .common import (
    MICRO_CFG,
    check_num_classes,
    check_weights_source,
    checkpoint_filter_fn,
    model_cfg,
    zoo_cfgs,
)
from .retina import Retina, check_fixations, coordinate_grid, falloff_for_field

__all__ = [
    "Glimpses", "FixationChoice", "GlimpseModel", "RSRNN", "RecurrentGlimpseNet", "S3TA", "FFCNN",
    "ConvGRUCell", "Encoder", "micro_encoder", "resnet_encoder", "gaussian_blobs",
    "inhibition_of_return", "fixation_density", "choose_fixation", "Evidence", "novelty", "pool_evidence", "READOUTS",
]

# What RS-RNN's classifier reads after glimpse t: "evidence", the features of glimpses 1..t
# pooled with learned weights; "state", the features of the hidden state after glimpse t alone.
READOUTS = ("evidence", "state")


# ------------------------------------------------------------------------------------------
# dorsal-stream building blocks
# ------------------------------------------------------------------------------------------
def gaussian_blobs(fixations: torch.Tensor, sigmas: torch.Tensor | float,
                   grid_hw: Sequence[int]) -> torch.Tensor:
    """``exp(-|p - l|^2 / (2 σ^2))`` on the cell centres of a grid over the image, for fixations
    ``(N, B, 2)`` and widths ``(N, B)`` (or one float): ``(N, B, gh, gw)``."""
    grid = coordinate_grid(int(grid_hw[0]), int(grid_hw[1]), fixations.device, fixations.dtype)
    d2 = (grid[None, None] - fixations[:, :, None, None, :]).pow(2).sum(-1)
    if not isinstance(sigmas, torch.Tensor):
        sigmas = fixations.new_full(fixations.shape[:2], float(sigmas))
    return torch.exp(-d2 / (2 * sigmas[:, :, None, None].pow(2)))


def inhibition_of_return(fixations: torch.Tensor, sigmas: torch.Tensor | float,
                         grid_hw: Sequence[int], decay: float = 1.0) -> torch.Tensor:
    """Inhibition of return ``(B, gh, gw)`` after the fixations ``(N, B, 2)`` (oldest first) with
    widths ``(N, B)``: ``prod_n (1 - decay^(N-1-n) exp(-|p - l_n|^2 / (2 σ_n^2)))``. With
    ``decay = 1`` it is 0 at every past fixation; with ``decay < 1`` only the newest fixation is
    fully inhibited and an older one's inhibition fades by ``decay`` per later fixation, so the
    place can be chosen again. Near 1 far from all fixations."""
    blobs = gaussian_blobs(fixations, sigmas, grid_hw)
    if decay != 1.0:
        ages = torch.arange(blobs.shape[0] - 1, -1, -1, device=blobs.device, dtype=blobs.dtype)
        blobs = blobs * (float(decay) ** ages)[:, None, None, None]
    return (1 - blobs).prod(dim=0)


def fixation_density(fixations: torch.Tensor, sigmas: torch.Tensor | float,
                     grid_hw: Sequence[int]) -> torch.Tensor:
    """Density of fixations ``(N, B, 2)``: a Gaussian of width σ at each, summed, normalised to
    sum to 1 over the grid: ``(B, gh, gw)``."""
    blobs = gaussian_blobs(fixations, sigmas, grid_hw).sum(dim=0)
    return blobs / blobs.flatten(1).sum(-1).clamp(min=1e-12)[:, None, None]


class FixationChoice(NamedTuple):
    fixations: torch.Tensor  # (B, 2) centre of the chosen cell
    log_prob: torch.Tensor  # (B,) log-probability of the chosen cell
    entropy: torch.Tensor  # (B,) entropy of the distribution
    probs: torch.Tensor  # (B, gh, gw) the 2-D softmax


def choose_fixation(logits: torch.Tensor, sample: bool,
                    generator: torch.Generator | None = None) -> FixationChoice:
    """Next fixation from ``logits (B, gh, gw)`` over a grid on the image: a draw from the 2-D
    softmax (``sample=True``) or its mode; the fixation is the chosen cell's centre."""
    b, gh, gw = logits.shape
    flat = logits.float().reshape(b, gh * gw)
    log_p = F.log_softmax(flat, dim=-1)
    probs = log_p.exp()
    if sample:
        index = torch.multinomial(probs.detach(), 1, generator=generator).squeeze(1)
    else:
        index = flat.detach().argmax(dim=-1)
    row = torch.div(index, gw, rounding_mode="floor")
    col = index - row * gw
    fix = torch.stack([(2 * col + 1).float() / gw - 1, (2 * row + 1).float() / gh - 1], dim=-1)
    chosen = log_p.gather(1, index[:, None]).squeeze(1)
    entropy = -(probs * log_p).sum(-1)
    return FixationChoice(fix.to(logits.dtype if logits.is_floating_point() else torch.float32),
                          chosen, entropy, probs.reshape(b, gh, gw))


# ------------------------------------------------------------------------------------------
# ventral-stream building blocks
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


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)


class Encoder(nn.Module):
    """The CNN shared by all glimpse models: ``stage1`` (Encoder1) then ``stage2`` (Encoder2,
    convolutional, before pooling)."""

    def __init__(self, stage1: nn.Module, stage2: nn.Module, channels: tuple[int, int],
                 strides: tuple[int, int]):
        super().__init__()
        self.stage1 = stage1
        self.stage2 = stage2
        self.channels = channels
        self.strides = strides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(x))


def micro_encoder(in_chans: int = 3, widths: Sequence[int] = (24, 32, 64)) -> Encoder:
    """A small CNN for 64x64 images: Encoder1 = two stride-2 convs (stride 4), Encoder2 = a
    stride-2 conv and a conv (stride 8 overall); BatchNorm and ReLU after each."""
    w1, w2, w3 = widths
    stage1 = nn.Sequential(ConvBNAct(in_chans, w1, 2), ConvBNAct(w1, w2, 2))
    stage2 = nn.Sequential(ConvBNAct(w2, w3, 2), ConvBNAct(w3, w3, 1))
    return Encoder(stage1, stage2, (w2, w3), (4, 8))


def resnet_encoder(name: str = "resnet18", in_chans: int = 3, drop_path_rate: float = 0.0) -> Encoder:
    """Encoder1 = a timm ResNet's stem and layers 1-3 (stride 16), Encoder2 = its layer 4
    (stride 32). Randomly initialised (nothing is downloaded)."""
    net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans,
                            drop_path_rate=drop_path_rate)
    channels = [info["num_chs"] for info in net.feature_info]
    stage1 = nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool, net.layer1, net.layer2, net.layer3)
    return Encoder(stage1, net.layer4, (channels[3], channels[4]), (16, 32))


def _build_encoder(encoder: str, in_chans: int, widths, drop_path_rate: float) -> Encoder:
    if encoder == "micro":
        if drop_path_rate:
            raise BioattnError("the micro encoder has no residual blocks: drop_path_rate must be 0")
        return micro_encoder(in_chans, widths or (24, 32, 64))
    if encoder.startswith("resnet"):
        if widths is not None:
            raise BioattnError("encoder_widths applies to the micro encoder only")
        if encoder not in timm.list_models("resnet*"):
            raise BioattnError(f"unknown ResNet encoder '{encoder}'")
        return resnet_encoder(encoder, in_chans, drop_path_rate)
    raise BioattnError(f"encoder must be 'micro' or a timm ResNet name (e.g. resnet18); got '{encoder}'")


class ClassifierHead(nn.Module):
    """Global average pooling (for feature maps), dropout, linear classifier ``fc``."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        device = next(self.parameters(), torch.empty(0)).device
        self.fc = nn.Linear(self.in_features, num_classes, device=device) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


# ------------------------------------------------------------------------------------------
# the shared glimpse-model interface
# ------------------------------------------------------------------------------------------
class Glimpses(NamedTuple):
    """What :meth:`GlimpseModel.forward_glimpses` returns."""

    logits: torch.Tensor  # (T, B, K) prediction after every glimpse
    fixations: torch.Tensor  # (T, B, 2) fixation of every glimpse (image coordinates, x then y)
    sigmas: torch.Tensor  # (T, B) width of the region each glimpse covered (image units)
    log_probs: torch.Tensor | None = None  # (T-1, B) log-probability of each chosen fixation after the first
    entropies: torch.Tensor | None = None  # (T-1, B) entropy of the policy at each choice
    maps: dict | None = None  # per-glimpse maps (T, B, h, w) when return_maps=True


def _check_glimpses(glimpses) -> int:
    if isinstance(glimpses, bool) or not isinstance(glimpses, int) or glimpses < 1:
        raise BioattnError(f"the number of glimpses must be an integer >= 1; got {glimpses!r}")
    return glimpses


def _check_train_glimpses(value) -> tuple[int, int] | None:
    """``None`` or ``(min, max)`` glimpse counts with ``1 <= min <= max``."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
          and 1 <= value[0] <= value[1])
    if not ok:
        raise BioattnError(f"train_glimpses must be None or (min, max) glimpse counts with 1 <= min <= max; "
                           f"got {value!r}")
    return int(value[0]), int(value[1])


def _check_input(x) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise BioattnError(f"images must have shape (B, C, H, W); got {shape}")


class GlimpseModel(nn.Module):
    """Base of the glimpse models: the readout protocol, the policy objective, the maps and the
    timm classifier interface.

    Subclasses implement :meth:`forward_glimpses`; those with a learned fixation policy
    (``learns_fixations``) implement :meth:`_glimpse` and :meth:`_salience` and get
    :meth:`forward_glimpses` from :meth:`_scan`.
    """

    num_glimpses: int
    eval_sample: bool = False
    map_size: int
    learns_fixations: bool = False  # has a fixation policy trained by the policy term
    fixation_modules: tuple[str, ...] = ()  # the submodules of that policy
    policy_weight: float = 0.0
    policy_discount: float = 0.5
    entropy_weight: float = 0.0
    ior_decay: float = 1.0  # inhibition of return kept per later fixation (1: permanent)
    train_glimpses: tuple[int, int] | None = None  # (min, max) glimpses drawn per training batch

    def _init_common(self, num_classes: int, num_glimpses: int, in_chans: int, img_size) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.num_glimpses = _check_glimpses(num_glimpses)
        self.in_chans = int(in_chans)
        if isinstance(img_size, (tuple, list)):
            if len(img_size) != 2 or img_size[0] != img_size[1]:
                raise BioattnError(f"img_size must be one side length (square images); got {img_size}")
            img_size = img_size[0]
        self.img_size = int(img_size)

    def _init_policy(self, eval_sample: bool, map_size: int, initial_fixation: Sequence[float],
                     policy_weight: float, policy_discount: float, entropy_weight: float,
                     ior_decay: float = 1.0, train_glimpses: Sequence[int] | None = None) -> None:
        """Settings of a learned fixation policy: the grid it chooses on, the first fixation, the
        weights of its objective, how long inhibition of return lasts and the range of glimpse
        counts drawn in training."""
        self.eval_sample = bool(eval_sample)
        decay = float(ior_decay)
        if not 0 <= decay <= 1:
            raise BioattnError(f"ior_decay must be in [0, 1] (1: permanent inhibition); got {ior_decay}")
        self.ior_decay = decay
        self.train_glimpses = _check_train_glimpses(train_glimpses)
        if int(map_size) < 1:
            raise BioattnError(f"map_size must be >= 1; got {map_size}")
        self.map_size = int(map_size)
        init = torch.tensor([float(v) for v in initial_fixation])
        check_fixations(init[None])
        self.register_buffer("initial_fixation", init, persistent=False)
        self.policy_weight = float(policy_weight)
        self.policy_discount = float(policy_discount)
        self.entropy_weight = float(entropy_weight)

    # -- protocol
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last glimpse's logits ``(B, K)``."""
        return self.forward_glimpses(x).logits[-1]

    def forward_readouts(self, x: torch.Tensor, readouts: int | None = None) -> ModelOutput:
        """One readout per glimpse (``readouts`` glimpses, default ``num_glimpses``) as a
        :class:`ModelOutput` (any mode); ``extras`` holds the fixations ``(T, B, 2)``, their
        widths, and the policy's log-probabilities and entropies."""
        g = self.forward_glimpses(x, glimpses=readouts)
        extras = {"fixations": g.fixations, "sigmas": g.sigmas}
        if g.log_probs is not None:
            extras["log_probs"] = g.log_probs
            extras["entropies"] = g.entropies
        return ModelOutput(logits=g.logits[-1], readout_logits=g.logits, extras=extras)

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None,
                         return_maps: bool = False) -> Glimpses:
        raise NotImplementedError

    def fixation_parameter_names(self) -> list[str]:
        """Parameters that learn from the policy term only (no gradient from ``model(x)``)."""
        prefixes = tuple(f"{name}." for name in self.fixation_modules)
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]

    @property
    def has_unused_parameters(self) -> bool:
        """Whether a training step leaves some parameters without gradient (DDP then needs
        ``find_unused_parameters=True``): the fixation policy learns only from its policy term,
        which needs ``policy_weight > 0`` and at least 2 glimpses in every training pass."""
        fewest = self.num_glimpses if self.train_glimpses is None else self.train_glimpses[0]
        return self.learns_fixations and (self.policy_weight == 0 or fewest < 2)

    def compute_loss(self, output: ModelOutput | torch.Tensor, target: torch.Tensor,
                     criterion) -> torch.Tensor:
        """:func:`~bioattn.protocol.readout_loss` (the classification loss averaged over
        glimpses) plus the fixation-policy term (module docstring). ``target`` is hard ``(B,)``
        or soft ``(B, K)``."""
        if not isinstance(output, ModelOutput):
            return criterion(output, target)
        loss = readout_loss(output, target, criterion)
        extras = output.extras or {}
        log_probs = extras.get("log_probs")
        if (log_probs is None or log_probs.shape[0] == 0 or not log_probs.requires_grad
                or self.policy_weight == 0):
            return loss
        readouts = output.all_readouts()
        with torch.no_grad():
            soft = target.dim() == 2
            tgt = target.float() if soft else target
            if isinstance(criterion, nn.BCEWithLogitsLoss):  # multi-label: one sigmoid per class
                ce = torch.stack([F.binary_cross_entropy_with_logits(r.float(), tgt, reduction="none").mean(-1)
                                  for r in readouts])
            else:
                ce = torch.stack([F.cross_entropy(r.float(), tgt, reduction="none") for r in readouts])
            gains = ce[:-1] - ce[1:]  # (T-1, B): how much each chosen glimpse lowered the loss
            returns = torch.zeros_like(gains)
            running = torch.zeros_like(gains[0])
            for t in range(gains.shape[0] - 1, -1, -1):
                running = gains[t] + self.policy_discount * running
                returns[t] = running
            advantages = returns - returns.mean(dim=1, keepdim=True)
        policy = -(advantages * log_probs.float()).mean()
        entropies = extras.get("entropies")
        if entropies is not None and self.entropy_weight:
            policy = policy - self.entropy_weight * entropies.float().mean()
        return loss + self.policy_weight * policy

    # -- the glimpse loop of the models with a fixation policy
    def _check_images(self, x: torch.Tensor) -> None:
        """Raise unless the glimpse sensors can look at ``x``."""

    def _start(self, x: torch.Tensor):
        """Per-image context shared by all glimpses (e.g. the image pyramid)."""
        return None

    def _glimpse(self, x: torch.Tensor, fix: torch.Tensor, prev_fix: torch.Tensor | None, state,
                 context) -> tuple[object, torch.Tensor, torch.Tensor]:
        """One glimpse at ``fix``: the new recurrent state, the logits and the width σ ``(B,)``."""
        raise NotImplementedError

    def _salience(self, state, fix: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """Non-negative saliency ``(B, map_size, map_size)`` over the image after a glimpse."""
        raise NotImplementedError

    def _scan(self, x: torch.Tensor, glimpses: int | None, return_maps: bool,
              fixations: torch.Tensor | None) -> Glimpses:
        """Run the glimpses: look, update the state, predict, then choose the next fixation from
        saliency times inhibition of return (or take it from ``fixations``)."""
        _check_input(x)
        self._check_images(x)
        b, hw = x.shape[0], x.shape[-2:]
        if fixations is not None:
            fixations = _check_given_fixations(fixations, b).to(x.device, torch.float32)
            if glimpses is not None and _check_glimpses(glimpses) != fixations.shape[0]:
                raise BioattnError(f"glimpses={glimpses} but {fixations.shape[0]} fixations were given")
            glimpses = fixations.shape[0]
        glimpses = self._resolve_glimpses(glimpses)
        sample = self.training or self.eval_sample
        grid = (self.map_size, self.map_size)
        context = self._start(x)
        fix = (fixations[0] if fixations is not None
               else self.initial_fixation.to(x.device, torch.float32).expand(b, 2))
        state = prev_fix = ior = None
        seen, widths = [], []  # fixations and widths so far, for a fading inhibition of return
        logits, fixes, sigmas, log_probs, entropies = [], [fix], [], [], []
        maps = {"saliency": [], "inhibition of return": [], "fixation probability": []}
        for t in range(glimpses):
            state, out, sigma = self._glimpse(x, fix, prev_fix, state, context)
            logits.append(out)
            sigmas.append(sigma)
            if t == glimpses - 1 and not return_maps:
                break
            salient = self._salience(state, fix, hw)
            if self.ior_decay == 1.0:
                # permanent inhibition of return, one factor per fixation so far (a running product)
                newest = inhibition_of_return(fix[None], sigma[None], grid)
                ior = newest if ior is None else ior * newest
            else:  # each fixation's inhibition fades with the fixations made after it
                seen.append(fix)
                widths.append(sigma)
                ior = inhibition_of_return(torch.stack(seen), torch.stack(widths), grid, self.ior_decay)
            choice = choose_fixation(salient * ior, sample)
            if return_maps:
                maps["saliency"].append(salient.detach())
                maps["inhibition of return"].append(ior.detach())
                maps["fixation probability"].append(choice.probs.detach())
            if t == glimpses - 1:
                break
            nxt = choice.fixations
            if fixations is not None:
                nxt = fixations[t + 1]
                lp = torch.log(choice.probs.flatten(1).clamp(min=1e-30))
                log_probs.append(lp.gather(1, _cell_index(nxt, grid)[:, None]).squeeze(1))
            else:
                log_probs.append(choice.log_prob)
            entropies.append(choice.entropy)
            prev_fix, fix = fix, nxt
            fixes.append(fix)
        return Glimpses(
            logits=torch.stack(logits),
            fixations=torch.stack(fixes),
            sigmas=torch.stack(sigmas),
            log_probs=torch.stack(log_probs) if log_probs else x.new_zeros(0, b),
            entropies=torch.stack(entropies) if entropies else x.new_zeros(0, b),
            maps={k: torch.stack(v) for k, v in maps.items()} if return_maps else None,
        )

    # -- maps
    def _resolve_glimpses(self, glimpses) -> int:
        """``glimpses`` if given; else, in training with ``train_glimpses = (lo, hi)``, a count
        drawn uniformly from ``lo..hi`` (torch's global generator); else ``num_glimpses``."""
        if glimpses is not None:
            return _check_glimpses(glimpses)
        if self.training and self.train_glimpses is not None:
            lo, hi = self.train_glimpses
            return int(torch.randint(lo, hi + 1, ()).item()) if hi > lo else lo
        return self.num_glimpses

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, glimpses: int | None = None) -> OrderedDict[str, torch.Tensor]:
        """``{"fixation density": (B, map_size, map_size)}``: a Gaussian of each glimpse's width
        at each fixation, summed over the glimpses, normalised to sum to 1."""
        g = self.forward_glimpses(x, glimpses=glimpses)
        size = (self.map_size, self.map_size)
        return OrderedDict([("fixation density", fixation_density(g.fixations, g.sigmas, size))])

    def saliency(self, x: torch.Tensor, glimpses: int | None = None) -> torch.Tensor:
        """The model's primary map ``(B, h, w)`` (the first of :meth:`attention_maps`)."""
        return next(iter(self.attention_maps(x, glimpses=glimpses).values()))

    # -- pictures
    def glimpse_images(self, x: torch.Tensor, fixations: torch.Tensor) -> list[torch.Tensor]:
        """What each glimpse saw: one ``(T, B, C, h, w)`` tensor per glimpse kind, for
        fixations ``(T, B, 2)``."""
        raise NotImplementedError

    def glimpse_outlines(self, fixations: torch.Tensor, image_hw: Sequence[int]) -> list[torch.Tensor]:
        """Outline of each glimpse's field on the image: tensors ``(B, P, 2)`` of image
        coordinates (closed polygons), for fixations ``(B, 2)``."""
        return []

    # -- timm classifier interface
    @property
    def num_features(self) -> int:
        """Width of the features the classifier reads."""
        return self.head.in_features

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)``: the classifier reads the features
        directly."""
        return self.head.in_features

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, ``model(x)`` then gives the pooled
        features). ``global_pool`` must be None or ``'avg'``: the models average-pool."""
        if global_pool not in (None, "avg"):
            raise BioattnError(f"glimpse models pool by averaging: global_pool must be 'avg', "
                               f"got '{global_pool}'")
        self.num_classes = check_num_classes(num_classes)
        self.head.reset(self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the last glimpse's classifier reads: ``(B, num_features)`` (or the
        feature map it pools)."""
        features = []
        handle = self.head.register_forward_pre_hook(lambda _m, args: features.append(args[0]))
        try:
            self.forward_glimpses(x)
        finally:
            handle.remove()
        return features[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


def _check_given_fixations(fixations: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(fixations, torch.Tensor) or fixations.dim() not in (2, 3) or fixations.shape[-1] != 2:
        raise BioattnError("fixations must have shape (T, B, 2) or (T, 2) (x, y in [-1, 1])")
    if fixations.dim() == 2:
        fixations = fixations[:, None, :].expand(-1, batch, -1)
    if fixations.shape[0] < 1:
        raise BioattnError("fixations must hold at least one glimpse")
    for t in range(fixations.shape[0]):
        check_fixations(fixations[t], batch)
    return fixations


def _retina_outline(retina: Retina, fixations: torch.Tensor, image_hw, points: int = 16) -> torch.Tensor:
    """Image coordinates ``(B, 4 * points + 1, 2)`` of the retinal square's edge."""
    s = torch.linspace(-1, 1, points + 1, device=fixations.device, dtype=fixations.dtype)[:-1]
    one = torch.ones_like(s)
    edge = torch.cat([torch.stack([s, -one], -1), torch.stack([one, s], -1),
                      torch.stack([-s, one], -1), torch.stack([-one, -s], -1)])
    edge = torch.cat([edge, edge[:1]])
    return retina.to_image(edge[None], fixations[:, None, :], image_hw)


def _fovea_outline(retina: Retina, fixations: torch.Tensor, image_hw, points: int = 48) -> torch.Tensor:
    a = torch.linspace(0, 2 * math.pi, points + 1, device=fixations.device, dtype=fixations.dtype)
    circle = retina.fovea * torch.stack([a.cos(), a.sin()], -1)
    return retina.to_image(circle[None], fixations[:, None, :], image_hw)


def _check_retina_size(retina_size: int, img_size: int) -> None:
    if retina_size > img_size:
        raise BioattnError(f"retina_size {retina_size} exceeds img_size {img_size}")


def _make_retina(retina_size: int, img_size: int, fovea: float, field: float | None,
                 falloff: float | None, scale: float, antialias: bool) -> Retina:
    _check_retina_size(retina_size, img_size)
    if falloff is None:
        if field is None:
            falloff = 0.0
        else:
            falloff = falloff_for_field(field, fovea, scale * retina_size / img_size)
    return Retina(retina_size, fovea=fovea, falloff=falloff, scale=scale, antialias=antialias)


# ------------------------------------------------------------------------------------------
# RS-RNN
# ------------------------------------------------------------------------------------------
class RSRNN(GlimpseModel):
    """Retinal sampling recurrent network (module docstring for the computation).

    Args:
        num_classes, in_chans, img_size: classes, input channels, training image side.
        encoder: ``'micro'`` or a timm ResNet name (its stem+layers 1-3 / layer 4).
        encoder_widths: widths of the micro encoder's three conv stages.
        num_glimpses: glimpses per image in training (and by default at evaluation).
        eval_sample: at evaluation, sample fixations (True) or take the mode (False).
        retina_size: retinal image side in pixels (default img_size // 2).
        retina_fovea: fovea radius as a fraction of the retinal half-width.
        retina_field: reach of the retina's edge from the fixation, in image units (half the
            image width is 1); sets the fall-off unless ``retina_falloff`` is given. The default
            1 fits the whole image into the retinal square when fixating its centre.
        retina_falloff: growth rate of the peripheral sample spacing (0: a plain crop).
        retina_scale: image pixels per retinal pixel in the fovea (1: full resolution).
        retina_antialias: blur the periphery with its sample spacing.
        map_size: side of the grid over the image that carries saliency, IOR and fixations.
        gru_kernel: kernel size of the ConvGRU.
        remap_state: remap the hidden state into each new fixation's retinal frame.
        detach_dorsal: the dorsal stream reads a detached hidden state.
        initial_fixation: the first fixation (x, y).
        sigma_range: (min, max) IOR width in image units.
        policy_weight, policy_discount, entropy_weight: the policy objective (module docstring).
        readout: ``"evidence"`` (the gated, novelty-weighted pool of the glimpses' features) or
            ``"state"`` (the current hidden state's features); module docstring.
        ior_decay: factor by which a past fixation's inhibition of return fades per later glimpse
            (1: permanent).
        train_glimpses: ``(min, max)``: draw the number of glimpses of each training batch from
            this range (None: always ``num_glimpses``).
        drop_rate: dropout before the classifier; drop_path_rate: ResNet encoders only.
    """

    learns_fixations = True
    fixation_modules = ("saliency_net", "sigma_net")

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        encoder: str = "resnet18",
        encoder_widths: Sequence[int] | None = None,
        num_glimpses: int = 4,
        eval_sample: bool = False,
        retina_size: int | None = None,
        retina_fovea: float = 0.5,
        retina_field: float | None = 1.0,
        retina_falloff: float | None = None,
        retina_scale: float = 1.0,
        retina_antialias: bool = True,
        map_size: int = 16,
        gru_kernel: int = 3,
        remap_state: bool = True,
        detach_dorsal: bool = True,
        initial_fixation: Sequence[float] = (0.0, 0.0),
        sigma_range: Sequence[float] = (0.05, 0.75),
        policy_weight: float = 1.0,
        policy_discount: float = 0.5,
        entropy_weight: float = 0.01,
        readout: str = "evidence",
        ior_decay: float = 0.25,
        train_glimpses: Sequence[int] | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self._init_common(num_classes, num_glimpses, in_chans, img_size)
        self._init_policy(eval_sample, map_size, initial_fixation, policy_weight, policy_discount,
                          entropy_weight, ior_decay, train_glimpses)
        if readout not in READOUTS:
            raise BioattnError(f"readout must be one of {', '.join(READOUTS)}; got {readout!r}")
        self.readout = readout
        retina_size = int(retina_size or self.img_size // 2)
        self.retina = _make_retina(retina_size, self.img_size, retina_fovea, retina_field,
                                   retina_falloff, retina_scale, retina_antialias)
        self.encoder = _build_encoder(encoder, in_chans, encoder_widths, drop_path_rate)
        c1, c2 = self.encoder.channels
        self.gru = ConvGRUCell(c1, c1, gru_kernel)
        self.head = ClassifierHead(c2, num_classes, drop_rate)
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
        _check_input(x)
        self.retina.check_images(x)
        fixations = _check_given_fixations(fixations, x.shape[0]).to(x.device, x.dtype)
        pyramid = self.retina.pyramid(x)
        return [torch.stack([self.retina(x, f, pyramid=pyramid, check=False) for f in fixations])]

    def glimpse_outlines(self, fixations: torch.Tensor, image_hw: Sequence[int]) -> list[torch.Tensor]:
        out = [_retina_outline(self.retina, fixations, image_hw)]
        if self.retina.falloff > 0 and self.retina.fovea > 0:
            out.append(_fovea_outline(self.retina, fixations, image_hw))
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


def _cell_index(fixations: torch.Tensor, grid_hw: Sequence[int]) -> torch.Tensor:
    """Index of the grid cell holding each fixation ``(B, 2)`` (row-major)."""
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    col = ((fixations[:, 0] + 1) / 2 * gw).floor().clamp(0, gw - 1).long()
    row = ((fixations[:, 1] + 1) / 2 * gh).floor().clamp(0, gh - 1).long()
    return row * gw + col


# ------------------------------------------------------------------------------------------
# Retina / Crop-S / Crop-D baselines
# ------------------------------------------------------------------------------------------
class RecurrentGlimpseNet(GlimpseModel):
    """Glimpse sensor(s), the shared encoder pooled to a vector, a 1-D GRU, a classifier, and a
    location head choosing the next fixation on a grid over the image (module docstring).

    ``glimpse='retina'`` (Retina baseline), ``'crop'`` (Crop-S: one full-resolution crop of
    ``retina_size`` pixels) or ``'crop2'`` (Crop-D: that crop and one of twice the field at half
    the resolution; ``retina_scale`` sets the first crop's pixels per image pixel, the retina's
    fovea and field do not apply). ``ior_sigma`` is the fixed inhibition-of-return width (image
    units). The other arguments are :class:`RSRNN`'s; ``hidden_size`` is the GRU's width
    (default twice Encoder2's channels). The baselines keep permanent inhibition of return
    (``ior_decay=1``) and always train with ``num_glimpses`` glimpses unless told otherwise.
    """

    learns_fixations = True
    fixation_modules = ("location_head",)

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        glimpse: str = "retina",
        encoder: str = "resnet18",
        encoder_widths: Sequence[int] | None = None,
        num_glimpses: int = 4,
        eval_sample: bool = False,
        retina_size: int | None = None,
        retina_fovea: float = 0.5,
        retina_field: float | None = 1.0,
        retina_falloff: float | None = None,
        retina_scale: float = 1.0,
        retina_antialias: bool = True,
        hidden_size: int | None = None,
        map_size: int = 16,
        ior_sigma: float = 0.25,
        initial_fixation: Sequence[float] = (0.0, 0.0),
        policy_weight: float = 1.0,
        policy_discount: float = 0.5,
        entropy_weight: float = 0.01,
        ior_decay: float = 1.0,
        train_glimpses: Sequence[int] | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self._init_common(num_classes, num_glimpses, in_chans, img_size)
        self._init_policy(eval_sample, map_size, initial_fixation, policy_weight, policy_discount,
                          entropy_weight, ior_decay, train_glimpses)
        retina_size = int(retina_size or self.img_size // 2)
        _check_retina_size(retina_size, self.img_size)
        if glimpse == "retina":
            sensors = [_make_retina(retina_size, self.img_size, retina_fovea, retina_field,
                                    retina_falloff, retina_scale, retina_antialias)]
        elif glimpse in ("crop", "crop2"):
            if retina_falloff:
                raise BioattnError(
                    "crop glimpses are uniform: retina_falloff applies to glimpse='retina' only")
            scales = (retina_scale,) if glimpse == "crop" else (retina_scale, 2 * retina_scale)
            sensors = [Retina(retina_size, fovea=0.0, falloff=0.0, scale=s, antialias=retina_antialias)
                       for s in scales]
        else:
            raise BioattnError(f"glimpse must be 'retina', 'crop' or 'crop2'; got '{glimpse}'")
        self.glimpse = glimpse
        self.sensors = nn.ModuleList(sensors)
        self.encoder = _build_encoder(encoder, in_chans, encoder_widths, drop_path_rate)
        c2 = self.encoder.channels[1]
        hidden = int(hidden_size or 2 * c2)
        self.what = nn.Linear(c2 * len(sensors), hidden)
        self.where = nn.Linear(2, hidden)
        self.gru = nn.GRUCell(hidden, hidden)
        self.head = ClassifierHead(hidden, num_classes, drop_rate)
        self.location_head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.map_size ** 2)
        )
        if ior_sigma <= 0:
            raise BioattnError(f"ior_sigma must be > 0; got {ior_sigma}")
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
        _check_input(x)
        for s in self.sensors:
            s.check_images(x)
        fixations = _check_given_fixations(fixations, x.shape[0]).to(x.device, x.dtype)
        pyramid = self._pyramid(x)
        return [torch.stack([s(x, f, pyramid=pyramid[: s.num_levels(x.shape[-2:])], check=False)
                             for f in fixations]) for s in self.sensors]

    def glimpse_outlines(self, fixations: torch.Tensor, image_hw: Sequence[int]) -> list[torch.Tensor]:
        out = [_retina_outline(s, fixations, image_hw) for s in self.sensors]
        first = self.sensors[0]
        if first.falloff > 0 and first.fovea > 0:
            out.append(_fovea_outline(first, fixations, image_hw))
        return out


# ------------------------------------------------------------------------------------------
# S3TA
# ------------------------------------------------------------------------------------------
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
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self._init_common(num_classes, num_glimpses, in_chans, img_size)
        encoder_full = _build_encoder(encoder, in_chans, encoder_widths, drop_path_rate)
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
        _check_input(x)
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
        _check_input(x)
        g = self.forward_glimpses(x, return_maps=True,
                                  glimpses=None if fixations is None else int(fixations.shape[0]))
        attn = g.maps["attention"]
        t, b = attn.shape[:2]
        up = F.interpolate(attn.reshape(t * b, 1, *attn.shape[-2:]), size=x.shape[-2:], mode="bilinear",
                           align_corners=False).reshape(t, b, 1, *x.shape[-2:])
        up = up / up.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None, None]
        return [x[None] * up.to(x.dtype)]


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
        self.encoder = _build_encoder(encoder, in_chans, encoder_widths, drop_path_rate)
        self.head = ClassifierHead(self.encoder.channels[1], num_classes, drop_rate)
        self.map_size = max(1, self.img_size // self.encoder.strides[1])

    def forward_glimpses(self, x: torch.Tensor, glimpses: int | None = None,
                         return_maps: bool = False) -> Glimpses:
        _check_input(x)
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
        _check_input(x)
        return OrderedDict([("feature norm", self.encoder(x).float().norm(dim=1))])

    def glimpse_images(self, x: torch.Tensor, fixations: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The whole image at every glimpse."""
        _check_input(x)
        t = 1 if fixations is None else int(fixations.shape[0])
        return [x[None].expand(t, *x.shape)]


# ------------------------------------------------------------------------------------------
# registration with timm
# ------------------------------------------------------------------------------------------
def _cfg(first_conv: str, **kwargs) -> dict:
    return model_cfg(**{"interpolation": "bilinear", "first_conv": first_conv, "classifier": "head.fc", **kwargs})


_RSRNN_PAPER = dict(paper_ids="arXiv:2206.07282",
                    paper_name="Human Eyes Inspired Recurrent Neural Networks are More Robust Against "
                    "Adversarial Noises")
_S3TA_PAPER = dict(paper_ids="arXiv:1912.02184",
                   paper_name="Towards Robust Image Classification Using Sequential Attention Models")
_RAM_PAPER = dict(paper_ids="arXiv:1406.6247", paper_name="Recurrent Models of Visual Attention")
_DRAM_PAPER = dict(paper_ids="arXiv:1412.7755", paper_name="Multiple Object Recognition with Visual Attention")

_MICRO_CONV = "encoder.stage1.0.conv"
_RESNET_CONV = "encoder.stage1.0"

default_cfgs = generate_default_cfgs({
    **zoo_cfgs("rsrnn_micro", _cfg(_MICRO_CONV, **MICRO_CFG, **_RSRNN_PAPER)),
    "rsrnn_resnet18": _cfg(_RESNET_CONV, **_RSRNN_PAPER),
    **zoo_cfgs("retina_gru_micro", _cfg(_MICRO_CONV, **MICRO_CFG, **_RAM_PAPER)),
    "retina_gru_resnet18": _cfg(_RESNET_CONV, **_RAM_PAPER),
    **zoo_cfgs("crop_s_micro", _cfg(_MICRO_CONV, **MICRO_CFG, **_RAM_PAPER)),
    "crop_s_resnet18": _cfg(_RESNET_CONV, **_RAM_PAPER),
    **zoo_cfgs("crop_d_micro", _cfg(_MICRO_CONV, **MICRO_CFG, **_DRAM_PAPER)),
    "crop_d_resnet18": _cfg(_RESNET_CONV, **_DRAM_PAPER),
    **zoo_cfgs("s3ta_micro", _cfg("stage1.0.conv", **MICRO_CFG, **_S3TA_PAPER)),
    "s3ta_resnet18": _cfg("stage1.0", **_S3TA_PAPER),
    **zoo_cfgs("ffcnn_micro", _cfg(_MICRO_CONV, **MICRO_CFG, **_RSRNN_PAPER)),
    "ffcnn_resnet18": _cfg(_RESNET_CONV, **_RSRNN_PAPER),
})

# Architecture of each registered size; constructor keywords override these.
_MICRO = dict(img_size=64, encoder="micro")
_RESNET18 = dict(img_size=224, encoder="resnet18")
_GLIMPSE_MICRO = dict(_MICRO, retina_size=32, map_size=16)
_GLIMPSE_RESNET18 = dict(_RESNET18, retina_size=128, map_size=28)


def _create(variant: str, cls, defaults: dict, pretrained: bool, kwargs: dict) -> nn.Module:
    check_weights_source(variant, pretrained, kwargs)
    args = dict(defaults)
    args.update(kwargs)
    return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **args)


@register_model
def rsrnn_micro(pretrained: bool = False, **kwargs) -> RSRNN:
    """RS-RNN with the micro encoder for 64x64 images (32-pixel retina, 16x16 fixation grid)."""
    return _create("rsrnn_micro", RSRNN, _GLIMPSE_MICRO, pretrained, kwargs)


@register_model
def rsrnn_resnet18(pretrained: bool = False, **kwargs) -> RSRNN:
    """RS-RNN with ResNet-18 stages for 224x224 images (128-pixel retina, 28x28 fixation grid)."""
    return _create("rsrnn_resnet18", RSRNN, _GLIMPSE_RESNET18, pretrained, kwargs)


@register_model
def retina_gru_micro(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Retina baseline (retinal glimpses, 1-D GRU) with the micro encoder."""
    return _create("retina_gru_micro", RecurrentGlimpseNet, dict(_GLIMPSE_MICRO, glimpse="retina"),
                   pretrained, kwargs)


@register_model
def retina_gru_resnet18(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Retina baseline (retinal glimpses, 1-D GRU) with ResNet-18 stages."""
    return _create("retina_gru_resnet18", RecurrentGlimpseNet, dict(_GLIMPSE_RESNET18, glimpse="retina"),
                   pretrained, kwargs)


@register_model
def crop_s_micro(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-S baseline (one 32-pixel full-resolution crop per glimpse) with the micro encoder."""
    return _create("crop_s_micro", RecurrentGlimpseNet, dict(_GLIMPSE_MICRO, glimpse="crop"),
                   pretrained, kwargs)


@register_model
def crop_s_resnet18(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-S baseline (one 128-pixel full-resolution crop per glimpse) with ResNet-18 stages."""
    return _create("crop_s_resnet18", RecurrentGlimpseNet, dict(_GLIMPSE_RESNET18, glimpse="crop"),
                   pretrained, kwargs)


@register_model
def crop_d_micro(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-D baseline (crops at two scales per glimpse) with the micro encoder."""
    return _create("crop_d_micro", RecurrentGlimpseNet, dict(_GLIMPSE_MICRO, glimpse="crop2"),
                   pretrained, kwargs)


@register_model
def crop_d_resnet18(pretrained: bool = False, **kwargs) -> RecurrentGlimpseNet:
    """Crop-D baseline (crops at two scales per glimpse) with ResNet-18 stages."""
    return _create("crop_d_resnet18", RecurrentGlimpseNet, dict(_GLIMPSE_RESNET18, glimpse="crop2"),
                   pretrained, kwargs)


@register_model
def s3ta_micro(pretrained: bool = False, **kwargs) -> S3TA:
    """S3TA (covert soft attention with an LSTM) with the micro encoder."""
    return _create("s3ta_micro", S3TA, _MICRO, pretrained, kwargs)


@register_model
def s3ta_resnet18(pretrained: bool = False, **kwargs) -> S3TA:
    """S3TA (covert soft attention with an LSTM) with ResNet-18 stages."""
    return _create("s3ta_resnet18", S3TA, _RESNET18, pretrained, kwargs)


@register_model
def ffcnn_micro(pretrained: bool = False, **kwargs) -> FFCNN:
    """FF-CNN: the micro encoder and classifier, feedforward on the whole image."""
    return _create("ffcnn_micro", FFCNN, _MICRO, pretrained, kwargs)


@register_model
def ffcnn_resnet18(pretrained: bool = False, **kwargs) -> FFCNN:
    """FF-CNN: ResNet-18 (as the shared encoder) and classifier on the whole image."""
    return _create("ffcnn_resnet18", FFCNN, _RESNET18, pretrained, kwargs)
