"""Multi-label evaluation: the scores of a model's predictions
(:class:`bioattn.metrics.MultiLabelMeter`, with the label-frequency baseline
:func:`bioattn.metrics.label_frequency_map`) and where glimpse models look among several objects:
:func:`fixations_on_objects` gives the share of fixations landing on any object, and on a small
one (under 5% of the image).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.subsets import spread_indices
from ..errors import BioattnError
from ..metrics.multilabel import MultiLabelMeter, label_frequency_map
from ..protocol import Glimpsing, evaluating, forward_readouts, unwrap
from .glimpses import fixation_pixels

__all__ = ["MultiLabelMeter", "ObjectFixations", "SMALL_OBJECT_AREA", "fixations_on_objects",
           "label_frequency_map"]

SMALL_OBJECT_AREA = 0.05   # objects covering less than this share of the image are "small"


class ObjectFixations:
    """Accumulates, per glimpse, how many fixations land on an object and on a small object
    (under ``small_area`` of the image) of images with several objects (see
    :func:`fixations_on_objects` for the inputs and the scores)."""

    def __init__(self, small_area: float = SMALL_OBJECT_AREA) -> None:
        if not 0 < small_area <= 1:
            raise BioattnError(f"small_area is a share of the image in (0, 1], got {small_area}")
        self.small_area = small_area
        self.on_any: torch.Tensor | None = None        # (T,) fixations on an object
        self.on_small: torch.Tensor | None = None      # (T,) fixations on a small object
        self.n_images = 0
        self.n_with_small = 0                          # images with a small object
        self.area_any = 0.0                            # summed share of the image under objects
        self.area_small = 0.0                          # the same under small objects

    @torch.no_grad()
    def update(self, fixations: torch.Tensor, masks: torch.Tensor, areas: torch.Tensor | None = None,
               valid: torch.Tensor | None = None) -> None:
        if fixations.ndim != 3 or fixations.shape[-1] != 2:
            raise BioattnError(f"fixations must be (T, B, 2), got {tuple(fixations.shape)}")
        b = fixations.shape[1]
        if masks.ndim != 4 or masks.shape[0] != b:
            raise BioattnError(f"object masks must be (B, M, H, W) with B = {b}, got {tuple(masks.shape)}")
        masks = masks.bool()
        m = masks.shape[1]
        if valid is None:
            valid = masks.flatten(2).any(dim=-1)
        elif tuple(valid.shape) != (b, m):
            raise BioattnError(f"valid must be (B, M) = {(b, m)}, got {tuple(valid.shape)}")
        valid = valid.to(masks.device).bool()
        if areas is None:
            areas = masks.float().mean(dim=(-2, -1))
        elif tuple(areas.shape) != (b, m):
            raise BioattnError(f"areas must be (B, M) = {(b, m)}, got {tuple(areas.shape)}")
        small = valid & (areas.to(masks.device).float() < self.small_area)
        rows, cols = fixation_pixels(fixations.float().to(masks.device), masks.shape[-2], masks.shape[-1])
        batch = torch.arange(b, device=masks.device).expand_as(rows)
        hit = masks[batch, :, rows, cols] & valid[None]                     # (T, B, M)
        on_any = hit.any(dim=-1).sum(dim=1).cpu()
        on_small = (hit & small[None]).any(dim=-1).sum(dim=1).cpu()
        if self.on_any is not None and len(self.on_any) != len(on_any):
            raise BioattnError(f"every batch needs the same number of glimpses, got {len(on_any)} "
                               f"after {len(self.on_any)}")
        self.on_any = on_any if self.on_any is None else self.on_any + on_any
        self.on_small = on_small if self.on_small is None else self.on_small + on_small
        has_small = small.any(dim=1)
        self.n_images += b
        self.n_with_small += int(has_small.sum())
        union = (masks & valid[..., None, None]).any(dim=1).float().mean(dim=(-2, -1))
        union_small = (masks & small[..., None, None]).any(dim=1).float().mean(dim=(-2, -1))
        self.area_any += float(union.sum())
        self.area_small += float(union_small[has_small].sum())

    def compute(self) -> dict:
        """Per glimpse, in %: ``on_object`` (share of all images whose fixation lands on an
        object) and ``on_small_object`` (share of the images holding a small object whose
        fixation lands on one; NaN if none does); ``random_object`` and
        ``random_small_object``, the same shares for a fixation drawn uniformly over the image
        (the mean area the objects, or the small objects, cover); ``n_images`` and
        ``n_images_with_small``."""
        nan = float("nan")
        if self.on_any is None or self.n_images == 0:
            return {"on_object": [], "on_small_object": [], "random_object": nan, "random_small_object": nan,
                    "n_images": 0, "n_images_with_small": 0}
        with_small = self.n_with_small
        return {
            "on_object": (100.0 * self.on_any.double() / self.n_images).tolist(),
            "on_small_object": ((100.0 * self.on_small.double() / with_small).tolist() if with_small
                                else [nan] * len(self.on_small)),
            "random_object": 100.0 * self.area_any / self.n_images,
            "random_small_object": 100.0 * self.area_small / with_small if with_small else nan,
            "n_images": self.n_images,
            "n_images_with_small": with_small,
        }


def fixations_on_objects(fixations: torch.Tensor, masks: torch.Tensor, areas: torch.Tensor | None = None,
                         valid: torch.Tensor | None = None, small_area: float = SMALL_OBJECT_AREA) -> dict:
    """Where a glimpse model's fixations land among an image's objects.

    ``fixations`` (T, B, 2): x, y in [-1, 1] (as :func:`bioattn.evaluate.glimpses.fixation_pixels`
    reads them); ``masks`` (B, M, H, W): each object's mask, padded with empty ones; ``areas``
    (B, M): each object's share of the image (default: its mask's; give the annotated area when
    the masks are resampled); ``valid`` (B, M): which objects exist (default: those whose mask
    has a pixel). An object is small when its area is under ``small_area`` (5%).

    Returns the scores of :meth:`ObjectFixations.compute` (per glimpse, the share of fixations
    on any object and on a small one, with their chance levels); to score many batches, or
    images of different sizes one by one, update an :class:`ObjectFixations` instead.
    """
    meter = ObjectFixations(small_area)
    meter.update(fixations, masks, areas, valid)
    return meter.compute()


# ------------------------------------------------------------------------------------------
# data-set level evaluation
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_multilabel(model: torch.nn.Module, loader, num_classes: int, device: torch.device | str = "cpu",
                        progress: Callable[[int], None] | None = None) -> dict:
    """The :class:`MultiLabelMeter` scores of ``model``'s final logits on ``loader``
    (``(images, multi-hot targets)`` batches), with ``label_frequency_map``: the mAP of scoring
    every image by the classes' frequencies in these targets (the baseline a model must beat)."""
    device = torch.device(device)
    meter = MultiLabelMeter(num_classes)
    with evaluating(model):
        for images, targets in loader:
            meter.update(forward_readouts(model, images.to(device)).logits, targets.to(device))
            if progress is not None:
                progress(int(images.shape[0]))
    result = meter.compute()
    result["label_frequency_map"] = label_frequency_map(meter.state()[1])
    return result


@torch.no_grad()
def object_fixations_dataset(model: torch.nn.Module, dataset, glimpses: int | None = None,
                             limit: int | None = None, batch_size: int = 64,
                             device: torch.device | str | None = None,
                             progress: Callable[[int], None] | None = None) -> dict:
    """Per glimpse, the share of a glimpse model's fixations on any object and on a small one
    (:class:`ObjectFixations`) over the images of an ``embedded:multi`` data set (images from
    ``dataset[i]``, object masks and labels from ``dataset.arrays``), on ``limit`` of them spread
    evenly over the set."""
    inner = unwrap(model)
    if not isinstance(inner, Glimpsing):
        raise BioattnError(f"fixation scores need a glimpse model; {type(inner).__name__} has no fixations")
    arrays = getattr(dataset, "arrays", None)
    if arrays is None or getattr(arrays, "masks", None) is None or arrays.masks.ndim != 4:
        raise BioattnError("fixations on objects need images with several object masks (data 'embedded:multi')")
    chosen = spread_indices(len(dataset), limit)
    device = torch.device(device) if device is not None else next(inner.parameters()).device
    meter = ObjectFixations()
    with evaluating(inner):
        for start in range(0, len(chosen), batch_size):
            chunk = list(chosen[start:start + batch_size])
            x = torch.stack([dataset[i][0] for i in chunk]).to(device)
            fixations = inner.forward_glimpses(x, glimpses=glimpses).fixations
            masks = torch.as_tensor(arrays.masks[chunk])
            valid = torch.as_tensor(arrays.labels[chunk]) >= 0
            meter.update(fixations.cpu(), masks, valid=valid)
            if progress is not None:
                progress(len(chunk))
    return meter.compute()
