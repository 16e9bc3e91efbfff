"""Where a glimpse model looks: the share of its fixations that land on the object.

On the embedded data every image has its object's mask. For each glimpse ``t`` the score is the
share of images whose ``t``-th fixation falls on a mask pixel. A fixation drawn uniformly over the
image lands on the mask with probability equal to the mask's area, so the mean mask area is the
score of a random policy; a learned policy must beat it. The first fixation is fixed by the model
(the image centre), so the summary ``learned`` averages the glimpses after it.

Fixations are in image coordinates ``(x, y)`` in ``[-1, 1]`` (``grid_sample``'s convention with
``align_corners=False``: pixel ``j`` of ``W`` spans ``[2j/W - 1, 2(j+1)/W - 1)``).

Scan paths as data: :class:`ScanPaths` collects every fixation the glimpse suites see (the
``glimpses`` suite's and, per attack setting, the attack suites' on clean and adversarial images)
and writes them as CSV, one row per fixation, with the columns of :data:`SCAN_PATH_COLUMNS`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from ..data.subsets import base_dataset, spread_indices
from ..errors import BioattnError
from ..fileio import atomic_write_text
from ..protocol import Glimpsing, evaluating, unwrap

__all__ = ["fixation_pixels", "fixations_on_mask", "fixations_on_mask_dataset", "ScanPaths",
           "SCAN_PATH_COLUMNS", "scan_paths_path"]

# suite: the suite that ran the model; condition: "clean", or the attack setting of adversarial
# images; image: index in the evaluated split; file: the image's path within an image folder
# (empty for generated data); glimpse: 1-based; x, y: image coordinates in [-1, 1]; x_px, y_px:
# the same point in pixels of the image the model saw (0 the centre of the first pixel); width:
# the width σ of the region the glimpse covered, in image units (half the image width is 1)
SCAN_PATH_COLUMNS = ("suite", "condition", "image", "file", "glimpse", "x", "y", "x_px", "y_px", "width")


def scan_paths_path(results: str | Path) -> Path:
    """Where the scan paths of a results file go: ``<stem>.fixations.csv`` next to it."""
    results = Path(results)
    return results.with_name(f"{results.stem}.fixations.csv")


class ScanPaths:
    """Fixations of a glimpse model collected by the evaluation suites, written as CSV."""

    def __init__(self, dataset=None) -> None:
        self._files = _file_names(dataset)
        self._rows: list[tuple] = []
        self._seen: set[tuple[str, str, int]] = set()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, suite: str, condition: str, images: Sequence[int], fixations: torch.Tensor,
            widths: torch.Tensor, image_hw: Sequence[int]) -> None:
        """Record fixations ``(T, B, 2)`` and widths ``(T, B)`` of the images with indices
        ``images`` (``B`` of them), seen at ``image_hw``. An image already recorded under the same
        suite and condition (e.g. the clean images of each attack budget) is kept once."""
        fixations = fixations.detach().float().cpu()
        widths = widths.detach().float().cpu()
        if fixations.ndim != 3 or fixations.shape[-1] != 2 or widths.shape != fixations.shape[:2]:
            raise BioattnError(f"scan paths need fixations (T, B, 2) and widths (T, B); got "
                               f"{tuple(fixations.shape)} and {tuple(widths.shape)}")
        if fixations.shape[1] != len(images):
            raise BioattnError(f"{fixations.shape[1]} scan paths for {len(images)} images")
        h, w = int(image_hw[0]), int(image_hw[1])
        px = (fixations[..., 0] + 1) * (w / 2) - 0.5
        py = (fixations[..., 1] + 1) * (h / 2) - 0.5
        for b, index in enumerate(images):
            key = (suite, condition, int(index))
            if key in self._seen:
                continue
            self._seen.add(key)
            name = self._files[index] if self._files is not None and index < len(self._files) else ""
            for t in range(fixations.shape[0]):
                self._rows.append((suite, condition, int(index), name, t + 1, float(fixations[t, b, 0]),
                                   float(fixations[t, b, 1]), float(px[t, b]), float(py[t, b]),
                                   float(widths[t, b])))

    def rows(self) -> list[dict]:
        """The fixations recorded so far, one dict per fixation (keys :data:`SCAN_PATH_COLUMNS`)."""
        return [dict(zip(SCAN_PATH_COLUMNS, row)) for row in self._rows]

    def write(self, path: str | Path) -> Path:
        """Write the CSV (a header, then one row per fixation) in one atomic step."""
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(SCAN_PATH_COLUMNS)
        for row in self._rows:
            out.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        return atomic_write_text(path, text.getvalue(), what="scan paths")


def _file_names(dataset) -> list[str] | None:
    """The image file of every index of ``dataset`` (relative to its folder), if it has files."""
    if dataset is None or isinstance(dataset, Subset):  # a subset numbers its images anew
        return None
    base = base_dataset(dataset)  # wrappers (``.base``) keep the numbering
    samples = getattr(base, "samples", None)
    if not isinstance(samples, (list, tuple)) or len(samples) != len(dataset):
        return None
    root = getattr(base, "root", None)
    names = []
    for sample in samples:
        path = Path(sample[0] if isinstance(sample, (list, tuple)) else sample)
        try:
            names.append(str(path.relative_to(root)) if root is not None else str(path))
        except ValueError:
            names.append(str(path))
    return names


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
    scan_paths: ScanPaths | None = None,
) -> dict:
    """Per-glimpse share of fixations on the object mask for a glimpse model (one with
    ``forward_glimpses``) on an embedded data set (images from ``dataset[i]``, masks from
    ``dataset.arrays``; for two-object images, the first object's mask, the one labelled), on
    ``limit`` of its images spread evenly over it (as every suite chooses its images).

    Returns, in %: ``per_glimpse`` (share at each glimpse), ``learned`` (mean over glimpses
    2..T), ``random`` (mean mask area: the expected share of uniformly random fixations) and
    ``ratio`` (learned / random); plus ``glimpses`` (how many were run), ``n_images`` and ``learns_fixations`` (whether
    the model has a trained fixation policy; models without one report where they look anyway,
    e.g. always the centre, or the centre of their soft attention). ``scan_paths`` records every
    fixation (suite ``glimpses``, condition ``clean``).
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
    device = torch.device(device) if device is not None else next(inner.parameters()).device
    hits, areas = [], []
    with evaluating(inner):
        for start in range(0, n, batch_size):
            chunk = chosen[start:start + batch_size]
            stop = start + len(chunk)
            x = torch.stack([dataset[i][0] for i in chunk]).to(device)
            masks = torch.as_tensor(np.asarray(masks_all)[chunk])
            if masks.ndim == 4:
                masks = masks[:, 0]
            scan = inner.forward_glimpses(x, glimpses=glimpses)
            if scan_paths is not None:
                scan_paths.add("glimpses", "clean", chunk, scan.fixations, scan.sigmas, x.shape[-2:])
            hits.append(fixations_on_mask(scan.fixations.cpu(), masks))
            areas.append(masks.float().mean(dim=(-2, -1)))
            if progress is not None:
                progress(stop - start)
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
