"""Data sets: the embedded cluttered-shapes set, ImageNet-style folders and multi-label sets.

``build_dataset(spec, split, ...)`` is the one entry point of classification data, one class
or several per image. ``spec`` is ``embedded``, ``embedded:pair`` or ``embedded:<options>``
(see :class:`bioattn.data.embedded.EmbeddedSpec`), a domain spec ``domains:train=...,root=...``
(one leave-one-domain-out split, see :mod:`bioattn.data.domains`), the path of a folder holding
``train/`` and ``val/`` class folders, or a multi-label spec, ``coco:ROOT`` or
``embedded:multi[,options]`` (:mod:`bioattn.data.coco`). Segmentation data, with its own
transforms, comes from :func:`bioattn.data.segmentation.build_segmentation_dataset`.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..errors import BioattnError
from ..tasks.spec import MULTILABEL
from .coco import COCOMultiLabel, coco_root, coco_transform
from .domains import DomainSpec, build_domain_dataset, is_domain_spec
from .embedded import EmbeddedDataset, EmbeddedMultiLabel, EmbeddedSpec, is_embedded, load_embedded
from .folders import ImageFolderDataset
from .stats import IMAGENET_MEAN, IMAGENET_STD
from .transforms import Augmentation, MapImages, embedded_uint8_transform, folder_transform


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
    :func:`bioattn.data.folders.read_class_list`) restricts a folder to those classes;
    ``crop_pct`` is the centre crop of a folder's evaluation images. A multi-label set gives
    multi-hot float targets (K,) and has ``label_matrix`` (N, K) and ``multilabel = True``.
    """
    multilabel = MULTILABEL.holds(spec)
    if subset is not None and (is_embedded(spec) or is_domain_spec(spec) or multilabel):
        raise BioattnError(f"a class subset selects class folders of an image folder; '{spec}' is not one")
    if multilabel and classes is not None:
        raise BioattnError(f"the classes of multi-label data '{spec}' come with its annotations: leave classes unset")
    if is_embedded(spec):
        ds = _embedded_dataset(spec, split, img_size, mean, std, train, aug, cache_dir, multilabel)
        return _with_random_erasing(ds, aug if train else None)
    if multilabel:
        # the whole image resized (no centre crop, which could cut objects off)
        root = coco_root(spec)
        transform = coco_transform(_folder_size(img_size, spec), mean, std, train, aug)
        return COCOMultiLabel(root, "val" if split == "test" else split, transform=transform)

    if is_domain_spec(spec):
        def one_embedded_domain(domain_spec: str, part_split: str) -> Dataset:
            return build_dataset(domain_spec, part_split, img_size, mean, std, train=train, aug=aug,
                                 skip_bad_images=skip_bad_images, cache_dir=cache_dir)

        # domain images are resized whole (crop 1.0), not centre-cropped at the model's crop_pct
        files = not is_embedded(DomainSpec.parse(spec).root)
        return build_domain_dataset(
            spec, split, transform=folder_transform(_folder_size(img_size, spec), mean, std, train, aug, 1.0)
            if files else None,
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
    transform = folder_transform(_folder_size(img_size, spec), mean, std, train, aug, crop_pct)
    return ImageFolderDataset(split_dir, transform=transform, classes=classes, skip_bad_images=skip_bad_images,
                              subset=subset)


def _embedded_dataset(spec: str, split: str, img_size: int | None, mean, std, train: bool,
                      aug: Augmentation | None, cache_dir, multilabel: bool) -> EmbeddedDataset:
    emb = EmbeddedSpec.parse(spec)
    arrays = load_embedded(emb, split, cache_dir=cache_dir)
    transform = embedded_uint8_transform(img_size or emb.size, emb.size, train, aug)
    cls = EmbeddedMultiLabel if multilabel else EmbeddedDataset
    return cls(arrays, mean=mean, std=std, transform=transform)


def _with_random_erasing(ds: Dataset, aug: Augmentation | None) -> Dataset:
    """``ds`` with timm's random erasing after its transform, where ``aug`` asks for it."""
    if aug is None or aug.re_prob <= 0:
        return ds
    # deferred: timm and torchvision load in seconds; reading the embedded data needs neither
    from timm.data.random_erasing import RandomErasing

    return MapImages(ds, RandomErasing(aug.re_prob, mode=aug.re_mode, max_count=aug.re_count, device="cpu"))


def _folder_size(img_size: int | None, spec: str) -> int:
    """The size image files are read at: the model's input size, which the caller resolves
    (:class:`bioattn.models.inputs.InputConfig`); files have no size of their own."""
    if img_size is None:
        raise BioattnError(f"data set '{spec}' is read from image files: give the model's input size (img_size)")
    return int(img_size)
