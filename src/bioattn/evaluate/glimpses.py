"""Where a glimpse model looks: the share of its fixations that land on the object.

On the embedded data every image has its object's mask. For each glimpse ``t`` the score is the
share of images whose ``t``-th fixation falls on a mask pixel. A fixation drawn uniformly over the
image lands on the mask with probability equal to the mask's area, so the mean mask area is the
score of a random policy; a learned policy must beat it. The first fixation is fixed by the model
(the image centre), so the summary ``learned`` averages the glimpses after it.

Fixations are in image coordinates ``(x, y)`` in ``[-1, 1]`` (``grid_sample``'s convention with
``align_corners=False``: pixel ``j`` of ``W`` spans ``[2j/W - 1, 2(j+1)/W - 1)``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..data.subsets import spread_indices
from ..errors import BioattnError
from ..protocol import Glimpsing, unwrap

__all__ = ["fixation_pixels", "fixations_on_mask", "fixations_on_mask_dataset"]


def fixation_pixels(fixations: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of the pixel under each fixation ``(..., 2)`` (x, y in [-1, 1])."""
    if fixations.shape[-1] != 2:
        raise BioattnError(f"fixations must end in (x, y), got shape {tuple(fixations.shape)}")
    cols = torch.floor((fixations[..., 0] + 1) * (width / 2)).long().clamp(0, width - 1)
    rows = torch.floor((fixations[..., 1] + 1) * (height / 2)).long().clamp(0, height - 1)
    return rows, cols


@torch.no_grad()
def fixations_on_mask(fixations: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Whether each fixation lands on its image's mask: fixations ``(T, B, 2)``, masks
    ``(B, H, W)``; returns bool ``(T, B)``."""
    if fixations.ndim != 3 or fixations.shape[-1] != 2:
        raise BioattnError(f"fixations must be (T, B, 2), got {tuple(fixations.shape)}")
    if masks.ndim != 3 or masks.shape[0] != fixations.shape[1]:
        raise BioattnError(f"masks must be (B, H, W) with B = {fixations.shape[1]}, "
                           f"got {tuple(masks.shape)}")
    rows, cols = fixation_pixels(fixations.float(), masks.shape[-2], masks.shape[-1])
    batch = torch.arange(masks.shape[0], device=masks.device).expand_as(rows)
    return masks.bool()[batch, rows.to(masks.device), cols.to(masks.device)]


@torch.no_grad()
def fixations_on_mask_dataset(
    model: nn.Module,
    dataset,
    glimpses: int | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Per-glimpse share of fixations on the object mask for a glimpse model (one with
    ``forward_glimpses``) on an embedded data set (images from ``dataset[i]``, masks from
    ``dataset.arrays``; for two-object images, the first object's mask, the one labelled), on
    ``limit`` of its images spread evenly over it (as every suite chooses its images).

    Returns, in %: ``per_glimpse`` (share at each glimpse), ``learned`` (mean over glimpses
    2..T), ``random`` (mean mask area: the expected share of uniformly random fixations) and
    ``ratio`` (learned / random); plus ``glimpses`` (how many were run), ``n_images`` and ``learns_fixations`` (whether
    the model has a trained fixation policy; models without one report where they look anyway,
    e.g. always the centre, or the centre of their soft attention).
    """
    inner = unwrap(model)
    if not isinstance(inner, Glimpsing):
        raise BioattnError(f"fixation scores need a glimpse model; {type(inner).__name__} has no fixations")
    masks_all = getattr(getattr(dataset, "arrays", None), "masks", None)
    if masks_all is None:
        raise BioattnError("fixation scores need images with object masks (data 'embedded')")
    chosen = spread_indices(len(dataset), None if limit is None else int(limit))
    n = len(chosen)
    if n < 1:
        raise BioattnError("fixation scores need at least one image")
    was_training = inner.training
    inner.eval()
    device = torch.device(device) if device is not None else next(inner.parameters()).device
    hits, areas = [], []
    try:
        for start in range(0, n, batch_size):
            chunk = chosen[start:start + batch_size]
            stop = start + len(chunk)
            x = torch.stack([dataset[i][0] for i in chunk]).to(device)
            masks = torch.as_tensor(np.asarray(masks_all)[chunk])
            if masks.ndim == 4:
                masks = masks[:, 0]
            scan = inner.forward_glimpses(x, glimpses=glimpses)
            hits.append(fixations_on_mask(scan.fixations.cpu(), masks))
            areas.append(masks.float().mean(dim=(-2, -1)))
            if progress is not None:
                progress(stop - start)
    finally:
        inner.train(was_training)
    on_mask = torch.cat(hits, dim=1).float()              # (T, n)
    per_glimpse = (100.0 * on_mask.mean(dim=1)).tolist()
    learned = 100.0 * on_mask[1:].mean().item() if on_mask.shape[0] > 1 else float("nan")
    random = 100.0 * torch.cat(areas).mean().item()
    return {
        "per_glimpse": per_glimpse,
        "learned": learned,
        "random": random,
        "ratio": learned / random if random > 0 else float("nan"),
        "glimpses": int(on_mask.shape[0]),
        "learns_fixations": bool(getattr(inner, "learns_fixations", False)),
        "n_images": n,
    }
