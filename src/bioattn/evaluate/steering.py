"""Steering score: does a class prior move AbSViT's top-down attention onto that class's object?

On two-object images (``embedded:pair``), each image is seen twice, once with each of its two
classes as the prior. For each view, the score takes the share of the top-down attention mass
(the map under that class's prior, upsampled to the masks' size) that falls inside the prompted
object's mask, and the share inside the other object's mask.

Comparing the two shares of one map also measures which object is more salient: a larger or
brighter object can hold more of the map under either prior. The *shift* removes that: for each
image, how much an object's share rises when its own class is the prior rather than the other
object's class, averaged over the two objects. A positive shift means attention moves towards
whichever object is prompted.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..attention.maps import display_normalise, upsample
from ..data.subsets import spread_indices
from ..errors import BioattnError
from ..protocol import TopDownSteerable, unwrap

__all__ = ["steering_score", "steering_score_dataset"]


@torch.no_grad()
def steering_score(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    prior_scale: float = 40.0,
    batch_size: int = 64,
    display: bool = False,
    device: torch.device | str | None = None,
) -> dict:
    """Attention shares under class priors, averaged over images and both prompted classes.

    Args:
        model: a model with top-down priors (``top_down_maps``, i.e. AbSViT).
        images: model inputs ``(B, 3, H, W)``, normalised.
        labels: the two classes of every image, ``(B, 2)``.
        masks: the two objects' masks ``(B, 2, H', W')`` (bool or [0, 1]), in label order.
        prior_scale: mask scale of the class prior (40 in the authors' demo).
        batch_size: images per forward pass.
        display: score the display-normalised maps (the authors' ``(a - (0.7 max + 0.3 min))``
            clamped at 0) instead of the raw token-norm maps.
        device: where to run the model (default: where its parameters are).

    Returns ``prompted_share`` (mean share inside the prompted object), ``other_share`` (inside
    the other object), ``win_rate`` (fraction of image-prompt pairs where the prompted object's
    share beats the other's), ``shift`` (mean over images of the rise of an object's share when
    it is prompted instead of the other object), ``shift_win_rate`` (fraction of images whose
    shift is positive), ``n_images`` and ``n_pairs``.
    """
    inner = unwrap(model)
    if not isinstance(inner, TopDownSteerable):
        raise BioattnError(f"steering needs a model with top-down priors (AbSViT); {type(inner).__name__} has none")
    if images.ndim != 4:
        raise BioattnError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    if labels.shape != (n, 2):
        raise BioattnError(f"labels must be (B, 2) = ({n}, 2), got {tuple(labels.shape)}")
    if masks.ndim != 4 or masks.shape[:2] != (n, 2):
        raise BioattnError(f"masks must be (B, 2, H, W) with B = {n}, got {tuple(masks.shape)}")
    if n == 0:
        raise BioattnError("steering score needs at least one image")

    was_training = inner.training
    inner.eval()
    device = torch.device(device) if device is not None else next(inner.parameters()).device
    size = tuple(masks.shape[-2:])
    shares = []  # (b, prior j, mask k): share of the map under prior j inside mask k
    try:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device=device, dtype=torch.long)
            m = masks[start:start + batch_size].to(device=device, dtype=torch.float32)
            maps = inner.top_down_maps(x, [y[:, 0], y[:, 1]], prior_scale=prior_scale)
            per_prior = []
            for amap in maps:
                amap = upsample(amap, size)
                amap = display_normalise(amap) if display else amap.clamp(min=0)
                total = amap.sum(dim=(-2, -1)).clamp(min=torch.finfo(amap.dtype).tiny)
                per_prior.append((amap.unsqueeze(1) * m).sum(dim=(-2, -1)) / total.unsqueeze(1))
            shares.append(torch.stack(per_prior, dim=1))
    finally:
        inner.train(was_training)
    shares = torch.cat(shares)
    own = torch.cat([shares[:, 0, 0], shares[:, 1, 1]])
    other = torch.cat([shares[:, 0, 1], shares[:, 1, 0]])
    shift = 0.5 * ((shares[:, 0, 0] - shares[:, 1, 0]) + (shares[:, 1, 1] - shares[:, 0, 1]))
    return {
        "prompted_share": own.mean().item(),
        "other_share": other.mean().item(),
        "win_rate": (own > other).float().mean().item(),
        "shift": shift.mean().item(),
        "shift_win_rate": (shift > 0).float().mean().item(),
        "n_images": n,
        "n_pairs": int(own.numel()),
        "prior_scale": float(prior_scale),
    }



def steering_score_dataset(
    model: nn.Module,
    dataset,
    prior_scale: float = 40.0,
    device: torch.device | str | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    display: bool = False,
) -> dict:
    """:func:`steering_score` on a two-object data set: an ``EmbeddedDataset`` built from
    ``embedded:pair`` arrays (normalised images from ``dataset[i]``, the two labels and masks
    from ``dataset.arrays``), on ``limit`` of its images spread evenly over it
    (:func:`bioattn.data.subsets.spread_indices`, as every suite chooses its images)."""
    arrays = getattr(dataset, "arrays", None)
    labels = getattr(arrays, "labels", None)
    masks = getattr(arrays, "masks", None)
    if labels is None or masks is None or labels.ndim != 2 or masks.ndim != 4:
        raise BioattnError("the steering score needs two-object images with their masks (data 'embedded:pair')")
    chosen = spread_indices(len(dataset), None if limit is None else int(limit))
    n = len(chosen)
    parts = []
    for start in range(0, n, batch_size):
        chunk = chosen[start:start + batch_size]
        images = torch.stack([dataset[i][0] for i in chunk])
        parts.append(steering_score(
            model, images,
            torch.as_tensor(np.asarray(labels)[chunk]),
            torch.as_tensor(np.asarray(masks)[chunk]),
            prior_scale=prior_scale, batch_size=batch_size, display=display, device=device,
        ))
    if not parts:
        raise BioattnError("steering score needs at least one image")
    pairs = sum(p["n_pairs"] for p in parts)
    result = {key: sum(p[key] * p["n_pairs"] for p in parts) / pairs
              for key in ("prompted_share", "other_share", "win_rate", "shift", "shift_win_rate")}
    result.update(n_images=n, n_pairs=pairs, prior_scale=float(prior_scale))
    return result
