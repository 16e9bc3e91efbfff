"""Glimpse models: what RS-RNN and its baselines share.

The recurrent glimpse models (RS-RNN, :mod:`bioattn.models.rsrnn`, with its feedforward baseline
FF-CNN; the recurrent attention model baselines Retina, Crop-S and Crop-D,
:mod:`bioattn.models.ram`; S3TA, :mod:`bioattn.models.s3ta`) are built on this module: the
fixation policy's pieces (saliency times inhibition of return, a 2-D softmax over a grid on the
image, its sampler), the encoders they share (a micro CNN or a timm ResNet split into Encoder1
and Encoder2), the classifier head, and :class:`GlimpseModel`, the base class with the glimpse
loop, the readouts, the policy objective, the maps and timm's classifier interface.

All models look at an image through a sequence of glimpses and predict after every one.
Fixations are image coordinates in ``[-1, 1]^2``, x then y (the ``grid_sample`` convention,
``(-1, -1)`` the top-left corner).

Training objective (:meth:`GlimpseModel.compute_loss`): the classification ``criterion`` averaged
over all glimpses, plus a REINFORCE term for the fixation policy. The decision that chose
``l_{t+1}`` (the fixation of glimpse t + 1) is rewarded by how much it lowered the cross-entropy
against the target (hard labels or soft mixup targets), ``r_t = CE_t - CE_{t+1}``, plus the later
improvements discounted by ``policy_discount``: the return ``R_t = sum_k policy_discount^(k-t) r_k``.
Subtracting ``CE_t`` (which the decision cannot change) is already a baseline; the batch mean of
``R_t`` is subtracted as a second one. The term is ``-policy_weight * mean(A_t log P_t(l_{t+1}))``
minus ``entropy_weight`` times the policy's mean entropy (which keeps it exploring early on). The
sampled fixations are not differentiable, everything else is: attacks reach the input through the
retina's ``grid_sample`` at every glimpse.

The fixation networks (RS-RNN's saliency and σ networks, the baselines' location head; see
:meth:`GlimpseModel.fixation_parameter_names`) learn from the policy term only: in a plain
timm-style loop, ``criterion(model(x), y)`` gives them no gradient and they keep their initial
fixation policy. bioattn's trainer trains them through ``forward_readouts`` and
:meth:`GlimpseModel.compute_loss`.

``train_glimpses=(lo, hi)`` draws the number of glimpses of each training batch uniformly from
``lo..hi`` (default: always ``num_glimpses``).

Interface shared by all (:mod:`bioattn.protocol`'s multi-readout, glimpsing and map-producing
capabilities): ``model(x)`` gives the last glimpse's logits in train and eval mode;
``forward_readouts(x, readouts=None)`` gives a :class:`~bioattn.protocol.ModelOutput` with every
glimpse's logits; ``forward_glimpses(x, glimpses=None, return_maps=False)`` gives a
:class:`Glimpses` named tuple; ``attention_maps(x)`` and ``saliency(x)`` give maps on the model's
grid; ``glimpse_images`` gives what each glimpse saw and ``glimpse_outlines`` the outline of its
field on the image. ``forward_features`` / ``forward_head`` split the last glimpse's prediction at
the classifier.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg
from torch import nn

from ..errors import BioattnError
from ..protocol import ModelOutput, readout_loss
from .common import check_num_classes, check_weights_source, checkpoint_filter_fn, model_cfg
from .retina import Retina, check_fixations, coordinate_grid, falloff_for_field

__all__ = [
    "Glimpses", "FixationChoice", "GlimpseModel", "FixatingModel", "Encoder", "ClassifierHead", "micro_encoder",
    "resnet_encoder", "build_encoder", "gaussian_blobs", "inhibition_of_return", "fixation_density", "choose_fixation",
]


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


def build_encoder(encoder: str, in_chans: int, widths, drop_path_rate: float) -> Encoder:
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


def check_input(x) -> None:
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
        check_input(x)
        self._check_images(x)
        b, hw = x.shape[0], x.shape[-2:]
        if fixations is not None:
            fixations = check_given_fixations(fixations, b).to(x.device, torch.float32)
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


class FixatingModel(GlimpseModel):
    """A glimpse model that looks through a retina-like sensor at fixations its own policy
    chooses (RS-RNN and the recurrent glimpse baselines): the settings they share and the shared
    encoder. Subclasses build their sensors (:meth:`make_retina`), their memory and their
    fixation policy.

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
        initial_fixation: the first fixation (x, y).
        policy_weight, policy_discount, entropy_weight: the policy objective (module docstring).
        ior_decay: factor by which a past fixation's inhibition of return fades per later glimpse
            (1: permanent).
        train_glimpses: ``(min, max)``: draw the number of glimpses of each training batch from
            this range (None: always ``num_glimpses``).
        drop_rate: dropout before the classifier; drop_path_rate: ResNet encoders only.
    """

    learns_fixations = True

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
        self.retina_size = int(retina_size or self.img_size // 2)
        check_retina_size(self.retina_size, self.img_size)
        self.retina_fovea, self.retina_field, self.retina_falloff = retina_fovea, retina_field, retina_falloff
        self.retina_scale, self.retina_antialias = retina_scale, retina_antialias
        self.drop_rate = drop_rate
        self.encoder = build_encoder(encoder, in_chans, encoder_widths, drop_path_rate)

    def make_retina(self) -> Retina:
        """The retina of this model's settings."""
        return make_retina(self.retina_size, self.img_size, self.retina_fovea, self.retina_field,
                           self.retina_falloff, self.retina_scale, self.retina_antialias)


def check_given_fixations(fixations: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(fixations, torch.Tensor) or fixations.dim() not in (2, 3) or fixations.shape[-1] != 2:
        raise BioattnError("fixations must have shape (T, B, 2) or (T, 2) (x, y in [-1, 1])")
    if fixations.dim() == 2:
        fixations = fixations[:, None, :].expand(-1, batch, -1)
    if fixations.shape[0] < 1:
        raise BioattnError("fixations must hold at least one glimpse")
    for t in range(fixations.shape[0]):
        check_fixations(fixations[t], batch)
    return fixations


def retina_outline(retina: Retina, fixations: torch.Tensor, image_hw, points: int = 16) -> torch.Tensor:
    """Image coordinates ``(B, 4 * points + 1, 2)`` of the retinal square's edge."""
    s = torch.linspace(-1, 1, points + 1, device=fixations.device, dtype=fixations.dtype)[:-1]
    one = torch.ones_like(s)
    edge = torch.cat([torch.stack([s, -one], -1), torch.stack([one, s], -1),
                      torch.stack([-s, one], -1), torch.stack([-one, -s], -1)])
    edge = torch.cat([edge, edge[:1]])
    return retina.to_image(edge[None], fixations[:, None, :], image_hw)


def fovea_outline(retina: Retina, fixations: torch.Tensor, image_hw, points: int = 48) -> torch.Tensor:
    a = torch.linspace(0, 2 * math.pi, points + 1, device=fixations.device, dtype=fixations.dtype)
    circle = retina.fovea * torch.stack([a.cos(), a.sin()], -1)
    return retina.to_image(circle[None], fixations[:, None, :], image_hw)


def check_retina_size(retina_size: int, img_size: int) -> None:
    if retina_size > img_size:
        raise BioattnError(f"retina_size {retina_size} exceeds img_size {img_size}")


def make_retina(retina_size: int, img_size: int, fovea: float, field: float | None,
                 falloff: float | None, scale: float, antialias: bool) -> Retina:
    check_retina_size(retina_size, img_size)
    if falloff is None:
        if field is None:
            falloff = 0.0
        else:
            falloff = falloff_for_field(field, fovea, scale * retina_size / img_size)
    return Retina(retina_size, fovea=fovea, falloff=falloff, scale=scale, antialias=antialias)




def _cell_index(fixations: torch.Tensor, grid_hw: Sequence[int]) -> torch.Tensor:
    """Index of the grid cell holding each fixation ``(B, 2)`` (row-major)."""
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    col = ((fixations[:, 0] + 1) / 2 * gw).floor().clamp(0, gw - 1).long()
    row = ((fixations[:, 1] + 1) / 2 * gh).floor().clamp(0, gh - 1).long()
    return row * gw + col




# ------------------------------------------------------------------------------------------
# registration with timm: what the glimpse models' registrations share
# ------------------------------------------------------------------------------------------
def glimpse_cfg(first_conv: str, **kwargs) -> dict:
    """A glimpse model's ``pretrained_cfg``: bilinear resizing, the classifier ``head.fc``."""
    return model_cfg(**{"interpolation": "bilinear", "first_conv": first_conv, "classifier": "head.fc", **kwargs})


MICRO_FIRST_CONV = "encoder.stage1.0.conv"
RESNET_FIRST_CONV = "encoder.stage1.0"

# Architecture of each registered size; constructor keywords override these.
MICRO = dict(img_size=64, encoder="micro")
RESNET18 = dict(img_size=224, encoder="resnet18")
GLIMPSE_MICRO = dict(MICRO, retina_size=32, map_size=16)
GLIMPSE_RESNET18 = dict(RESNET18, retina_size=128, map_size=28)


def create_glimpse_model(variant: str, cls, defaults: dict, pretrained: bool, kwargs: dict) -> nn.Module:
    check_weights_source(variant, pretrained, kwargs)
    args = dict(defaults)
    args.update(kwargs)
    return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **args)
