"""Semantic segmentation data: PASCAL VOC 2012, ADE20K, Cityscapes and the embedded shapes.

Every data set gives ``(image, label)`` pairs: the image a normalised float tensor ``(3, H, W)``,
the label a ``LongTensor`` ``(H, W)`` of class indices in ``[0, num_classes)``, with
:data:`IGNORE_INDEX` (255) on pixels that no class is scored on (VOC's object borders, ADE20K's
"other", Cityscapes' void classes, padding). Each set has ``classes`` (names, background first
where the set has one), ``num_classes`` and ``ignore_index``.

Label files are read as class indices, never as colours: VOC's ``SegmentationClass`` PNGs are
palette images whose pixel values are the indices. Nothing trains on silently wrong labels: a
label map whose size differs from its image, or that holds a value outside ``[0, num_classes)``
other than 255, is refused with the file's name when it is read; an image without its label
file, and a root without the expected folders, are refused when the data set is built.

:class:`SegmentationTransform` is the joint image + label transform of mmsegmentation's recipe:
for training a random rescale (ratio 0.5-2 of a base scale, aspect kept), a random crop (that
retries crops dominated by one class, ``cat_max_ratio``), a horizontal flip, the photometric
distortion (brightness, contrast, saturation, hue), normalisation, and padding to the crop size
(0 in the image, 255 in the label); for evaluation an optional rescale of the image and
normalisation (the label keeps its size; predictions are resized to it, as mmsegmentation does).

``build_segmentation_dataset(spec, ...)`` is the one entry point; ``spec`` is ``voc:ROOT``,
``ade20k:ROOT``, ``cityscapes:ROOT`` or an embedded spec with the option ``seg``
(``embedded:seg``, ``embedded:seg,pair,train=2000``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import BioattnError, listing
from ..images import open_rgb
from ..tasks.spec import SEGMENTATION
from .embedded import CLASS_NAMES, EmbeddedArrays, EmbeddedSpec, is_embedded, load_embedded
from .stats import EMBEDDED_MEAN, EMBEDDED_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IGNORE_INDEX", "VOC_CLASSES", "ADE20K_CLASSES", "CITYSCAPES_CLASSES", "CITYSCAPES_ID_TO_TRAIN_ID",
    "EMBEDDED_SEGMENTATION_CLASSES",
    "SegmentationTransform", "photometric_distortion", "VOCSegmentation", "ADE20KSegmentation",
    "CityscapesSegmentation", "EmbeddedSegmentation", "embedded_label_map",
    "build_segmentation_dataset",
]

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# Cityscapes label id -> train id (the 19 evaluated classes; every other id is ignored)
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, np.uint8)
for _label_id, _train_id in _CITYSCAPES_TRAIN_IDS.items():
    CITYSCAPES_ID_TO_TRAIN_ID[_label_id] = _train_id

# ADE20K's "reduce zero label": 0 ("other") is ignored, every other class moves down by one
_ADE20K_REDUCE_ZERO = (np.arange(256, dtype=np.int64) - 1).astype(np.uint8)
_ADE20K_REDUCE_ZERO[0] = IGNORE_INDEX
_ADE20K_REDUCE_ZERO[IGNORE_INDEX] = IGNORE_INDEX

EMBEDDED_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *CLASS_NAMES)


# mmsegmentation's photometric distortion: brightness delta in 8-bit units, contrast and
# saturation ranges, hue delta in OpenCV's hue units (180 to the full circle)
@dataclass(frozen=True)
class PhotometricSettings:
    brightness: float = 32.0
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: int = 18


PHOTOMETRIC = PhotometricSettings()
CROP_TRIES = 10  # draws of a random crop before one with no dominating class is given up on

# base scale (long side, short side) of mmsegmentation's configs for each set
_BASE_SCALES = {"voc": (2048, 512), "ade20k": (2048, 512), "cityscapes": (2048, 1024)}


# ------------------------------------------------------------------------------------------
# joint transforms
# ------------------------------------------------------------------------------------------
def _pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints as ``(a, b)``; both must be positive."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise BioattnError(f"{name} must be an integer or a pair of integers, got {value!r}")
    if min(pair) < 1:
        raise BioattnError(f"{name} must be positive, got {value!r}")
    return pair


def rescaled_size(height: int, width: int, scale: tuple[int, int], ratio: float = 1.0) -> tuple[int, int]:
    """``(h, w)`` after a keep-ratio rescale into ``scale * ratio`` (mmcv's rule: the long side
    at most the scale's larger number, the short side at most its smaller one)."""
    long_edge, short_edge = max(scale) * ratio, min(scale) * ratio
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], channels at dim -3 (``(3, H, W)`` or ``(B, 3, H, W)``) -> HSV in [0, 1]
    (hue as a fraction of the circle)."""
    r, g, b = rgb.unbind(-3)
    high, low = rgb.max(-3).values, rgb.min(-3).values
    delta = high - low
    saturation = torch.where(high > 0, delta / high.clamp(min=1e-12), torch.zeros_like(high))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(high == r, (g - b) / safe,
                      torch.where(high == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(delta > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    return torch.stack([hue, saturation, high], -3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    hue, saturation, value = hsv.unbind(-3)
    sector = torch.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    sector = sector.long() % 6
    p = value * (1 - saturation)
    q = value * (1 - saturation * frac)
    t = value * (1 - saturation * (1 - frac))
    # per sector, which of (v, q, p, t) each channel takes
    red = torch.stack([value, q, p, p, t, value])
    green = torch.stack([t, value, value, q, p, p])
    blue = torch.stack([p, p, t, value, value, q])
    index = sector[None]
    return torch.stack([red.gather(0, index)[0], green.gather(0, index)[0], blue.gather(0, index)[0]], -3)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _coin() -> bool:
    return bool(torch.rand(()) < 0.5)


def photometric_distortion(image: torch.Tensor) -> torch.Tensor:
    """mmsegmentation's ``PhotoMetricDistortion`` of a float ``(3, H, W)`` image in [0, 255]:
    each step with probability 1/2 (random draws from torch's generator): brightness shift by
    up to +-32, contrast factor in [0.5, 1.5] (before or after the colour steps, at random),
    saturation factor in [0.5, 1.5], hue shift by up to +-18/180 of the circle; clipped to
    [0, 255] after each step."""
    out = image.float()
    if _coin():
        out = (out + _uniform(-PHOTOMETRIC.brightness, PHOTOMETRIC.brightness)).clamp(0, 255)
    contrast_first = _coin()

    def contrast(x: torch.Tensor) -> torch.Tensor:
        return (x * _uniform(*PHOTOMETRIC.contrast)).clamp(0, 255) if _coin() else x

    if contrast_first:
        out = contrast(out)
    change_saturation, change_hue = _coin(), _coin()
    if change_saturation or change_hue:
        hsv = rgb_to_hsv(out / 255.0)
        if change_saturation:
            hsv[1] = (hsv[1] * _uniform(*PHOTOMETRIC.saturation)).clamp(0, 1)
        if change_hue:
            shift = int(torch.randint(-PHOTOMETRIC.hue, PHOTOMETRIC.hue + 1, ()))
            hsv[0] = torch.remainder(hsv[0] + shift / 180.0, 1.0)
        out = (hsv_to_rgb(hsv) * 255.0).clamp(0, 255)
    if not contrast_first:
        out = contrast(out)
    return out


def _image_tensor(image) -> torch.Tensor:
    """A PIL image, a uint8 ``(H, W, 3)`` array or a uint8 ``(3, H, W)`` tensor as a uint8
    ``(3, H, W)`` tensor."""
    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB") if image.mode != "RGB" else image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BioattnError(f"images must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if torch.is_tensor(image) and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
        return image
    raise BioattnError(f"images must be PIL images, uint8 (H, W, 3) arrays or uint8 (3, H, W) tensors, "
                       f"got {type(image).__name__}")


def _label_tensor(label) -> torch.Tensor:
    """A label map (PIL image, array or tensor of class indices ``(H, W)``) as a uint8 tensor."""
    if isinstance(label, Image.Image):
        label = np.asarray(label)
    if isinstance(label, np.ndarray):
        label = torch.from_numpy(np.ascontiguousarray(label))
    if not torch.is_tensor(label) or label.ndim != 2:
        raise BioattnError(f"a label map must be (H, W), got {getattr(label, 'shape', type(label).__name__)}")
    if label.dtype != torch.uint8:
        if label.numel() and (int(label.min()) < 0 or int(label.max()) > 255):
            raise BioattnError(f"label values must be in [0, 255], got {int(label.min())} to {int(label.max())}")
        label = label.to(torch.uint8)
    return label


class SegmentationTransform:
    """Joint transform of an ``(image, label)`` pair into ``(normalised float (3, H, W),
    LongTensor (H, W))``.

    ``train=True`` follows mmsegmentation's training pipeline: rescale, keeping the aspect, into
    ``scale`` (an int: the long side; a pair: long and short side limits) times a ratio drawn
    from ``ratio_range``; random crop of ``crop`` (int or ``(h, w)``), re-drawn up to 10 times
    while one class covers ``cat_max_ratio`` or more of the crop's labelled pixels (None: no
    check); horizontal flip with probability ``hflip``; :func:`photometric_distortion` when
    ``photometric``; normalisation by ``mean``/``std`` ([0, 1] units); padding at the bottom and
    right to ``crop`` with 0 in the normalised image and ``ignore_index`` in the label. Labels are
    resized with nearest neighbours, images bilinearly.

    ``train=False`` rescales the image into ``scale`` when given (None keeps it) and normalises
    it; the label keeps its size (evaluation resizes predictions to it).
    """

    def __init__(self, train: bool, crop: int | tuple[int, int] | None = None,
                 scale: int | tuple[int, int] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, ratio_range: tuple[float, float] = (0.5, 2.0),
                 cat_max_ratio: float | None = 0.75, hflip: float = 0.5, photometric: bool = True,
                 ignore_index: int = IGNORE_INDEX) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise BioattnError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise BioattnError(f"std must be positive, got {tuple(std)}")
        self.train = bool(train)
        self.crop = None if crop is None else _pair(crop, "crop")
        self.scale = None if scale is None else _pair(scale, "scale")
        if self.train and (self.crop is None or self.scale is None):
            raise BioattnError("a training segmentation transform needs a crop size and a base scale")
        low, high = (float(r) for r in ratio_range)
        if not 0 < low <= high:
            raise BioattnError(f"ratio_range must satisfy 0 < low <= high, got {tuple(ratio_range)}")
        self.ratio_range = (low, high)
        if cat_max_ratio is not None and not 0 < cat_max_ratio <= 1:
            raise BioattnError(f"cat_max_ratio must be in (0, 1], got {cat_max_ratio}")
        self.cat_max_ratio = cat_max_ratio
        if not 0 <= hflip <= 1:
            raise BioattnError(f"hflip must be a probability in [0, 1], got {hflip}")
        self.hflip = float(hflip)
        self.photometric = bool(photometric)
        self.ignore_index = int(ignore_index)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean).view(3, 1, 1)
        self._std = torch.tensor(self.std).view(3, 1, 1)

    def __repr__(self) -> str:
        return (f"SegmentationTransform(train={self.train}, crop={self.crop}, scale={self.scale}, "
                f"ratio_range={self.ratio_range}, cat_max_ratio={self.cat_max_ratio}, hflip={self.hflip}, "
                f"photometric={self.photometric})")

    def _random_crop_box(self, label: torch.Tensor) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of a random crop (mmsegmentation's RandomCrop)."""
        height, width = label.shape[-2:]
        crop_h, crop_w = min(self.crop[0], height), min(self.crop[1], width)

        def draw() -> tuple[int, int, int, int]:
            top = int(torch.randint(0, height - crop_h + 1, ()))
            left = int(torch.randint(0, width - crop_w + 1, ()))
            return top, left, crop_h, crop_w

        box = draw()
        if self.cat_max_ratio is None or self.cat_max_ratio >= 1:
            return box
        for _ in range(CROP_TRIES):
            top, left, h, w = box
            counts = torch.bincount(label[..., top:top + h, left:left + w].reshape(-1).long(), minlength=256)
            counts[self.ignore_index] = 0
            counts = counts[counts > 0]
            if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio:
                break
            box = draw()
        return box

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        # deferred: torchvision loads in about a second; building data sets does not need it
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        img = tv_tensors.Image(_image_tensor(image))
        mask = tv_tensors.Mask(_label_tensor(label)[None])
        if img.shape[-2:] != mask.shape[-2:]:
            raise BioattnError(f"label map of size {tuple(mask.shape[-2:])} does not match its image of size "
                               f"{tuple(img.shape[-2:])} (height, width)")
        if self.train:
            ratio = _uniform(*self.ratio_range)
            size = list(rescaled_size(*img.shape[-2:], self.scale, ratio))
            img = TF.resize(img, size, antialias=True)
            mask = TF.resize(mask, size)  # a Mask is resized with nearest neighbours
            top, left, h, w = self._random_crop_box(mask)
            img, mask = TF.crop(img, top, left, h, w), TF.crop(mask, top, left, h, w)
            if self.hflip > 0 and float(torch.rand(())) < self.hflip:
                img, mask = TF.horizontal_flip(img), TF.horizontal_flip(mask)
            pixels = photometric_distortion(img) if self.photometric else img.float()
        else:
            if self.scale is not None:
                img = TF.resize(img, list(rescaled_size(*img.shape[-2:], self.scale)), antialias=True)
            pixels = img.float()
        x = (pixels.as_subclass(torch.Tensor) / 255.0 - self._mean) / self._std
        target = mask.as_subclass(torch.Tensor)[0].long()
        if self.train:
            pad_h, pad_w = self.crop[0] - x.shape[-2], self.crop[1] - x.shape[-1]
            if pad_h > 0 or pad_w > 0:
                padding = [0, 0, max(pad_w, 0), max(pad_h, 0)]
                x = TF.pad(x, padding, fill=0.0)
                target = TF.pad(target[None], padding, fill=self.ignore_index)[0]
        return x, target


# ------------------------------------------------------------------------------------------
# data sets read from files
# ------------------------------------------------------------------------------------------
def _read_label(path: Path, lookup: np.ndarray | None = None) -> np.ndarray:
    """A label PNG as uint8 class indices ``(H, W)`` (palette indices, not colours), mapped
    through ``lookup`` (256 entries) when given."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ("P", "L"):
                raise BioattnError(f"label map {path} has PIL mode {mode}; expected class indices "
                                   "(a palette or 8-bit greyscale PNG)")
            label = np.array(img, dtype=np.uint8)
    except BioattnError:
        raise
    except FileNotFoundError:
        raise BioattnError(f"label map not found: {path}") from None
    except Exception as exc:  # PIL raises many kinds for damaged files
        raise BioattnError(f"cannot read label map {path}: {exc}".splitlines()[0]) from None
    return label if lookup is None else lookup[label]


def _check_label_values(label: np.ndarray, num_classes: int, name: str) -> None:
    """Refuse label values outside ``[0, num_classes)`` other than the ignore index."""
    if label.size == 0 or int(label.max()) < num_classes:
        return
    bad = np.unique(label[(label >= num_classes) & (label != IGNORE_INDEX)])
    if len(bad):
        raise BioattnError(f"label map {name} holds values {listing(bad.tolist(), 5)} outside [0, {num_classes}) "
                           f"(and not the ignore index {IGNORE_INDEX})")


def _check_pairs(images: dict[str, Path], labels: dict[str, Path], what: str, label_folder: Path) -> list[str]:
    """The sorted keys found in both; an image without a label (or a label without an image)
    is refused with the first one and how many."""
    no_label = sorted(set(images) - set(labels))
    if no_label:
        first = images[no_label[0]]
        raise BioattnError(f"{what}: {len(no_label)} of {len(images)} images have no label file in {label_folder} "
                           f"(first: {first.name})")
    no_image = sorted(set(labels) - set(images))
    if no_image:
        first = labels[no_image[0]]
        raise BioattnError(f"{what}: {len(no_image)} label files have no image (first: {first})")
    if not images:
        raise BioattnError(f"{what}: no images found")
    return sorted(images)


def _public_split(split: str, name: str) -> str:
    """``train`` or ``val``; ``test`` means the validation set (the public sets' test labels are
    not released)."""
    if split not in ("train", "val", "test"):
        raise BioattnError(f"unknown split '{split}' for {name} (choose from train, val, test)")
    return "val" if split == "test" else split


class _LabelMapFiles(Dataset):
    """Pairs of image and label files; each label is read as indices, mapped through its
    lookup table, checked against its image's size and the class count, then transformed.
    Evaluation keeps each label map at its own size (``sizes_vary``): batches hold one image."""

    classes: tuple[str, ...] = ()
    name = ""
    sizes_vary = True

    def __init__(self, pairs: list[tuple[Path, Path, np.ndarray | None]], transform: Callable | None) -> None:
        self.pairs = pairs
        self.num_classes = len(self.classes)
        self.ignore_index = IGNORE_INDEX
        self.transform = transform if transform is not None else SegmentationTransform(train=False)
        self.mean = getattr(self.transform, "mean", IMAGENET_MEAN)
        self.std = getattr(self.transform, "std", IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The image (8-bit RGB) and its label map (uint8 class indices, checked)."""
        image_path, label_path, lookup = self.pairs[index]
        image = open_rgb(image_path)
        label = _read_label(label_path, lookup)
        if label.shape != (image.height, image.width):
            raise BioattnError(f"label map {label_path} is {label.shape[1]}x{label.shape[0]} but its image "
                               f"{image_path} is {image.width}x{image.height}")
        _check_label_values(label, self.num_classes, str(label_path))
        return image, label

    def __getitem__(self, index: int):
        image, label = self.load(index)
        return self.transform(image, label)


def _find_root(root: str | Path, candidates: Sequence[str], marker: str, expected: str) -> Path:
    """The first of ``root/<candidate>`` holding the folder ``marker``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise BioattnError(f"data folder not found: {root}")
    for sub in candidates:
        base = root / sub if sub else root
        if (base / marker).is_dir():
            return base
    raise BioattnError(f"{root} does not have the expected layout: expected the folder {expected}")


def _files(folder: Path, suffix: str, pattern: str = "*") -> dict[str, Path]:
    return {p.name[: -len(suffix)]: p for p in folder.glob(pattern + suffix) if p.is_file()}


class VOCSegmentation(_LabelMapFiles):
    """PASCAL VOC 2012 segmentation (21 classes, background first; borders are ignored).

    ``root`` is ``VOCdevkit/VOC2012`` itself, ``VOCdevkit`` or a folder holding ``VOCdevkit``.
    ``train`` uses the augmented set (``ImageSets/Segmentation/train_aug.txt`` or
    ``trainaug.txt`` with ``SegmentationClassAug/``) when both are there, else ``train.txt``
    with ``SegmentationClass/``; ``val`` (and ``test``) use ``val.txt`` with
    ``SegmentationClass/``.
    """

    classes = VOC_CLASSES
    name = "VOC"

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        base = _find_root(root, ("", "VOC2012", "VOCdevkit/VOC2012"), "JPEGImages",
                          f"{Path(root)}/VOCdevkit/VOC2012/JPEGImages")
        split = _public_split(split, "VOC")
        lists = base / "ImageSets" / "Segmentation"
        list_file, label_dir = lists / f"{split}.txt", base / "SegmentationClass"
        if split == "train" and (base / "SegmentationClassAug").is_dir():
            for aug_name in ("train_aug.txt", "trainaug.txt"):
                if (lists / aug_name).is_file():
                    list_file, label_dir = lists / aug_name, base / "SegmentationClassAug"
                    break
        if not list_file.is_file():
            raise BioattnError(f"{base} does not have the expected layout: expected the split list {list_file}")
        if not label_dir.is_dir():
            raise BioattnError(f"{base} does not have the expected layout: expected the folder {label_dir}")
        names = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        image_dir = base / "JPEGImages"
        have_images = {p.name for p in image_dir.iterdir()}
        have_labels = {p.name for p in label_dir.iterdir()}
        no_image = [n for n in names if f"{n}.jpg" not in have_images]
        if no_image:
            raise BioattnError(f"VOC {split}: {len(no_image)} of {len(names)} images listed in {list_file.name} are "
                               f"missing from {image_dir} (first: {no_image[0]}.jpg)")
        no_label = [n for n in names if f"{n}.png" not in have_labels]
        if no_label:
            raise BioattnError(f"VOC {split}: {len(no_label)} of {len(names)} images have no label file in "
                               f"{label_dir} (first: {no_label[0]}.jpg without {no_label[0]}.png)")
        if not names:
            raise BioattnError(f"VOC {split}: {list_file} lists no images")
        self.root, self.split, self.list_file, self.label_dir = base, split, list_file, label_dir
        super().__init__([(image_dir / f"{n}.jpg", label_dir / f"{n}.png", None) for n in names], transform)


class ADE20KSegmentation(_LabelMapFiles):
    """ADE20K (SceneParsing, 150 classes). ``root`` is ``ADEChallengeData2016`` or a folder
    holding it; images ``images/{training,validation}/*.jpg``, labels
    ``annotations/{training,validation}/*.png``. Label 0 ("other") is ignored and every other
    label moves down by one (mmsegmentation's ``reduce_zero_label``)."""

    classes = ADE20K_CLASSES
    name = "ADE20K"

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        base = _find_root(root, ("", "ADEChallengeData2016"), "images",
                          f"{Path(root)}/ADEChallengeData2016/images")
        split = _public_split(split, "ADE20K")
        folder = {"train": "training", "val": "validation"}[split]
        image_dir, label_dir = base / "images" / folder, base / "annotations" / folder
        for needed in (image_dir, label_dir):
            if not needed.is_dir():
                raise BioattnError(f"{base} does not have the expected layout: expected the folder {needed}")
        images, labels = _files(image_dir, ".jpg"), _files(label_dir, ".png")
        keys = _check_pairs(images, labels, f"ADE20K {split}", label_dir)
        self.root, self.split = base, split
        super().__init__([(images[k], labels[k], _ADE20K_REDUCE_ZERO) for k in keys], transform)


class CityscapesSegmentation(_LabelMapFiles):
    """Cityscapes fine annotations (19 classes). ``root`` holds ``leftImg8bit/`` and
    ``gtFine/``; each image ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` takes its
    labels from ``gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png`` when that file exists,
    else from ``<name>_gtFine_labelIds.png`` mapped through the standard id -> train id table
    (:data:`CITYSCAPES_ID_TO_TRAIN_ID`; other ids are ignored)."""

    classes = CITYSCAPES_CLASSES
    name = "Cityscapes"

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        base = _find_root(root, ("", "cityscapes"), "leftImg8bit", f"{Path(root)}/leftImg8bit")
        split = _public_split(split, "Cityscapes")
        image_dir, label_dir = base / "leftImg8bit" / split, base / "gtFine" / split
        for needed in (image_dir, label_dir):
            if not needed.is_dir():
                raise BioattnError(f"{base} does not have the expected layout: expected the folder {needed}")
        images = {f"{p.parent.name}/{p.name[:-len('_leftImg8bit.png')]}": p
                  for p in image_dir.glob("*/*_leftImg8bit.png")}
        train_ids = {f"{p.parent.name}/{p.name[:-len('_gtFine_labelTrainIds.png')]}": p
                     for p in label_dir.glob("*/*_gtFine_labelTrainIds.png")}
        label_ids = {f"{p.parent.name}/{p.name[:-len('_gtFine_labelIds.png')]}": p
                     for p in label_dir.glob("*/*_gtFine_labelIds.png")}
        labels = {**{k: (p, CITYSCAPES_ID_TO_TRAIN_ID) for k, p in label_ids.items()},
                  **{k: (p, None) for k, p in train_ids.items()}}
        keys = _check_pairs(images, {k: p for k, (p, _) in labels.items()}, f"Cityscapes {split}", label_dir)
        self.root, self.split = base, split
        super().__init__([(images[k], *labels[k]) for k in keys], transform)


# ------------------------------------------------------------------------------------------
# the embedded shapes
# ------------------------------------------------------------------------------------------
def embedded_label_map(arrays: EmbeddedArrays, index: int) -> np.ndarray:
    """The per-pixel labels of embedded image ``index``: 0 background, object class ``c`` as
    ``c + 1``. Pair images are painted in the generator's order, the second object over the
    first, so that a pixel both masks cover takes the second object's class."""
    masks = np.asarray(arrays.masks[index])
    labels = np.asarray(arrays.labels[index])
    if not arrays.pair:
        masks, labels = masks[None], labels[None]
    out = np.zeros(masks.shape[-2:], np.uint8)
    for mask, cls in zip(masks, labels):
        out[mask] = int(cls) + 1
    return out


class EmbeddedSegmentation(Dataset):
    """(normalised image, label map) pairs of the embedded shapes (11 classes: background and
    :data:`~bioattn.data.embedded.CLASS_NAMES`), label maps from the objects' masks
    (:func:`embedded_label_map`). ``transform`` is a joint transform
    (:class:`SegmentationTransform`); by default the image is only normalised."""

    classes = EMBEDDED_SEGMENTATION_CLASSES

    def __init__(self, arrays: EmbeddedArrays, mean: Sequence[float] = EMBEDDED_MEAN,
                 std: Sequence[float] = EMBEDDED_STD, transform: Callable | None = None) -> None:
        self.arrays = arrays
        self.num_classes = len(self.classes)
        self.ignore_index = IGNORE_INDEX
        self.transform = transform if transform is not None else SegmentationTransform(
            train=False, mean=mean, std=std)
        self.mean = getattr(self.transform, "mean", tuple(mean))
        self.std = getattr(self.transform, "std", tuple(std))

    def __len__(self) -> int:
        return len(self.arrays)

    def targets_of(self, rows: np.ndarray) -> np.ndarray:
        """The label maps of items ``rows``, ``(len(rows), H, W)`` uint8."""
        return np.stack([self.label_map(int(i)) for i in rows])

    def label_map(self, index: int) -> np.ndarray:
        return embedded_label_map(self.arrays, index)

    def __getitem__(self, index: int):
        image = np.array(self.arrays.images[index], copy=True)
        return self.transform(image, self.label_map(index))


# ------------------------------------------------------------------------------------------
# specs
# ------------------------------------------------------------------------------------------
def build_segmentation_dataset(
    spec: str,
    split: str,
    crop: int | tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    train: bool = False,
    cache_dir: str | Path | None = None,
    scale_jitter: bool = True,
    hflip: float = 0.5,
    photometric: bool = True,
    cat_max_ratio: float | None = 0.75,
) -> Dataset:
    """The ``split`` of segmentation set ``spec`` (``voc:ROOT``, ``ade20k:ROOT``,
    ``cityscapes:ROOT``, ``embedded:seg[,options]``) with :class:`SegmentationTransform`.

    Training rescales around each set's base scale (mmsegmentation's: 2048x512 for VOC and
    ADE20K, 2048x1024 for Cityscapes, the image size for the embedded set) by a ratio in
    0.5-2 (1 without ``scale_jitter``), crops ``crop``, flips with probability ``hflip`` and
    applies the photometric distortion when ``photometric``. Evaluation rescales VOC, ADE20K
    and Cityscapes images to the base scale and keeps embedded images as they are; labels keep
    their size (so a loader of VOC or ADE20K images, which differ in size, takes one at a time).
    """
    if not isinstance(spec, str):
        raise BioattnError(f"a data spec is a string, got {spec!r}")
    head, sep, rest = spec.strip().partition(":")
    kind = head.lower()
    if is_embedded(spec.strip()):
        if not SEGMENTATION.holds(spec):
            raise BioattnError(f"'{spec}' is not a segmentation spec (add the option 'seg': embedded:seg,...)")
        emb = EmbeddedSpec.parse(spec)
        base_scale: tuple[int, int] = (emb.size, emb.size)
    elif sep and kind in SEGMENTATION.data_sets:
        if not rest.strip():
            raise BioattnError(f"'{spec}' needs a folder: {kind}:ROOT")
        base_scale = _BASE_SCALES[kind]
    else:
        raise BioattnError(f"not a segmentation data spec: '{spec}' (expected voc:ROOT, ade20k:ROOT, "
                           "cityscapes:ROOT or embedded:seg[,options])")
    if train:
        transform = SegmentationTransform(
            train=True, crop=crop, scale=base_scale, mean=mean, std=std,
            ratio_range=(0.5, 2.0) if scale_jitter else (1.0, 1.0), cat_max_ratio=cat_max_ratio,
            hflip=hflip, photometric=photometric)
    else:
        _pair(crop, "crop")
        transform = SegmentationTransform(train=False, scale=None if kind == "embedded" else base_scale,
                                          mean=mean, std=std)
    if kind == "embedded":
        return EmbeddedSegmentation(load_embedded(emb, split, cache_dir=cache_dir), mean=mean, std=std,
                                    transform=transform)
    sets = {"voc": VOCSegmentation, "ade20k": ADE20KSegmentation, "cityscapes": CityscapesSegmentation}
    return sets[kind](rest.strip(), split, transform=transform)


assert len(ADE20K_CLASSES) == 150 and len(CITYSCAPES_CLASSES) == 19 and len(VOC_CLASSES) == 21
