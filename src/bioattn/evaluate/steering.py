"""Steering: does a class prior move AbSViT's top-down attention onto that class's object?

On two-object images (``embedded:pair``) with objects A and B, each image is seen twice: with
A's class as the prior and with B's. For each prompt, the top-down map (upsampled to the masks'
size) gives its *share* of mass inside each object's mask, and the prompt's score is

    share on the prompted object - share on the other object,

in [-1, 1]. An image's score is the mean of its two prompts' scores. Averaging over the two
prompts removes how salient each object is anyway: a map that sits on A whatever the prompt
scores +1 for prompt A and -1 for prompt B, so 0 for the image; a map that follows the prompt
scores +1 for both, so +1. The image score equals the *shift* of earlier versions: how much an
object's share rises when its own class, rather than the other's, is the prior, averaged over
the two objects.

Images are the unit of every statistic (the two prompts of one image are not independent):
:func:`per_image_test` gives the mean image score, its t interval, a one-sample t test and a
Wilcoxon signed-rank test against 0, and the share of images scoring above 0.

The protocol (the prior's mask scale and the map threshold) is fixed before the test images are
seen: :func:`choose_prior_scale` picks it on validation pairs, and :func:`steering_benchmark`
applies it to the pairs it scores, recording it in its result. Without a choice the protocol is
the authors' demo: scale 40, the raw token-norm map.

:func:`steering_by_block` follows the contrast between two prompts through the blocks of the
second pass, under a *perfect* prior (each object's true mask as the prior's token mask) or
under the class priors, to show where a contrast that enters as a top-down signal is lost.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from ..attention.maps import upsample
from ..data.subsets import spread_indices
from ..errors import BioattnError
from ..protocol import TopDownSteerable, evaluating, unwrap

__all__ = ["DEFAULT_PRIOR_SCALE", "PRIOR_SCALES", "MAP_THRESHOLDS", "threshold_maps", "object_shares",
           "prompted_minus_other", "per_image_test", "check_pairs", "check_steerable", "check_classes",
           "fixed_protocol", "choose_prior_scale", "steering_benchmark", "benchmark_summary", "jsonable",
           "steering_by_block", "steering_score", "steering_score_dataset", "steered_maps"]

# The authors' demo scales the class prior's mask by 40.
DEFAULT_PRIOR_SCALE = 40.0
# The candidates :func:`choose_prior_scale` tries: mask scales, and map thresholds (None: the raw
# map; 0.7: the authors' display, which keeps what lies above 0.7 max + 0.3 min).
PRIOR_SCALES: tuple[float, ...] = (1.0, 3.0, 10.0, 20.0, 40.0, 80.0, 160.0)
MAP_THRESHOLDS: tuple[float | None, ...] = (None, 0.7)
VALIDATION_IMAGES = 500
# What :func:`steering_by_block` follows through the blocks.
_STAGES = ("signal", "mixed", "change", "output")
_ATTENTION = ("attention_from_object", "attention_from_all", "attended_tokens")


# ------------------------------------------------------------------------------------------
# scores of given maps
# ------------------------------------------------------------------------------------------
def threshold_maps(maps: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """The part of each map (last two dims) that counts: the raw map clamped at 0 without a
    threshold; with threshold ``t`` in [0, 1), ``(a - (t max + (1 - t) min)).clamp(0)`` (``t = 0.7``
    is the authors' display normalisation)."""
    if threshold is None:
        return maps.clamp(min=0)
    if not 0.0 <= float(threshold) < 1.0:
        raise BioattnError(f"the map threshold must be in [0, 1), got {threshold}")
    flat = maps.flatten(-2)
    high = flat.amax(dim=-1, keepdim=True)
    low = flat.amin(dim=-1, keepdim=True)
    level = threshold * high + (1.0 - threshold) * low
    return (flat - level).clamp(min=0).reshape(maps.shape)


def object_shares(maps: torch.Tensor, masks: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Share of each prompt's map inside each object's mask, ``(B, prompt j, object k)``.

    ``maps`` ``(B, 2, h, w)``: the map under object 0's class and under object 1's (upsampled
    bilinearly to the masks' size when smaller); ``masks`` ``(B, 2, H, W)``, bool or in [0, 1],
    in the same object order. A map with no mass left after thresholding has share 0 everywhere.
    """
    if maps.ndim != 4 or masks.ndim != 4 or maps.shape[:2] != masks.shape[:2] or maps.shape[1] != 2:
        raise BioattnError(f"maps and masks must be (B, 2, h, w) and (B, 2, H, W), got "
                           f"{tuple(maps.shape)} and {tuple(masks.shape)}")
    size = tuple(masks.shape[-2:])
    if tuple(maps.shape[-2:]) != size:
        maps = upsample(maps.flatten(0, 1), size).reshape(*maps.shape[:2], *size)
    maps = threshold_maps(maps.float(), threshold)
    masks = masks.to(device=maps.device, dtype=torch.float32)
    total = maps.sum(dim=(-2, -1)).clamp(min=torch.finfo(maps.dtype).tiny)  # (B, j)
    inside = (maps.unsqueeze(2) * masks.unsqueeze(1)).sum(dim=(-2, -1))    # (B, j, k)
    return inside / total.unsqueeze(-1)


def prompted_minus_other(shares: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per image and prompt, the share on the prompted object minus the share on the other,
    ``(B, 2)`` (column j: object j's class as the prior), from :func:`object_shares`."""
    s = np.asarray(shares.detach().cpu() if torch.is_tensor(shares) else shares, dtype=np.float64)
    if s.ndim != 3 or s.shape[1:] != (2, 2):
        raise BioattnError(f"shares must be (B, 2, 2), got {s.shape}")
    return np.stack([s[:, 0, 0] - s[:, 0, 1], s[:, 1, 1] - s[:, 1, 0]], axis=1)


def per_image_test(scores: np.ndarray | Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Statistics of per-image scores against 0, images as the unit.

    Returns ``mean``, ``std`` (sample standard deviation), ``ci_low``/``ci_high`` (the t
    interval of the mean at ``confidence``), ``t_statistic``/``t_p`` (one-sample t test, two-sided),
    ``wilcoxon_statistic``/``wilcoxon_p`` (Wilcoxon signed-rank test, two-sided, zero scores
    dropped), ``fraction_positive`` (images scoring above 0) and ``n_images``. Figures that
    need more images than given (or nonzero scores, for the Wilcoxon test) are NaN.
    """
    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = int(x.size)
    if n == 0:
        raise BioattnError("the per-image test needs at least one image")
    if not np.all(np.isfinite(x)):
        raise BioattnError("the per-image scores must be finite")
    if not 0.0 < confidence < 1.0:
        raise BioattnError(f"the confidence must be in (0, 1), got {confidence}")
    out: dict[str, Any] = {
        "mean": float(x.mean()), "std": math.nan, "ci_low": math.nan, "ci_high": math.nan,
        "confidence": float(confidence), "t_statistic": math.nan, "t_p": math.nan,
        "wilcoxon_statistic": math.nan, "wilcoxon_p": math.nan,
        "fraction_positive": float((x > 0).mean()), "n_images": n,
    }
    if n >= 2:
        out["std"] = float(x.std(ddof=1))
        if out["std"] > 0:
            t = stats.ttest_1samp(x, 0.0)
            low, high = t.confidence_interval(confidence)
            out.update(t_statistic=float(t.statistic), t_p=float(t.pvalue), ci_low=float(low), ci_high=float(high))
        else:  # every image scores the same: the interval is that score
            out.update(ci_low=out["mean"], ci_high=out["mean"])
    if np.count_nonzero(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small samples: scipy warns that its p is exact or approximate
            w = stats.wilcoxon(x)
        out.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue))
    return out


# ------------------------------------------------------------------------------------------
# maps of a model on two-object images
# ------------------------------------------------------------------------------------------
def check_steerable(model: nn.Module) -> nn.Module:
    """The model itself (unwrapped) if a prior steers it; otherwise a :class:`BioattnError`."""
    inner = unwrap(model)
    if not isinstance(inner, TopDownSteerable):
        raise BioattnError(f"steering needs a model with top-down priors (AbSViT); {type(inner).__name__} has none")
    return inner


def check_pairs(dataset) -> tuple[np.ndarray, np.ndarray]:
    """The two labels ``(N, 2)`` and masks ``(N, 2, H, W)`` of a two-object data set; a
    :class:`BioattnError` for any other data set."""
    arrays = getattr(dataset, "arrays", None)
    labels = getattr(arrays, "labels", None)
    masks = getattr(arrays, "masks", None)
    if labels is None or masks is None or labels.ndim != 2 or masks.ndim != 4 or labels.shape[1] != 2:
        raise BioattnError("the steering score needs two-object images with their masks (data 'embedded:pair')")
    return labels, masks


def check_classes(model: nn.Module, pairs) -> None:
    """Refuse pairs labelled with another set of classes than the model's: a class prior is the
    classifier row of the pair's label, which must then be the class the model knows by it."""
    n_model = getattr(unwrap(model), "num_classes", None)
    classes = getattr(pairs, "classes", None)
    n_pairs = len(classes) if classes is not None else None
    if isinstance(n_model, int) and n_pairs is not None and n_model != n_pairs:
        raise BioattnError(f"the model has {n_model} classes but the two-object images are labelled with "
                           f"{n_pairs}: a class prior needs images labelled with the model's classes")


def _check_batch(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4:
        raise BioattnError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    if tuple(labels.shape) != (n, 2):
        raise BioattnError(f"labels must be (B, 2) = ({n}, 2), got {tuple(labels.shape)}")
    if masks.ndim != 4 or tuple(masks.shape[:2]) != (n, 2):
        raise BioattnError(f"masks must be (B, 2, H, W) with B = {n}, got {tuple(masks.shape)}")
    if n == 0:
        raise BioattnError("steering score needs at least one image")


class _Evaluating:
    """The model in eval mode on its device for the duration of a ``with`` block."""

    def __init__(self, model: nn.Module, device: torch.device | str | None):
        self.model = check_steerable(model)
        self.device = torch.device(device) if device is not None else next(self.model.parameters()).device

    def __enter__(self) -> _Evaluating:
        self._mode = evaluating(self.model)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    @torch.no_grad()
    def maps(self, images: torch.Tensor, labels: torch.Tensor, prior_scale: float) -> torch.Tensor:
        """The top-down maps ``(B, 2, h, w)`` under each object's class."""
        x = images.to(self.device)
        y = labels.to(device=self.device, dtype=torch.long)
        return torch.stack(self.model.top_down_maps(x, [y[:, 0], y[:, 1]], prior_scale=prior_scale), dim=1)


def _batches(dataset, indices: Sequence[int], batch_size: int
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, labels, masks) of ``indices`` of a two-object data set, ``batch_size`` at a time."""
    labels, masks = check_pairs(dataset)
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start:start + batch_size])
        images = torch.stack([dataset[i][0] for i in chunk])
        yield images, torch.as_tensor(np.asarray(labels[chunk])), torch.as_tensor(np.asarray(masks[chunk]))


def _chosen(dataset, limit: int | None) -> list[int]:
    indices = spread_indices(len(dataset), None if limit is None else int(limit))
    if not indices:
        raise BioattnError("steering score needs at least one image")
    return indices


def _dataset_shares(model: nn.Module, dataset, indices: Sequence[int], prior_scales: Sequence[float],
                    thresholds: Sequence[float | None], batch_size: int,
                    device: torch.device | str | None) -> dict[tuple[float, float | None], np.ndarray]:
    """Shares ``(N, 2, 2)`` of ``indices`` of ``dataset`` under every (scale, threshold): each
    image is read once and each scale's maps computed once for all thresholds."""
    if batch_size < 1:
        raise BioattnError(f"batch_size must be at least 1, got {batch_size}")
    parts: dict[tuple[float, float | None], list[torch.Tensor]] = {
        (float(s), t): [] for s in prior_scales for t in thresholds}
    with _Evaluating(model, device) as run:
        for images, labels, masks in _batches(dataset, indices, batch_size):
            for scale in prior_scales:
                maps = run.maps(images, labels, float(scale))
                for threshold in thresholds:
                    parts[(float(scale), threshold)].append(object_shares(maps, masks, threshold).cpu())
    return {key: torch.cat(value).double().numpy() for key, value in parts.items()}


# ------------------------------------------------------------------------------------------
# the protocol and the benchmark
# ------------------------------------------------------------------------------------------
def fixed_protocol(prior_scale: float = DEFAULT_PRIOR_SCALE, threshold: float | None = None) -> dict[str, Any]:
    """A protocol given in advance (not chosen on data): the prior's mask scale and the map
    threshold (None: the raw map)."""
    _check_protocol(prior_scale, threshold)
    return {"prior_scale": float(prior_scale), "threshold": threshold, "chosen_on": None}


def _check_protocol(prior_scale: float, threshold: float | None) -> None:
    if isinstance(prior_scale, bool) or not isinstance(prior_scale, (int, float)) or not (
            math.isfinite(prior_scale) and prior_scale > 0):
        raise BioattnError(f"the prior scale must be a positive number, got {prior_scale!r}")
    if threshold is not None and not 0.0 <= float(threshold) < 1.0:
        raise BioattnError(f"the map threshold must be in [0, 1), got {threshold}")


def choose_prior_scale(
    model: nn.Module,
    validation_pairs,
    scales: Sequence[float] = PRIOR_SCALES,
    thresholds: Sequence[float | None] = MAP_THRESHOLDS,
    limit: int | None = VALIDATION_IMAGES,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """The steering protocol, chosen on validation pairs only: the prior scale (and map
    threshold) whose mean image score is highest on ``limit`` images of ``validation_pairs``
    (spread evenly over it; ties go to the earlier candidate). Give it a validation split,
    never the pairs the benchmark will score.

    Returns ``prior_scale``, ``threshold``, ``chosen_on`` (``"validation pairs"``),
    ``n_images`` and ``candidates``: every candidate's scale, threshold, mean image score and
    its interval, in the order tried. Pass the result as :func:`steering_benchmark`'s
    ``protocol``.
    """
    scales = [float(s) for s in scales]
    thresholds = list(thresholds)
    if not scales or not thresholds:
        raise BioattnError("choose the prior scale among at least one scale and one threshold")
    for scale in scales:
        for threshold in thresholds:
            _check_protocol(scale, threshold)
    check_pairs(validation_pairs)
    check_steerable(model)
    check_classes(model, validation_pairs)
    indices = _chosen(validation_pairs, limit)
    shares = _dataset_shares(model, validation_pairs, indices, scales, thresholds, batch_size, device)
    candidates = []
    for (scale, threshold), s in shares.items():
        summary = per_image_test(prompted_minus_other(s).mean(axis=1))
        candidates.append({"prior_scale": scale, "threshold": threshold, "mean": summary["mean"],
                           "ci_low": summary["ci_low"], "ci_high": summary["ci_high"]})
    best = max(range(len(candidates)), key=lambda i: (candidates[i]["mean"], -i))
    return {"prior_scale": candidates[best]["prior_scale"], "threshold": candidates[best]["threshold"],
            "chosen_on": "validation pairs", "n_images": len(indices), "candidates": candidates}


def steering_benchmark(
    model: nn.Module,
    pairs,
    *,
    protocol: dict[str, Any] | None = None,
    prior_scale: float | None = None,
    threshold: float | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-image steering on two-object images.

    ``pairs``: an ``EmbeddedDataset`` of ``embedded:pair`` arrays (normalised images from
    ``pairs[i]``, the two labels and masks from ``pairs.arrays``), scored on ``limit`` of its
    images spread evenly over it. The protocol is ``protocol`` (from :func:`choose_prior_scale`
    on validation pairs, or :func:`fixed_protocol`), else ``prior_scale`` and ``threshold``
    given here, else the authors' demo (scale 40, raw map).

    Returns the per-image arrays ``indices`` ``(N,)`` (rows of ``pairs``), ``shares``
    ``(N, 2, 2)`` (:func:`object_shares`), ``prompted_minus_other`` ``(N, 2)`` and ``score``
    ``(N,)``; the statistics of :func:`per_image_test` on ``score`` (``mean``, ``ci_low``,
    ``ci_high``, ``t_p``, ``wilcoxon_p``, ``fraction_positive``, ``n_images``...); the protocol
    (``prior_scale``, ``threshold``, and ``protocol`` itself); and the figures of earlier
    versions: ``prompted_share`` and ``other_share`` (mean shares), ``win_rate`` (fraction of
    image-prompt pairs where the prompted object holds more), ``shift`` (the mean score) and
    ``shift_win_rate`` (the fraction of images above 0), ``n_pairs``.
    """
    check_pairs(pairs)
    check_steerable(model)
    check_classes(model, pairs)
    if protocol is not None and (prior_scale is not None or threshold is not None):
        raise BioattnError("give a protocol or a prior scale and threshold, not both")
    if protocol is None:
        protocol = fixed_protocol(DEFAULT_PRIOR_SCALE if prior_scale is None else prior_scale, threshold)
    if "prior_scale" not in protocol or "threshold" not in protocol:
        raise BioattnError("a steering protocol names its prior_scale and threshold (see choose_prior_scale)")
    _check_protocol(protocol["prior_scale"], protocol["threshold"])
    scale, level = float(protocol["prior_scale"]), protocol["threshold"]
    indices = _chosen(pairs, limit)
    shares = _dataset_shares(model, pairs, indices, [scale], [level], batch_size, device)[(scale, level)]
    return _summarise(np.asarray(indices), shares, protocol, confidence)


def steered_maps(model: nn.Module, pairs, indices: Sequence[int], protocol: dict[str, Any],
                 device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """What the benchmark scores on ``indices`` of ``pairs`` under ``protocol``, to draw: ``images``,
    ``labels`` ``(N, 2)``, ``masks`` and ``maps`` ``(N, 2, H, W)`` (column j: under object j's class,
    at the masks' size, thresholded as scored) and ``shares`` ``(N, 2, 2)``."""
    check_classes(model, pairs)
    _check_protocol(protocol["prior_scale"], protocol["threshold"])
    images, labels, masks = next(_batches(pairs, list(indices), max(len(indices), 1)))
    with _Evaluating(model, device) as run:
        maps = run.maps(images, labels, float(protocol["prior_scale"])).float().cpu()
    shown = upsample(maps.flatten(0, 1), tuple(masks.shape[-2:])).reshape(*maps.shape[:2], *masks.shape[-2:])
    return dict(images=images, labels=labels, masks=masks.bool(), maps=threshold_maps(shown, protocol["threshold"]),
                shares=object_shares(maps, masks, protocol["threshold"]))


def _summarise(indices: np.ndarray, shares: np.ndarray, protocol: dict[str, Any], confidence: float) -> dict:
    differences = prompted_minus_other(shares)
    score = differences.mean(axis=1)
    own = np.stack([shares[:, 0, 0], shares[:, 1, 1]], axis=1)
    other = np.stack([shares[:, 0, 1], shares[:, 1, 0]], axis=1)
    summary = per_image_test(score, confidence)
    return {
        "indices": indices, "shares": shares, "prompted_minus_other": differences, "score": score,
        **summary,
        "prior_scale": float(protocol["prior_scale"]), "threshold": protocol["threshold"], "protocol": protocol,
        "prompted_share": float(own.mean()), "other_share": float(other.mean()),
        "win_rate": float((own > other).mean()), "shift": summary["mean"],
        "shift_win_rate": summary["fraction_positive"], "n_pairs": int(own.size),
    }


def jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """A benchmark result with its arrays as (nested) lists, for a results file."""
    return {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in result.items()}


def benchmark_summary(result: dict[str, Any]) -> str:
    """One line: the mean image score, its interval, the tests' p-values, the share of images
    above 0 and the protocol."""
    level = result.get("threshold")
    protocol = result.get("protocol") or {}
    origin = f"chosen on {protocol['chosen_on']}" if protocol.get("chosen_on") else "fixed in advance"
    return (f"steering: mean image score {result['mean']:+.4f} "
            f"({100 * result.get('confidence', 0.95):.0f}% interval {result['ci_low']:+.4f} to "
            f"{result['ci_high']:+.4f}), t test p = {result['t_p']:.3g}, Wilcoxon p = {result['wilcoxon_p']:.3g}, "
            f"{100 * result['fraction_positive']:.1f}% of {result['n_images']} images above 0 "
            f"(prior scale {result['prior_scale']:g}, {'raw map' if level is None else f'map threshold {level:g}'}, "
            f"{origin})")


# ------------------------------------------------------------------------------------------
# where the contrast between prompts is lost
# ------------------------------------------------------------------------------------------
def _object_means(values: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(B, P)`` over each object's patches, weighted by how much of each
    patch the object covers (``cover`` ``(B, 2, P)``): ``(B, 2)``."""
    return (cover * values.unsqueeze(1)).sum(-1) / cover.sum(-1).clamp(min=torch.finfo(cover.dtype).tiny)


def _contrast(per_prompt: torch.Tensor) -> torch.Tensor:
    """``(B, prompt j, object k)`` -> per image, the prompted object's value minus the other's,
    averaged over the two prompts ``(B,)``: the benchmark's image score on any quantity."""
    return 0.5 * ((per_prompt[:, 0, 0] - per_prompt[:, 0, 1]) + (per_prompt[:, 1, 1] - per_prompt[:, 1, 0]))


@torch.no_grad()
def steering_by_block(
    model: nn.Module,
    pairs,
    prior: str = "mask",
    prior_scale: float = DEFAULT_PRIOR_SCALE,
    limit: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Where, block by block of AbSViT's second pass, the difference between two prompts is lost.

    Each image of ``pairs`` (two-object images, as :func:`steering_benchmark` reads them) runs
    its second pass twice, once per object as the prompted one. ``prior="mask"`` is a perfect
    prior: the token mask is ``prior_scale`` times the fraction of each patch that the prompted
    object covers (0 for prefix tokens), in place of the class prior's
    ``prior_scale * clamp(cos(token, head.weight[y]), 0, 1)``; ``prior="class"`` uses the class
    priors themselves.

    For each per-patch quantity, block and image, the *contrast* is the benchmark's image score
    computed on it, relative to the quantity's mean (:func:`_second_pass_quantities` lists the
    quantities and the attention shares).

    Returns ``mask`` (mean and 95% t interval over images); ``blocks``: one row per block with
    the mean and interval of each quantity (``signal``, ``signal_low``, ``signal_high``, ...,
    ``change_ratio``, ``attention_from_object``, ``attention_from_all``, ``attended_tokens``);
    ``map_block`` (the block whose output is the map), ``prior``,
    ``prior_scale`` and ``n_images``.
    """
    from ..models.absvit import AbSViT, map_depth
    from ..models.common import embed_tokens

    check_pairs(pairs)
    inner = unwrap(model)
    if not isinstance(inner, AbSViT):
        raise BioattnError(f"the block-by-block diagnostic reads AbSViT's passes; got {type(inner).__name__}")
    if prior not in ("mask", "class"):
        raise BioattnError(f"prior must be 'mask' (the objects' true masks) or 'class', got {prior!r}")
    _check_protocol(prior_scale, None)
    indices = _chosen(pairs, limit)
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in ("mask", *_STAGES, "ratio", *_ATTENTION)}
    with _Evaluating(inner, device) as run:
        h, w = inner.patch_embed.grid_size
        weight, bias = inner.feedback_value_weights()
        biases = None if bias is None else bias.split(inner.embed_dim)
        for images, labels, masks in _batches(pairs, indices, batch_size):
            x = images.to(run.device)
            y = labels.to(device=run.device, dtype=torch.long)
            # fraction of each patch covered by each object: (B, 2, h*w)
            cover = F.adaptive_avg_pool2d(masks.to(device=run.device, dtype=torch.float32), (h, w)).flatten(2)
            tokens = embed_tokens(inner, x)
            first: list = []
            features = inner.norm(inner.run_blocks(tokens, record=first))
            per_prompt: dict[str, list[torch.Tensor]] = {key: [] for key in ("mask", *_STAGES)}
            attention: dict[str, list[torch.Tensor]] = {key: [] for key in _ATTENTION}
            for j in range(2):
                if prior == "mask":
                    prefix = cover.new_zeros(cover.shape[0], inner.num_prefix_tokens)
                    token_mask = prior_scale * torch.cat([prefix, cover[:, j]], dim=1).unsqueeze(-1)
                else:
                    token_mask = inner.prior_mask(features, y[:, j], prior_scale)
                quantities, attended = _second_pass_quantities(inner, tokens, features, first, token_mask,
                                                               cover[:, j], weight, biases)
                for key, value in quantities.items():
                    per_prompt[key].append(value)
                for key, value in attended.items():
                    attention[key].extend(value)
            for key, value in per_prompt.items():
                parts[key].append(_relative_contrast(torch.stack(value, dim=1), cover))
            change, output = torch.stack(per_prompt["change"], 1), torch.stack(per_prompt["output"], 1)
            parts["ratio"].append(change.mean(dim=(1, 3)) / output.mean(dim=(1, 3)).clamp(min=1e-12))
            depth = len(inner.blocks)
            for key, value in attention.items():  # (prompt, block) in order -> (B, block), mean over prompts
                parts[key].append(torch.stack(value, 1).reshape(-1, 2, depth).mean(1))

    figures = {key: torch.cat(value).double().numpy() for key, value in parts.items()}
    mask = per_image_test(figures["mask"][:, 0])
    return {
        "prior": prior, "prior_scale": float(prior_scale), "n_images": len(indices),
        "map_block": map_depth(inner) - 1,
        "mask": {"mean": mask["mean"], "ci_low": mask["ci_low"], "ci_high": mask["ci_high"]},
        "blocks": _block_rows(figures, len(inner.blocks)),
    }


def _second_pass_quantities(inner: nn.Module, tokens: torch.Tensor, features: torch.Tensor, first: list,
                            token_mask: torch.Tensor, cover: torch.Tensor, weight: torch.Tensor, biases
                            ) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
    """One prompt's second pass, block by block: the per-patch quantities of
    :func:`steering_by_block` and the attention shares on the prompted object (``cover``: its
    fraction of each patch).

    For a per-patch quantity, block and image, the *contrast* is the benchmark's image score
    computed on it: its mean over the prompted object's patches minus its mean over the other
    object's, averaged over the two prompts (0 when the quantity does not follow the prompt),
    divided by the quantity's mean over all patches and both prompts so that blocks compare.
    Quantities, per block ``l``:

    * ``signal``: the norm of block ``l``'s top-down value signal without its bias (the part
      that depends on the prior: what the prior injects);
    * ``mixed``: the norm of that signal's contribution to the block's output, after the
      block's attention has averaged it over the tokens and its projection (the attention
      weights are those of the second pass; the signal enters the values only, so its
      contribution is linear in it);
    * ``change``: the norm of what the top-down pass has changed in block ``l``'s output tokens
      (second pass minus first pass);
    * ``output``: the norm of block ``l``'s output tokens in the second pass (the output of
      block ``depth - 3`` is the top-down map);

    and ``change_ratio``, the mean norm of the change over the mean norm of the output tokens
    (how large the top-down part is). ``mask`` is the contrast of the token mask itself.

    Where the signal goes depends on the attention weights. Per block, ``attention_from_object``
    is the share of their attention that the prompted object's patches put on that object's
    patches, ``attention_from_all`` the share that every patch puts there (both averaged over
    heads, patches weighted by how much of them the object covers, and prompts), and
    ``attended_tokens`` the effective number of tokens a token attends to (the exponential of the
    entropy of its attention weights, averaged over tokens and heads).
    """
    from ..models.absvit import patch_token_norms

    signals = F.linear(features * token_mask, weight).split(inner.embed_dim, dim=-1)
    values = [v + b for v, b in zip(signals, biases)] if biases is not None else list(signals)
    second: list = []
    inner.run_blocks(tokens, values, record=second)
    mixed = []
    attention: dict[str, list[torch.Tensor]] = {key: [] for key in _ATTENTION}
    for block, (block_in, _), signal in zip(inner.blocks, second, signals):
        weights = _attention_weights(block, block_in)
        mixed.append(_attention_mixed(block, weights, signal))
        for key, value in _attention_on(weights, cover, inner.num_prefix_tokens).items():
            attention[key].append(value)

    def norms(tensors) -> torch.Tensor:
        return torch.stack([patch_token_norms(inner, t).flatten(1) for t in tensors], 1)

    quantities = {
        "mask": token_mask[:, inner.num_prefix_tokens:, 0].unsqueeze(1),
        "signal": norms(signals),
        "mixed": norms(mixed),
        "change": norms([b - a for (_, a), (_, b) in zip(first, second)]),
        "output": norms([b for _, b in second]),
    }
    return quantities, attention


def _block_rows(figures: dict[str, np.ndarray], depth: int) -> list[dict[str, Any]]:
    """One row per block of :func:`steering_by_block`'s per-image figures: each stage's mean and
    95% interval over images, the change ratio and the attention shares."""
    rows = []
    for block in range(depth):
        row: dict[str, Any] = {"block": block}
        for key in _STAGES:
            t = per_image_test(figures[key][:, block])
            row.update({key: t["mean"], f"{key}_low": t["ci_low"], f"{key}_high": t["ci_high"]})
        row["change_ratio"] = float(figures["ratio"][:, block].mean())
        row.update({key: float(figures[key][:, block].mean()) for key in _ATTENTION})
        rows.append(row)
    return rows


def _attention_weights(block: nn.Module, block_in: torch.Tensor) -> torch.Tensor:
    """The attention weights ``(B, heads, N, N)`` of ``block`` run on ``block_in`` (the top-down
    signal enters the values only, so it leaves them as they are)."""
    attn = block.attn
    if not isinstance(attn.norm, nn.Identity):
        raise BioattnError("the block-by-block diagnostic needs attention without a norm after its heads")
    b, n, _ = block_in.shape
    qkv = attn.qkv(block.norm1(block_in)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def _attention_on(weights: torch.Tensor, cover: torch.Tensor, prefix: int) -> dict[str, torch.Tensor]:
    """Per image ``(B,)``: the attention share the object's patches put on the object's patches,
    the share every patch puts there, and the effective number of tokens attended to."""
    patches = weights[:, :, prefix:, prefix:].mean(1)                     # (B, P queries, P keys)
    on_object = (patches * cover.unsqueeze(1)).sum(-1)                   # (B, P): share on the object
    tiny = torch.finfo(cover.dtype).tiny
    entropy = -(weights * weights.clamp(min=tiny).log()).sum(-1)        # (B, heads, N)
    return {
        "attention_from_object": (on_object * cover).sum(-1) / cover.sum(-1).clamp(min=tiny),
        "attention_from_all": on_object.mean(-1),
        "attended_tokens": entropy.exp().mean(dim=(1, 2)),
    }


def _attention_mixed(block: nn.Module, weights: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """The contribution of a value signal ``(B, N, C)`` (bias excluded) to the output of
    ``block``: averaged by the block's attention ``weights``, then projected (without the
    projection's bias) and layer-scaled."""
    attn = block.attn
    b, n, c = signal.shape
    heads = signal.reshape(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
    out = (weights @ heads).transpose(1, 2).reshape(b, n, c)
    return block.ls1(F.linear(out, attn.proj.weight))


def _relative_contrast(values: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """``values`` ``(B, prompt j, block l, P)`` -> the contrast between prompts per image and
    block, relative to the values' mean over patches and prompts, ``(B, l)``."""
    b, prompts, blocks, _ = values.shape
    flat = values.permute(0, 2, 1, 3).reshape(b * blocks, prompts, -1)          # (B*l, j, P)
    covers = cover.repeat_interleave(blocks, dim=0)                            # (B*l, k, P)
    per_object = torch.stack([_object_means(flat[:, j], covers) for j in range(prompts)], dim=1)  # (B*l, j, k)
    scale = flat.mean(dim=(1, 2)).clamp(min=torch.finfo(flat.dtype).tiny)
    return (_contrast(per_object) / scale).reshape(b, blocks)


# ------------------------------------------------------------------------------------------
# the figures of earlier versions
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def steering_score(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    prior_scale: float = DEFAULT_PRIOR_SCALE,
    batch_size: int = 64,
    display: bool = False,
    device: torch.device | str | None = None,
) -> dict:
    """Attention shares under class priors on given images, averaged over images and both
    prompted classes.

    Args:
        model: a model with top-down priors (``top_down_maps``, i.e. AbSViT).
        images: model inputs ``(B, 3, H, W)``, normalised.
        labels: the two classes of every image, ``(B, 2)``.
        masks: the two objects' masks ``(B, 2, H', W')`` (bool or [0, 1]), in label order.
        prior_scale: mask scale of the class prior (40 in the authors' demo).
        batch_size: images per forward pass.
        display: score the display-normalised maps (threshold 0.7, the authors'
            ``(a - (0.7 max + 0.3 min))`` clamped at 0) instead of the raw token-norm maps.
        device: where to run the model (default: where its parameters are).

    Returns ``prompted_share``, ``other_share``, ``win_rate``, ``shift`` (the mean image score
    of :func:`steering_benchmark`), ``shift_win_rate``, ``n_images``, ``n_pairs`` and
    ``prior_scale``.
    """
    check_steerable(model)
    _check_batch(images, labels, masks)
    threshold = 0.7 if display else None
    _check_protocol(prior_scale, threshold)
    if batch_size < 1:
        raise BioattnError(f"batch_size must be at least 1, got {batch_size}")
    parts = []
    with _Evaluating(model, device) as run:
        for start in range(0, images.shape[0], batch_size):
            chunk = slice(start, start + batch_size)
            maps = run.maps(images[chunk], labels[chunk], float(prior_scale))
            parts.append(object_shares(maps, masks[chunk], threshold).cpu())
    result = _summarise(np.arange(images.shape[0]), torch.cat(parts).double().numpy(),
                        fixed_protocol(prior_scale, threshold), 0.95)
    return _earlier_figures(result)


def steering_score_dataset(
    model: nn.Module,
    dataset,
    prior_scale: float = DEFAULT_PRIOR_SCALE,
    device: torch.device | str | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    display: bool = False,
) -> dict:
    """:func:`steering_score` on ``limit`` images of a two-object data set spread evenly over
    it (:func:`steering_benchmark` with a fixed protocol, its averages only)."""
    result = steering_benchmark(model, dataset, prior_scale=prior_scale, threshold=0.7 if display else None,
                                limit=limit, batch_size=batch_size, device=device)
    return _earlier_figures(result)


def _earlier_figures(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("prompted_share", "other_share", "win_rate", "shift", "shift_win_rate", "n_images", "n_pairs",
            "prior_scale")
    return {key: result[key] for key in keys}
