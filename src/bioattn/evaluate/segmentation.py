"""Semantic segmentation evaluation: mIoU (:class:`bioattn.metrics.SegmentationMeter`) by whole
or sliding-window inference (:mod:`bioattn.tasks.segmentation`), robustness to corruptions,
steering by a class prior, and pictures. Figures are in percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.pixels import Pixels
from ..data.subsets import spread_indices
from ..distributed import DistInfo, all_reduce_tensor
from ..errors import BioattnError
from ..fileio import atomic_write
from ..metrics.segmentation import IGNORE_INDEX, SegmentationMeter, nanmean, segmentation_figures
from ..protocol import evaluating
from ..tasks.segmentation import (
    built_size,
    fitted_inference,
    slide_inference,
    slide_stride,
    slide_windows,
    whole_inference,
)
from .corruptions import Corrupter, image_seed
from .mce import CORRUPTIONS, check_corruption_names, check_severities

__all__ = [
    "IGNORE_INDEX", "SegmentationMeter", "segmentation_figures", "whole_inference", "slide_windows",
    "slide_inference", "built_size", "fitted_inference",
    "evaluate_segmentation", "segmentation_corruptions", "steering_score", "palette",
    "plot_segmentation",
]

_FORMATS = {".png", ".pdf", ".svg", ".jpg", ".jpeg"}
_IGNORE_COLOUR = (255, 255, 255)


def constant_prediction_miou(dataset: Dataset, num_classes: int, label: int = 0, limit: int | None = None,
                             ignore_index: int = IGNORE_INDEX) -> dict:
    """The figures of predicting ``label`` (default: background) for every pixel of
    ``dataset``'s label maps (on ``limit`` images spread evenly over it): the floor a
    segmenter must rise above."""
    meter = SegmentationMeter(num_classes, ignore_index)
    for i in spread_indices(len(dataset), limit):
        target = torch.as_tensor(dataset[i][1])[None]
        meter.update(torch.full_like(target, int(label)), target)
    return meter.compute()


# ------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------
def _inference(mode: str, crop, stride, num_classes: int) -> Callable[[Callable, torch.Tensor], torch.Tensor]:
    if mode == "whole":
        return whole_inference
    if mode == "slide":
        if crop is None:
            raise BioattnError("slide inference needs a crop size")
        stride = stride if stride is not None else slide_stride(crop)
        return lambda model, images: slide_inference(model, images, crop, stride, num_classes)
    raise BioattnError(f"unknown inference mode '{mode}' (choose from whole, slide)")


def _classes_of(dataset) -> list[str] | None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    return list(classes) if classes is not None else None


def _with_table(result: dict, classes: Sequence[str] | None) -> dict:
    if classes is not None and len(classes) == len(result["per_class_iou"]):
        result["per_class"] = [{"class": name, "iou": iou, "acc": acc}
                               for name, iou, acc in zip(classes, result["per_class_iou"], result["per_class_acc"])]
    return result


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    mode: str = "whole",
    crop=None,
    stride=None,
    device: torch.device | str = "cpu",
    ignore_index: int = IGNORE_INDEX,
    info: DistInfo | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """The :class:`SegmentationMeter` figures of ``model`` on ``loader`` (``(images, labels)``
    batches), predicting by ``whole`` images or by ``slide`` windows (``crop``, ``stride``;
    default stride two thirds of the crop). Logits are resized to the labels' size. With
    ``info`` the matrices of every process are summed. When the data set has ``classes``, the
    result has ``per_class``: one ``{"class", "iou", "acc"}`` row per class."""
    device = torch.device(device)
    infer = _inference(mode, crop, stride, num_classes)
    meter = SegmentationMeter(num_classes, ignore_index)
    with evaluating(model):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            meter.update(infer(model, images.float()), labels)
            if progress is not None:
                progress(int(images.shape[0]))
    totals = meter.totals() if info is None else all_reduce_tensor(meter.totals(), info)
    result = SegmentationMeter.from_totals(totals, ignore_index)
    result["mode"] = mode
    return _with_table(result, _classes_of(loader.dataset))


# ------------------------------------------------------------------------------------------
# corruptions
# ------------------------------------------------------------------------------------------
def _pixels_of(dataset) -> Pixels:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    if mean is None or std is None:
        raise BioattnError("the data set does not say how its images are normalised (mean/std): pass pixels=")
    return Pixels(mean, std)


@torch.no_grad()
def segmentation_corruptions(
    model: nn.Module,
    dataset: Dataset,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    num_classes: int | None = None,
    pixels: Pixels | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    workers: int = 0,
    seed: int = 0,
    mode: str = "whole",
    crop=None,
    stride=None,
    device: torch.device | str = "cpu",
    ignore_index: int = IGNORE_INDEX,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """mIoU (percent) of ``model`` on ``dataset`` clean and under each corruption and severity.

    Each normalised image is turned back into 8-bit pixels (``pixels``, default: the data
    set's ``mean``/``std``), corrupted by :mod:`bioattn.evaluate.corruptions` (the ImageNet-C
    functions, a seed per image, corruption and severity), normalised again and segmented; the
    labels are unchanged. ``limit`` images are spread evenly over the set. Returns
    ``clean_miou``, ``miou`` (corruption -> severity -> mIoU), ``corruption_miou`` (mean over
    severities), ``mean_miou`` (over corruptions), and ``n``. ``progress(n)`` is called with
    the batch's number of images after each corruption and severity of a batch.
    """
    corruptions = check_corruption_names(corruptions)
    severities = check_severities(severities)
    num_classes = num_classes if num_classes is not None else getattr(dataset, "num_classes", None)
    if num_classes is None:
        raise BioattnError("give num_classes: the data set does not say how many classes it has")
    pixels = pixels if pixels is not None else _pixels_of(dataset)
    device = torch.device(device)
    infer = _inference(mode, crop, stride, num_classes)
    chosen = spread_indices(len(dataset), limit)
    loader = DataLoader(Subset(dataset, chosen), batch_size=batch_size, shuffle=False)
    clean = SegmentationMeter(num_classes, ignore_index)
    meters = {(c, s): SegmentationMeter(num_classes, ignore_index) for c in corruptions for s in severities}
    seen = 0
    with evaluating(model):
        with Corrupter(workers, corruptions) as corrupter:
            for images, labels in loader:
                labels = labels.to(device)
                n = int(images.shape[0])
                clean.update(infer(model, images.to(device).float()), labels)
                raw = pixels.to_uint8(images)
                for (c, s), meter in meters.items():
                    seeds = [image_seed(seed, c, s, seen + i) for i in range(n)]
                    x = pixels.from_uint8(corrupter.corrupt(raw, c, s, seeds)).to(device)
                    meter.update(infer(model, x), labels)
                    if progress is not None:
                        progress(n)
                seen += n
    if seen == 0:
        raise BioattnError("the data set for the segmentation corruption suite is empty")
    miou = {c: {str(s): meters[(c, s)].compute()["miou"] for s in severities} for c in corruptions}
    per_corruption = {c: sum(v.values()) / len(v) for c, v in miou.items()}
    return {
        "corruptions": list(corruptions),
        "severities": list(severities),
        "n": seen,
        "seed": seed,
        "clean_miou": clean.compute()["miou"],
        "miou": miou,
        "corruption_miou": per_corruption,
        "mean_miou": sum(per_corruption.values()) / len(per_corruption),
    }


# ------------------------------------------------------------------------------------------
# steering by a class prior
# ------------------------------------------------------------------------------------------
def _segment_fn(segment, prior_scale: float) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``segment`` as a function of ``(x, prior)``: its ``segment_with_prior`` method, a module's
    forward with ``prior=`` and ``prior_scale=`` (:class:`~bioattn.models.upernet.UperNetSegmenter`),
    or the callable itself."""
    method = getattr(segment, "segment_with_prior", None)
    if callable(method):
        return method
    if isinstance(segment, nn.Module):
        return lambda x, prior: segment(x, prior=prior, prior_scale=prior_scale)
    if callable(segment):
        return segment
    raise BioattnError(f"steering needs a segmenter that takes a prior, got {type(segment).__name__}")


@torch.no_grad()
def steering_score(
    segment,
    dataset: Dataset,
    prior_scale: float = 40.0,
    batch_size: int = 16,
    limit: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """How much a class prior helps a segmenter find the prompted object, on two-object
    embedded images (an :class:`~bioattn.data.segmentation.EmbeddedSegmentation` of
    ``embedded:seg,pair`` arrays, images at the masks' size).

    ``segment`` gives logits ``(B, K, H, W)``: an object with ``segment_with_prior(x, prior)``,
    a module called as ``segment(x, prior=prior, prior_scale=prior_scale)`` (the
    :class:`~bioattn.models.upernet.UperNetSegmenter` of an AbSViT built with
    ``prior_classes``), or a callable ``segment(x, prior)``. ``prior`` is a ``LongTensor``
    ``(B,)`` of the objects' classes as the embedded generator numbers them (the backbone's
    classifier index, as in :mod:`bioattn.evaluate.steering`), or None for no prior (a learned
    prompt, for AbSViT). For each image and each of its two objects, the IoU (percent) between
    the pixels predicted as the object's segmentation class (its class + 1) and the object's
    visible pixels (the second object is drawn over the first) is measured with the object's
    class as the prior and without a prior. Returns ``first_with_prior``,
    ``first_without_prior``, ``second_with_prior``, ``second_without_prior`` (means over
    images), ``with_prior``, ``without_prior`` (over both objects), ``gain`` (their
    difference) and ``n_images``.
    """
    fn = _segment_fn(segment, prior_scale)
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    arrays = getattr(base, "arrays", None)
    if arrays is None or not getattr(arrays, "pair", False):
        raise BioattnError("the steering score needs two-object images with their masks (data 'embedded:seg,pair')")
    if device is None:
        params = next(iter(segment.parameters()), None) if isinstance(segment, nn.Module) else None
        device = params.device if params is not None else torch.device("cpu")
    device = torch.device(device)
    chosen = spread_indices(len(base), limit)
    if not chosen:
        raise BioattnError("the steering score needs at least one image")
    model = segment if isinstance(segment, nn.Module) else None
    ious: dict[tuple[int, bool], list[torch.Tensor]] = {(j, p): [] for j in (0, 1) for p in (True, False)}
    with evaluating(model):
        for start in range(0, len(chosen), batch_size):
            index = chosen[start:start + batch_size]
            x = torch.stack([base[i][0] for i in index]).to(device).float()
            labels = torch.as_tensor(np.asarray(arrays.labels)[index], device=device).long()    # (B, 2)
            masks = torch.as_tensor(np.asarray(arrays.masks)[index], device=device).bool()     # (B, 2, H, W)
            if tuple(x.shape[-2:]) != tuple(masks.shape[-2:]):
                raise BioattnError(f"steering images are {tuple(x.shape[-2:])} but their masks "
                                   f"{tuple(masks.shape[-2:])}: evaluate at the data's own size")
            visible = torch.stack([masks[:, 0] & ~masks[:, 1], masks[:, 1]], dim=1)
            unprompted = whole_inference(lambda t: fn(t, None), x).argmax(1)
            for j in (0, 1):
                seg_class = labels[:, j] + 1
                prompted = whole_inference(lambda t, p=labels[:, j]: fn(t, p), x).argmax(1)
                for with_prior, prediction in ((True, prompted), (False, unprompted)):
                    found = prediction == seg_class[:, None, None]
                    inter = (found & visible[:, j]).sum(dim=(-2, -1)).double()
                    union = (found | visible[:, j]).sum(dim=(-2, -1)).double()
                    ious[(j, with_prior)].append(torch.where(union > 0, inter / union.clamp(min=1),
                                                             torch.full_like(union, math.nan)).cpu())
    means = {key: 100.0 * nanmean(torch.cat(values)) for key, values in ious.items()}
    both_with = 100.0 * nanmean(torch.cat(ious[(0, True)] + ious[(1, True)]))
    both_without = 100.0 * nanmean(torch.cat(ious[(0, False)] + ious[(1, False)]))
    return {
        "first_with_prior": means[(0, True)],
        "first_without_prior": means[(0, False)],
        "second_with_prior": means[(1, True)],
        "second_without_prior": means[(1, False)],
        "with_prior": both_with,
        "without_prior": both_without,
        "gain": both_with - both_without,
        "n_images": len(chosen),
        "prior_scale": float(prior_scale),
    }


# ------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------
def palette(n: int = 256) -> np.ndarray:
    """A fixed colour per class ``(n, 3)`` uint8: the bits of the class index spread over the
    high bits of red, green and blue (PASCAL VOC's colour map; class 0 black)."""
    colours = np.zeros((n, 3), np.uint8)
    for index in range(n):
        value, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        colours[index] = rgb
    return colours


def _colourise(label: np.ndarray, colours: np.ndarray, ignore_index: int) -> np.ndarray:
    out = colours[np.clip(label, 0, len(colours) - 1)]
    out[label == ignore_index] = _IGNORE_COLOUR
    return out


def plot_segmentation(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    classes: Sequence[str] | None,
    out_png: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = IGNORE_INDEX,
    title: str | None = None,
) -> Path:
    """Draw each image (normalised ``(B, 3, H, W)``), its ground truth and the prediction
    (``(B, H, W)`` class maps; logits ``(B, K, H, W)`` are reduced by arg-max) side by side, a
    row per image, in the fixed :func:`palette` (ignored pixels white), with a legend of the
    classes shown. Writes ``out_png`` (png, pdf, svg or jpg)."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    out_path = Path(out_png)
    fmt = out_path.suffix.lower()
    if fmt not in _FORMATS:
        raise BioattnError(f"cannot write a figure as '{out_path.suffix}': use one of {', '.join(sorted(_FORMATS))}")
    if predictions.ndim == 4:
        predictions = predictions.argmax(1)
    if images.ndim != 4 or labels.ndim != 3 or predictions.ndim != 3:
        raise BioattnError(f"plot_segmentation needs images (B, 3, H, W), labels and predictions (B, H, W); got "
                           f"{tuple(images.shape)}, {tuple(labels.shape)}, {tuple(predictions.shape)}")
    n = images.shape[0]
    if labels.shape[0] != n or predictions.shape[0] != n or n == 0:
        raise BioattnError(f"plot_segmentation needs as many labels and predictions as images (>= 1), got "
                           f"{n}, {labels.shape[0]} and {predictions.shape[0]}")
    pixels = Pixels(mean, std)
    colours = palette()
    labels_np = labels.detach().cpu().long().numpy()
    preds_np = predictions.detach().cpu().long().numpy()
    height, width = images.shape[-2:]
    panel = 2.4
    legend_h = 0.9 if classes is not None else 0.0
    fig = Figure(figsize=(3 * panel + 0.4, n * panel * height / width + 0.6 + legend_h), dpi=100)
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        shown = [pixels.to_picture(images[row]), _colourise(labels_np[row], colours, ignore_index),
                 _colourise(preds_np[row], colours, ignore_index)]
        for col, (picture, name) in enumerate(zip(shown, ("image", "ground truth", "prediction"))):
            ax = axes[row, col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=10)
    if classes is not None:
        present = np.unique(np.concatenate([labels_np.reshape(-1), preds_np.reshape(-1)]))
        present = [int(c) for c in present if 0 <= c < len(classes)]
        handles = [Patch(facecolor=colours[c] / 255.0, edgecolor="black", linewidth=0.5, label=classes[c])
                   for c in present]
        if handles:
            fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format=fmt.lstrip(".").replace("jpg", "jpeg")),
                 what="figure")
    return out_path
