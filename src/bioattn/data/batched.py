"""Training batches made in the main process from images held in memory.

The embedded data, in all its variants (one object, pairs, several objects, label maps, the
four styles of the domains), is a uint8 array. Reading it through a ``DataLoader`` costs a Python
call, a transform and a collation per image, and for the segmentation pipeline several
milliseconds per image. :class:`InMemoryBatches` instead gathers a batch's images with one
indexing and augments the whole batch as tensors, in the main process:

* classification and multi-label (:func:`augment_batch`), in the order of the loader's
  transform (:func:`bioattn.data.transforms.embedded_uint8_transform`): random resized crop (timm's draw:
  area 8-100% of the image, aspect ratio 3/4-4/3, ten tries then the centre), horizontal flip,
  colour jitter (brightness, contrast and saturation in a random order per image, torchvision's
  factors), RandAugment (per image, on PIL images: it has no batched form), resizing to the
  model's size, normalisation and random erasing (timm's, on the normalised batch);
* segmentation (:func:`segment_batch`): mmsegmentation's training pipeline of
  :class:`~bioattn.data.segmentation.SegmentationTransform`, the label maps moved with their
  images: rescale by a ratio, random crop re-drawn while one class fills too much of it, flip,
  photometric distortion on the whole batch, normalisation and padding.

Every draw of an image comes from the loader's own generator, seeded per epoch by the trainer
(:meth:`InMemoryBatches.set_seed`), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset, Subset

from .embedded import EmbeddedDataset
from .segmentation import (
    CROP_TRIES,
    PHOTOMETRIC,
    EmbeddedSegmentation,
    SegmentationTransform,
    hsv_to_rgb,
    rescaled_size,
    rgb_to_hsv,
)

# ------------------------------------------------------------------------------------------
# where the pixels are: a data set's images as one uint8 array
# ------------------------------------------------------------------------------------------


class InMemorySource:
    """The images ``(N, H, W, 3)`` uint8 and targets of an in-memory data set, by index (the
    targets as each part's data set gives them: :meth:`targets_of`)."""

    def __init__(self, parts: Sequence[tuple[Dataset, np.ndarray]]) -> None:
        # each part: an embedded data set and the indices of its items taken, in order
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(idx) for _, idx in self.parts])
        sizes = {ds.arrays.images.shape[1:3] for ds, _ in self.parts}
        if len(sizes) != 1:
            raise ValueError(f"in-memory parts differ in image size: {sorted(sizes)}")
        self.image_size = sizes.pop()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, indices: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(part, positions in the batch, indices into the part's data set) per part touched."""
        part_of = np.searchsorted(self.offsets, indices, side="right") - 1
        out = []
        for p in np.unique(part_of):
            where = np.nonzero(part_of == p)[0]
            out.append((int(p), where, self.parts[p][1][indices[where] - self.offsets[p]]))
        return out

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(B, 3, H, W)`` and targets: class indices ``(B,)``, multi-hot
        ``(B, K)`` float, or label maps ``(B, H, W)`` uint8."""
        indices = np.asarray(indices, dtype=np.int64)
        n = len(indices)
        h, w = self.image_size
        images = np.empty((n, h, w, 3), np.uint8)
        targets: np.ndarray | None = None
        for p, where, rows in self._locate(indices):
            ds = self.parts[p][0]
            order = np.argsort(rows, kind="stable")  # a memory map reads faster in file order
            images[where[order]] = ds.arrays.images[rows[order]]
            part = ds.targets_of(rows)
            if targets is None:
                targets = np.empty((n, *part.shape[1:]), part.dtype)
            targets[where] = part
        return torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(targets)


def in_memory_source(dataset: Dataset) -> InMemorySource | None:
    """The :class:`InMemorySource` of an embedded data set (through subsets, wrappers and the
    domains' concatenation), or None when its images are not an in-memory array."""

    def parts_of(ds: Dataset, indices: np.ndarray | None) -> list[tuple[Dataset, np.ndarray]] | None:
        if isinstance(ds, Subset):
            inner = np.asarray(ds.indices, dtype=np.int64)
            return parts_of(ds.dataset, inner if indices is None else inner[indices])
        if isinstance(ds, ConcatDataset):
            if indices is not None:
                out = []
                for p in np.unique(np.searchsorted(ds.cumulative_sizes, indices, side="right")):
                    start = 0 if p == 0 else ds.cumulative_sizes[p - 1]
                    taken = indices[(indices >= start) & (indices < ds.cumulative_sizes[p])] - start
                    found = parts_of(ds.datasets[p], taken)
                    if found is None:
                        return None
                    out += found
                # a subset of a concatenation keeps its own order only when it is sorted
                return out if np.all(np.diff(indices) > 0) else None
            out = []
            for part in ds.datasets:
                found = parts_of(part, None)
                if found is None:
                    return None
                out += found
            return out
        if hasattr(ds, "base") and not isinstance(ds, (EmbeddedDataset, EmbeddedSegmentation)):
            return parts_of(ds.base, indices)
        if isinstance(ds, (EmbeddedDataset, EmbeddedSegmentation)):
            return [(ds, np.arange(len(ds), dtype=np.int64) if indices is None else indices)]
        return None

    parts = parts_of(dataset, None)
    if not parts:
        return None
    kinds = {type(ds) for ds, _ in parts}
    if len(kinds) != 1:
        return None
    return InMemorySource(parts)


# ------------------------------------------------------------------------------------------
# classification and multi-label: one recipe for the whole batch
# ------------------------------------------------------------------------------------------
RRC_SCALE = (0.08, 1.0)  # timm's and torchvision's random resized crop
RRC_RATIO = (3 / 4, 4 / 3)
RRC_TRIES = 10


@dataclass
class BatchRecipe:
    """What :func:`augment_batch` does to a batch: the trainer's augmentation settings, the
    model's input size and normalisation (``mean``, ``std`` in [0, 1] units)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    random_resized_crop: bool = False
    hflip: float = 0.0
    color_jitter: float = 0.0
    auto_augment: str | None = None
    re_prob: float = 0.0
    re_mode: str = "pixel"
    re_count: int = 1
    interpolation: str = "bicubic"


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def random_resized_crop_boxes(n: int, height: int, width: int, g: torch.Generator,
                              scale: tuple[float, float] = RRC_SCALE,
                              ratio: tuple[float, float] = RRC_RATIO) -> torch.Tensor:
    """``(n, 4)`` crop boxes ``(top, left, h, w)`` drawn as timm's random resized crop draws
    one: an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``, up to ten
    tries for a box that fits, else the image's centre at the nearest allowed aspect ratio."""
    area = height * width
    boxes = torch.zeros(n, 4, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(RRC_TRIES):
        target = area * _uniform(n, *scale, g)
        aspect = torch.exp(_uniform(n, *log_ratio, g))
        w = torch.round(torch.sqrt(target * aspect)).long()
        h = torch.round(torch.sqrt(target / aspect)).long()
        fits = (w > 0) & (h > 0) & (w <= width) & (h <= height) & ~done
        top = (torch.rand(n, generator=g, dtype=torch.float64) * (height - h + 1).clamp(min=1)).long()
        left = (torch.rand(n, generator=g, dtype=torch.float64) * (width - w + 1).clamp(min=1)).long()
        boxes[fits] = torch.stack([top, left, h, w], 1)[fits]
        done |= fits
    if not bool(done.all()):
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        boxes[~done] = torch.tensor([(height - h) // 2, (width - w) // 2, h, w])
    return boxes


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Each image's box ``(top, left, h, w)`` resampled to ``size`` x ``size`` (float images,
    one ``grid_sample`` for the batch; pixel centres aligned as in ``F.interpolate``)."""
    n, _, height, width = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode=mode if mode in ("bilinear", "nearest", "bicubic") else "bilinear",
                         padding_mode="border", align_corners=False)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float RGB images ``(B, 3, H, W)``, as ``(B, 1, H, W)``."""
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def color_jitter(images: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """torchvision's ``ColorJitter(strength, strength, strength)`` on each image of a float batch
    in [0, 1]: brightness, contrast and saturation factors drawn in ``[1 - s, 1 + s]`` (floored
    at 0), applied in a random order per image."""
    n = images.shape[0]
    low, high = max(0.0, 1 - strength), 1 + strength
    factors = _uniform(3 * n, low, high, g).to(images.dtype).view(3, n, 1, 1, 1)
    order = torch.argsort(torch.rand(n, 3, generator=g), dim=1)  # order[i, k]: the k-th step of image i

    def brightness(x, f):
        return (x * f).clamp(0, 1)

    def contrast(x, f):
        mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0, 1)

    def saturation(x, f):
        return (f * x + (1 - f) * _grey(x)).clamp(0, 1)

    steps = (brightness, contrast, saturation)
    out = images
    for k in range(3):
        for op in range(3):
            chosen = order[:, k] == op
            if bool(chosen.any()):
                out = out.clone() if out is images else out
                out[chosen] = steps[op](out[chosen], factors[op][chosen])
    return out


def _rand_augment(images: torch.Tensor, policy: str, size: int) -> torch.Tensor:
    """timm's RandAugment, one PIL image at a time (it has no batched form)."""
    # deferred: timm's augmentation and PIL are needed only with --aa
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    transform = rand_augment_transform(policy, {"translate_const": int(size * 0.45)})
    out = torch.empty_like(images)
    for i, image in enumerate(images):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        out[i] = torch.from_numpy(np.array(transform(pil), dtype=np.uint8)).permute(2, 0, 1)
    return out


def augment_batch(images: torch.Tensor, recipe: BatchRecipe, g: torch.Generator) -> torch.Tensor:
    """A training batch: uint8 ``(B, 3, H, W)`` in, normalised float ``(B, 3, size, size)``
    out, through the steps of ``recipe`` (each drawn per image from ``g``)."""
    n, _, height, width = images.shape
    x = images.float().div_(255)
    if recipe.random_resized_crop:
        x = crop_and_resize(x, random_resized_crop_boxes(n, height, width, g), recipe.size,
                            recipe.interpolation).clamp_(0, 1)
    if recipe.hflip > 0:
        flip = torch.rand(n, generator=g) < recipe.hflip
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    if recipe.color_jitter > 0:
        x = color_jitter(x, recipe.color_jitter, g)
    if recipe.auto_augment:
        levels = x.mul(255).round_().to(torch.uint8)
        x = _rand_augment(levels, recipe.auto_augment, recipe.size).float().div_(255)
    if not recipe.random_resized_crop and (height, width) != (recipe.size, recipe.size):
        x = F.interpolate(x, size=(recipe.size, recipe.size), mode="bilinear", antialias=True,
                          align_corners=False)
    mean = torch.tensor(recipe.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    if recipe.re_prob > 0:
        # deferred: timm's random erasing is needed only with --reprob
        from timm.data.random_erasing import RandomErasing

        # timm draws its boxes from Python's generator, which the trainer seeds per epoch
        x = RandomErasing(recipe.re_prob, mode=recipe.re_mode, max_count=recipe.re_count, device="cpu")(x)
    return x


# ------------------------------------------------------------------------------------------
# segmentation: mmsegmentation's pipeline, label maps moved with their images
# ------------------------------------------------------------------------------------------
def _crop_box(label: torch.Tensor, crop: tuple[int, int], cat_max_ratio: float | None, ignore_index: int,
              tries: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """A random crop of ``label`` (mmsegmentation's RandomCrop), re-drawn up to ``tries``
    times while one class covers ``cat_max_ratio`` or more of its labelled pixels."""
    height, width = label.shape
    h, w = min(crop[0], height), min(crop[1], width)

    def draw() -> tuple[int, int, int, int]:
        top = int(torch.randint(0, height - h + 1, (), generator=g))
        left = int(torch.randint(0, width - w + 1, (), generator=g))
        return top, left, h, w

    box = draw()
    if cat_max_ratio is None or cat_max_ratio >= 1:
        return box
    for _ in range(tries):
        top, left = box[:2]
        counts = torch.bincount(label[top:top + h, left:left + w].reshape(-1).long(), minlength=256)
        counts[ignore_index] = 0
        counts = counts[counts > 0]
        if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio:
            break
        box = draw()
    return box


def photometric_batch(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """mmsegmentation's photometric distortion (see
    :func:`bioattn.data.segmentation.photometric_distortion`) of each image of a float batch in
    [0, 255], every coin and factor drawn per image."""
    s = PHOTOMETRIC
    n = images.shape[0]

    def coin() -> torch.Tensor:
        return (torch.rand(n, generator=g) < 0.5).view(n, 1, 1, 1)

    def uniform(low: float, high: float) -> torch.Tensor:
        return _uniform(n, low, high, g).to(images.dtype).view(n, 1, 1, 1)

    out = images.float()
    out = torch.where(coin(), (out + uniform(-s.brightness, s.brightness)).clamp(0, 255), out)
    contrast_first = coin()
    contrast_on, contrast_factor = coin(), uniform(*s.contrast)
    out = torch.where(contrast_first & contrast_on, (out * contrast_factor).clamp(0, 255), out)
    change_saturation, saturation = coin(), uniform(*s.saturation)
    change_hue = coin()
    shift = torch.randint(-s.hue, s.hue + 1, (n,), generator=g).to(images.dtype).view(n, 1, 1) / 180.0
    hsv = rgb_to_hsv(out / 255.0)
    hue, sat, value = hsv.unbind(1)
    sat = torch.where(change_saturation[:, 0], (sat * saturation[:, 0]).clamp(0, 1), sat)
    hue = torch.where(change_hue[:, 0], torch.remainder(hue + shift, 1.0), hue)
    colour = (hsv_to_rgb(torch.stack([hue, sat, value], 1)) * 255.0).clamp(0, 255)
    out = torch.where(change_saturation | change_hue, colour, out)
    return torch.where(~contrast_first & contrast_on, (out * contrast_factor).clamp(0, 255), out)


def segment_batch(images: torch.Tensor, labels: torch.Tensor, t: SegmentationTransform,
                  g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A segmentation training batch by the pipeline of ``t`` (a training
    :class:`SegmentationTransform`): uint8 images ``(B, 3, H, W)`` and label maps ``(B, H, W)``
    in; normalised float images and long label maps of the crop size out, padded with 0 and the
    ignore index. The geometry runs per image (each has its own scale), the colour on the batch."""
    n, _, height, width = images.shape
    crop_h, crop_w = t.crop
    pixels = torch.zeros(n, 3, crop_h, crop_w)
    target = torch.full((n, crop_h, crop_w), t.ignore_index, dtype=torch.long)
    filled = torch.zeros(n, 1, crop_h, crop_w, dtype=torch.bool)
    ratios = _uniform(n, *t.ratio_range, g)
    flips = torch.rand(n, generator=g) < t.hflip
    for i in range(n):
        size = rescaled_size(height, width, t.scale, float(ratios[i]))
        image = F.interpolate(images[i:i + 1].float(), size=size, mode="bilinear", antialias=True,
                              align_corners=False).round_().clamp_(0, 255)
        label = F.interpolate(labels[i][None, None].float(), size=size, mode="nearest")[0, 0].long()
        top, left, h, w = _crop_box(label, t.crop, t.cat_max_ratio, t.ignore_index, CROP_TRIES, g)
        image, label = image[0, :, top:top + h, left:left + w], label[top:top + h, left:left + w]
        if flips[i]:
            image, label = image.flip(-1), label.flip(-1)
        pixels[i, :, :h, :w] = image
        target[i, :h, :w] = label
        filled[i, :, :h, :w] = True
    if t.photometric:
        pixels = photometric_batch(pixels, g)
    mean = torch.tensor(t.mean).view(1, 3, 1, 1)
    std = torch.tensor(t.std).view(1, 3, 1, 1)
    return torch.where(filled, (pixels / 255.0 - mean) / std, 0.0), target


# ------------------------------------------------------------------------------------------
# the loader
# ------------------------------------------------------------------------------------------
Batch = tuple[torch.Tensor, torch.Tensor]


class InMemoryBatches:
    """Training batches of an in-memory data set, made in the main process.

    ``sampler`` orders the items (and shards them over processes); ``make_batch`` turns the
    uint8 images and targets of ``batch_size`` items into a training batch, drawing from the
    generator this loader re-seeds every epoch (:meth:`set_seed`). Like a ``DataLoader`` with
    ``drop_last``, a last incomplete batch is left out."""

    def __init__(self, source: InMemorySource, sampler: Any, batch_size: int,
                 make_batch: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Batch]):
        self.source = source
        self.sampler = sampler
        self.batch_size = batch_size
        self.make_batch = make_batch
        self.generator = torch.Generator()

    def set_seed(self, seed: int) -> None:
        self.generator.manual_seed(seed % (2**63))

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        for b in range(len(self)):
            images, targets = self.source.batch(order[b * self.batch_size:(b + 1) * self.batch_size])
            yield self.make_batch(images, targets, self.generator)


def in_memory_loader(dataset: Dataset, sampler: Any, batch_size: int, recipe: BatchRecipe) -> InMemoryBatches | None:
    """:class:`InMemoryBatches` for ``dataset`` when its images are in memory (else None):
    :func:`segment_batch` with the data set's own training transform for label maps,
    :func:`augment_batch` with ``recipe`` for class and multi-label targets."""
    source = in_memory_source(dataset)
    if source is None:
        return None
    transform = getattr(source.parts[0][0], "transform", None)
    if isinstance(transform, SegmentationTransform):
        if not transform.train:
            return None

        def make(images, labels, g):
            return segment_batch(images, labels, transform, g)
    else:
        def make(images, targets, g):
            return augment_batch(images, recipe, g), targets

    return InMemoryBatches(source, sampler, batch_size, make)
