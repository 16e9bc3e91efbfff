"""The image transforms of the data sets: the training augmentation settings
(:class:`Augmentation`), the embedded images' transform (uint8 tensors), timm's transform of
image files, and a wrapper that passes a data set's images through one more step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset


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


def _posterize_keeping_no_bits_too(img, bits_to_keep, **kwargs):
    """timm's posterize, also at 0 bits kept (a black image), which Pillow 13 refuses."""
    from PIL import Image
    from timm.data.auto_augment import posterize

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def keep_posterize_at_zero_bits(transform: Callable) -> Callable:
    """``transform`` with every posterize of its timm RandAugment (found inside a Compose too)
    routed through :func:`_posterize_keeping_no_bits_too`. Its increasing posterize keeps 0 bits
    at the top magnitude, which the magnitude noise of ``mstd`` (the DeiT recipe's
    ``rand-m9-mstd0.5-inc1``) reaches in about 2% of draws, and Pillow 13's posterize refuses 0
    bits: training would stop on a random batch. Only this transform's operations change; timm's
    table of operations stays as it is for everyone else in the process."""
    from timm.data.auto_augment import RandAugment

    stack = [transform]
    while stack:
        t = stack.pop()
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name in POSTERIZE_OPS:
                    op.aug_fn = _posterize_keeping_no_bits_too
        stack.extend(getattr(t, "transforms", None) or ())
    return transform


def rand_augment(policy: str, size: int) -> Callable:
    """timm's RandAugment of PIL images for ``policy`` (e.g. ``rand-m9-mstd0.5-inc1``) at image
    side ``size``."""
    from timm.data.auto_augment import rand_augment_transform

    return keep_posterize_at_zero_bits(rand_augment_transform(policy, {"translate_const": int(size * 0.45)}))


class MapImages(Dataset):
    """A data set whose images pass through ``fn`` after the base set's own transform."""

    def __init__(self, base: Dataset, fn: Callable) -> None:
        self.base, self.fn = base, fn
        for attr in ("classes", "num_classes", "arrays", "label_matrix", "multilabel"):
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
            ops += [v2.ToPILImage(), rand_augment(aug.auto_augment, size), v2.PILToTensor()]
    if size != data_size and not cropped:
        ops.append(v2.Resize((size, size), antialias=True))
    return v2.Compose(ops) if ops else None


def folder_transform(size: int, mean, std, train: bool, aug: Augmentation | None,
                      crop_pct: float | None) -> Callable:
    """timm's transform of image files: the training augmentation ``aug`` when ``train``, else
    a resize and centre crop at ``crop_pct``."""
    # deferred: timm and torchvision load in seconds; reading the embedded data needs neither
    from timm.data import create_transform

    if train:
        a = aug or Augmentation()
        return keep_posterize_at_zero_bits(create_transform(
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
        ))
    return create_transform(
        size, is_training=False, interpolation="bicubic", mean=tuple(mean), std=tuple(std),
        crop_pct=crop_pct,
    )
