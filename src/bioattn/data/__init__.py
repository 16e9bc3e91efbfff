"""Data sets: the embedded cluttered-shapes set and ImageNet-style folders.

``build_dataset(spec, split, ...)`` is the one entry point. ``spec`` is ``embedded``,
``embedded:pair`` or ``embedded:<options>`` (see :class:`bioattn.data.embedded.EmbeddedSpec`),
a domain spec ``domains:train=...,root=...`` (one leave-one-domain-out split, see
:mod:`bioattn.data.domains`), or the path of a folder holding ``train/`` and ``val/`` class
folders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import BioattnError
from .domains import build_domain_dataset, is_domain_spec
from .embedded import EmbeddedDataset, EmbeddedSpec, is_embedded, load_embedded
from .folders import ImageFolderDataset
from .stats import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Augmentation:
    """Training augmentation settings (the DeiT recipe's knobs)."""

    auto_augment: str | None = None
    color_jitter: float = 0.0
    re_prob: float = 0.0
    re_mode: str = "pixel"
    re_count: int = 1
    hflip: float = 0.0
    random_resized_crop: bool = True
    interpolation: str = "bicubic"
    # False: image folders give 8-bit (uint8) image tensors, left to the batch's consumer to
    # normalise and randomly erase on its device (timm's PrefetchLoader)
    normalize: bool = True


class _Mapped(Dataset):
    """A data set whose images pass through ``fn`` after the base set's own transform."""

    def __init__(self, base: Dataset, fn: Callable) -> None:
        self.base, self.fn = base, fn
        for attr in ("classes", "num_classes", "arrays"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        img, target = self.base[index]
        return self.fn(img), target


def embedded_uint8_transform(size: int, data_size: int, train: bool, aug: Augmentation | None):
    """Transform applied to the embedded images as uint8 CHW tensors, before normalising: for
    training, as ``aug`` says, random resized crop (to ``size``), horizontal flip, colour jitter
    and RandAugment; then resizing from ``data_size`` to ``size`` where the crop did not."""
    # deferred: timm and torchvision load in seconds; reading the embedded data needs neither
    from torchvision.transforms import v2

    ops: list[Callable] = []
    cropped = train and aug is not None and aug.random_resized_crop
    if cropped:
        ops.append(v2.RandomResizedCrop((size, size), antialias=True))
    if train and aug is not None:
        if aug.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(aug.hflip))
        if aug.color_jitter > 0:
            cj = aug.color_jitter
            ops.append(v2.ColorJitter(cj, cj, cj))
        if aug.auto_augment:
            # deferred: timm and torchvision load in seconds; reading the embedded data needs neither
            from timm.data.auto_augment import rand_augment_transform

            ra = rand_augment_transform(aug.auto_augment, {"translate_const": int(size * 0.45)})
            ops += [v2.ToPILImage(), ra, v2.PILToTensor()]
    if size != data_size and not cropped:
        ops.append(v2.Resize((size, size), antialias=True))
    return v2.Compose(ops) if ops else None


def build_dataset(
    spec: str,
    split: str,
    img_size: int | None = None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    train: bool = False,
    aug: Augmentation | None = None,
    skip_bad_images: bool = False,
    crop_pct: float | None = None,
    classes: list[str] | None = None,
    cache_dir: str | Path | None = None,
    subset: list[str] | None = None,
) -> Dataset:
    """The ``split`` (``train``/``val``/``test``) of data set ``spec`` as normalised tensors.

    ``train=True`` applies the training augmentation ``aug``. The result has ``classes`` and
    ``num_classes``; embedded sets also expose their raw ``arrays`` (images, masks, boxes).
    ``classes`` fixes the label order of a folder's classes; ``subset`` (a class list, see
    :func:`bioattn.data.folders.read_class_list`) restricts a folder to those classes.
    """
    if subset is not None and (is_embedded(spec) or is_domain_spec(spec)):
        raise BioattnError(f"a class subset selects class folders of an image folder; '{spec}' is not one")
    if is_embedded(spec):
        emb = EmbeddedSpec.parse(spec)
        arrays = load_embedded(emb, split, cache_dir=cache_dir)
        size = img_size or emb.size
        transform = embedded_uint8_transform(size, emb.size, train, aug)
        ds: Dataset = EmbeddedDataset(arrays, mean=mean, std=std, transform=transform)
        ds.classes = list(arrays.class_names)
        ds.num_classes = len(ds.classes)
        if train and aug is not None and aug.re_prob > 0:
            # deferred: timm and torchvision load in seconds; reading the embedded data needs neither
            from timm.data.random_erasing import RandomErasing

            ds = _Mapped(ds, RandomErasing(aug.re_prob, mode=aug.re_mode, max_count=aug.re_count, device="cpu"))
        return ds

    if is_domain_spec(spec):
        def one_embedded_domain(domain_spec: str, part_split: str) -> Dataset:
            return build_dataset(domain_spec, part_split, img_size, mean, std, train=train, aug=aug,
                                 skip_bad_images=skip_bad_images, cache_dir=cache_dir)

        # domain images are resized whole (crop 1.0), not centre-cropped at the model's crop_pct
        return build_domain_dataset(
            spec, split, transform=_folder_transform(img_size or 224, mean, std, train, aug, 1.0),
            embedded=one_embedded_domain, classes=classes, skip_bad_images=skip_bad_images)

    root = Path(spec)
    if not root.exists():
        raise BioattnError(f"data path not found: {root}")
    split_dir = root / split
    if not split_dir.is_dir():
        if split == "test" and (root / "val").is_dir():
            split_dir = root / "val"
        else:
            raise BioattnError(f"{root} has no '{split}' folder (expected {root}/train and {root}/val)")
    transform = _folder_transform(img_size or 224, mean, std, train, aug, crop_pct)
    return ImageFolderDataset(split_dir, transform=transform, classes=classes, skip_bad_images=skip_bad_images,
                              subset=subset)


def _folder_transform(size: int, mean, std, train: bool, aug: Augmentation | None,
                      crop_pct: float | None) -> Callable:
    """timm's transform of image files: the training augmentation ``aug`` when ``train``, else
    a resize and centre crop at ``crop_pct``."""
    # deferred: timm and torchvision load in seconds; reading the embedded data needs neither
    from timm.data import create_transform

    if train:
        a = aug or Augmentation()
        return create_transform(
            size,
            is_training=True,
            no_aug=not a.random_resized_crop and not a.auto_augment,
            hflip=a.hflip,
            color_jitter=a.color_jitter,
            auto_augment=a.auto_augment,
            interpolation=a.interpolation,
            re_prob=a.re_prob,
            re_mode=a.re_mode,
            re_count=a.re_count,
            mean=tuple(mean),
            std=tuple(std),
            use_prefetcher=not a.normalize,
        )
    return create_transform(
        size, is_training=False, interpolation="bicubic", mean=tuple(mean), std=tuple(std),
        crop_pct=crop_pct,
    )
