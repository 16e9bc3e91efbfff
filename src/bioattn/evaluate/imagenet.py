"""ImageNet robustness benchmarks read from their standard folder layouts.

* ImageNet-C: ``root/<corruption>/<severity>/<wnid>/*``, 15 corruptions x severities 1-5;
  images are centre-cropped to the input size without resizing (they are stored at 224 px).
  mCE is normalised by AlexNet's errors (docs/evaluation.md).
* ImageNet-A and ImageNet-R: ``root/<wnid>/*`` over 200 ImageNet classes; the logits are
  restricted to those 200 classes (in the 1000-class order) before the arg-max.
* ImageNet-Sketch: ``root/<wnid>/*`` over all 1000 classes.

Labels are indices in the standard 1000-class order, so the model must be a 1000-class
ImageNet classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from ..data.folders import ImageFolderDataset
from ..data.imagenet_classes import NUM_IMAGENET_CLASSES, imagenet_wnids, subset_indices
from ..errors import BioattnError, listing
from ..metrics.accuracy import Accuracy
from ..protocol import forward_readouts, unwrap
from .corruptions import errors_from_top1, summarise_top1
from .mce import CORRUPTIONS, SEVERITIES, check_corruption_names, check_severities, mce

CROP_PCT = 0.875  # resize the short side to img_size / 0.875 (256 for 224), then centre-crop


def eval_transform(img_size: int, mean: Sequence[float], std: Sequence[float], resize: bool = True):
    """Centre crop of ``img_size`` (after resizing the short side to ``img_size / 0.875`` when
    ``resize``), as a normalised tensor."""

    ops = []
    if resize:
        ops.append(T.Resize(int(round(img_size / CROP_PCT)), interpolation=T.InterpolationMode.BICUBIC))
    ops += [T.CenterCrop(img_size), T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(ops)


def wnid_folder(root: str | Path, transform, skip_bad_images: bool = False) -> Dataset:
    """Images under ``root/<wnid>/`` labelled with the wnid's index among the 1000 ImageNet
    classes. Folders that are not ImageNet-1k wnids are an error."""

    root = Path(root)
    if not root.is_dir():
        raise BioattnError(f"benchmark folder not found: {root}")
    wnids = imagenet_wnids()
    known = set(wnids)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not folders:
        raise BioattnError(f"no class folders in {root} (expected <wnid>/ folders such as n01440764/)")
    unknown = [f for f in folders if f not in known]
    if unknown:
        raise BioattnError(f"{root} has folders that are not ImageNet-1k class wnids: {listing(unknown)}")
    return ImageFolderDataset(root, transform=transform, classes=list(wnids), skip_bad_images=skip_bad_images)


def model_num_classes(model: nn.Module) -> int | None:
    n = getattr(unwrap(model), "num_classes", None)
    return int(n) if isinstance(n, int) else None


def require_imagenet_model(model: nn.Module, suite: str, classes: Sequence[str] | None = None) -> None:
    """Raise unless ``model`` is a 1000-class ImageNet classifier in the standard class order."""
    n = model_num_classes(model)
    if n is not None and n != NUM_IMAGENET_CLASSES:
        raise BioattnError(f"{suite} needs a 1000-class ImageNet model, but the model has {n} classes")
    if classes is not None:
        classes = list(classes)
        if len(classes) != NUM_IMAGENET_CLASSES:
            raise BioattnError(
                f"{suite} needs a 1000-class ImageNet model, but the checkpoint lists {len(classes)} classes"
            )
        wnids = imagenet_wnids()
        looks_like_wnids = all(c[:1] == "n" and c[1:].isdigit() for c in classes)
        if looks_like_wnids and tuple(classes) != wnids:
            raise BioattnError(f"{suite}: the checkpoint's classes are not the ImageNet-1k wnids in standard order")


def evaluate_classes(
    model: nn.Module,
    loader: DataLoader,
    indices: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    readouts: int | None = None,
    suite: str = "benchmark",
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Top-1/top-5 (percent) over 1000-class labels, the arg-max taken over ``indices`` only
    when given."""
    device = torch.device(device)
    model.eval()
    accuracy = Accuracy(classes=indices)
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = forward_readouts(model, images, readouts).logits
            if logits.shape[1] != NUM_IMAGENET_CLASSES:
                raise BioattnError(
                    f"{suite} needs a 1000-class ImageNet model, but the model gives {logits.shape[1]} logits"
                )
            accuracy.update(logits, labels)
            if progress is not None:
                progress(labels.shape[0])
    return accuracy.result()


def imagenet_c_folders(root: str | Path, corruptions: Sequence[str] | None = None,
                       severities: Sequence[int] | None = None) -> dict[tuple[str, int], Path]:
    """The ``(corruption, severity) -> folder`` map of an ImageNet-C tree, checked complete."""
    root = Path(root)
    if not root.is_dir():
        raise BioattnError(f"ImageNet-C folder not found: {root}")
    corruptions = check_corruption_names(CORRUPTIONS if corruptions is None else corruptions)
    severities = check_severities(SEVERITIES if severities is None else severities)
    missing_c = [c for c in corruptions if not (root / c).is_dir()]
    if missing_c:
        raise BioattnError(
            f"ImageNet-C folder {root} lacks corruption folder(s): {', '.join(missing_c)} "
            "(pick a subset with --corruptions)"
        )
    out = {}
    for c in corruptions:
        missing_s = [s for s in severities if not (root / c / str(s)).is_dir()]
        if missing_s:
            raise BioattnError(
                f"ImageNet-C folder {root / c} lacks severity folder(s) {', '.join(map(str, missing_s))}"
            )
        for s in severities:
            out[(c, s)] = root / c / str(s)
    return out


def imagenet_c_datasets(root, img_size: int, mean, std, corruptions=None, severities=None,
                        skip_bad_images: bool = False) -> dict[tuple[str, int], Dataset]:
    transform = eval_transform(img_size, mean, std, resize=False)
    return {key: wnid_folder(folder, transform, skip_bad_images)
            for key, folder in imagenet_c_folders(root, corruptions, severities).items()}


def summarise_imagenet_c(top1: dict[str, dict[str, float]]) -> dict:
    """Corruption accuracy and, when all five severities were measured, AlexNet-normalised mCE."""
    out = summarise_top1(top1)
    full = all(sorted(int(s) for s in v) == list(SEVERITIES) for v in top1.values())
    if full:
        out.update(mce(errors_from_top1(top1)))
    else:
        out.update(ce=None, mce=None,
                   mce_note="mCE needs all five severities (AlexNet's errors are their mean)")
    return out


def imagenet_subset_indices(suite: str) -> tuple[int, ...] | None:
    """The 200 class indices of ImageNet-A / -R; ``None`` (all classes) for ImageNet-Sketch."""
    if suite in ("imagenet-a", "imagenet-r"):
        return subset_indices(suite)
    if suite == "imagenet-sketch":
        return None
    raise BioattnError(f"unknown ImageNet benchmark '{suite}'")
