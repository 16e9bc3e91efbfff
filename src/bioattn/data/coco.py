"""Multi-label classification data: COCO 2017 and the embedded set's multi-object variant.

:class:`COCOMultiLabel` reads COCO 2017 in its standard layout::

    ROOT/train2017/*.jpg    ROOT/annotations/instances_train2017.json
    ROOT/val2017/*.jpg      ROOT/annotations/instances_val2017.json

with pycocotools. The target of an image is multi-hot over the file's categories (the 80 COCO
classes), in order of category id (index 0 is the smallest id, ``person``); class names come
from the file. Every annotation counts, crowd regions included. Images without any annotation
(about 1% of COCO) are kept, with an all-zero target, as the multi-label literature evaluates
them (``keep_empty=False`` drops them). Each image's objects (class, box, area, crowd flag) are
kept too (:meth:`COCOMultiLabel.objects`, :meth:`COCOMultiLabel.object_masks`), for the share
of fixations landing on objects (:func:`bioattn.evaluate.multilabel.fixations_on_objects`).

:func:`bioattn.data.build_dataset` builds either from a data spec: ``coco:ROOT`` (``test``
reads ``val``, as COCO's test images have no public annotations), or an embedded spec with
``multi`` (``embedded:multi[,options]``, see :class:`bioattn.data.embedded.EmbeddedSpec`), whose
images hold one to three objects of distinct classes.

Augmentation must not remove objects, since a cropped-away object leaves a wrong positive in
the target: COCO training images are randomly resized and cropped keeping at least half of the
image's area (``RandomResizedCrop`` scale (0.5, 1)) rather than the ImageNet recipe's 8%;
without ``random_resized_crop`` they are resized whole like evaluation images, with the
augmentation's flip. Evaluation images are resized whole to a square (no centre crop, which
would cut off objects at the edges). The embedded images are never cropped (flip, colour jitter
and RandAugment only, as for classification).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import BioattnError
from ..images import open_rgb
from .transforms import Augmentation

__all__ = ["COCO_SPLITS", "COCOMultiLabel", "coco_root", "coco_transform"]

COCO_SPLITS: tuple[str, ...] = ("train", "val")
_TRAIN_CROP_SCALE = (0.5, 1.0)   # share of the image area a training crop keeps


def _read_annotations(path: Path):
    """pycocotools' index of an annotation file (its progress lines silenced), or a one-line
    error naming the file."""
    # deferred: pycocotools is needed by COCO data only
    from pycocotools.coco import COCO

    if not path.is_file():
        raise BioattnError(f"COCO annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except json.JSONDecodeError as exc:
        raise BioattnError(f"COCO annotation file {path} is not valid JSON: {exc}".splitlines()[0]) from None
    except OSError as exc:
        raise BioattnError(f"cannot read COCO annotation file {path}: {exc.strerror or exc}") from None
    except (AssertionError, KeyError, TypeError, AttributeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else "not a COCO annotation object"
        raise BioattnError(f"COCO annotation file {path} is malformed ({detail})") from None


class COCOMultiLabel(Dataset):
    """COCO 2017 ``split`` (``train`` or ``val``) under ``root`` as (image, multi-hot target)
    pairs: the image after ``transform`` (a PIL RGB image without one), the target a float
    tensor (K,) with 1 for every category annotated in the image.

    ``classes`` are the category names in order of category id, ``label_matrix`` (N, K) every
    target, ``files`` the image paths. The annotation file must match the image folder: an
    image it lists that the folder lacks is an error.
    """

    multilabel = True

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None,
                 keep_empty: bool = True) -> None:
        if split not in COCO_SPLITS:
            raise BioattnError(f"unknown COCO split '{split}' (choose from {', '.join(COCO_SPLITS)})")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BioattnError(f"COCO folder not found: {self.root}")
        self.split = split
        self.transform = transform
        self.annotation_file = self.root / "annotations" / f"instances_{split}2017.json"
        self.image_dir = self.root / f"{split}2017"
        self.coco = _read_annotations(self.annotation_file)
        try:
            self._index(keep_empty)
        except (KeyError, TypeError) as exc:
            what = f"an entry lacks {exc}" if isinstance(exc, KeyError) else "an entry of the wrong type"
            raise BioattnError(f"COCO annotation file {self.annotation_file} is malformed ({what})") from None

    def _index(self, keep_empty: bool) -> None:
        """Classes, images and targets from the annotation index."""
        coco = self.coco
        categories = sorted(coco.cats.values(), key=lambda c: c["id"])
        if not categories:
            raise BioattnError(f"COCO annotation file {self.annotation_file} lists no categories")
        self.category_ids = [int(c["id"]) for c in categories]
        self.classes = [str(c.get("name", c["id"])) for c in categories]
        self.num_classes = len(self.classes)
        index_of = {cid: i for i, cid in enumerate(self.category_ids)}

        images = sorted(coco.imgs.values(), key=lambda im: im["id"])
        if not images:
            raise BioattnError(f"COCO annotation file {self.annotation_file} lists no images")
        unknown = [a for a in coco.anns.values() if a["category_id"] not in index_of]
        if unknown:
            raise BioattnError(f"COCO annotation file {self.annotation_file}: {len(unknown)} annotation(s) "
                               f"of unlisted categories (first: category {unknown[0]['category_id']})")
        if not keep_empty:
            images = [im for im in images if coco.imgToAnns.get(im["id"])]
        self._check_folder([im["file_name"] for im in images])

        self.image_ids = [int(im["id"]) for im in images]
        self.files = [self.image_dir / im["file_name"] for im in images]
        self.image_sizes = np.array([(im["width"], im["height"]) for im in images], np.int64)   # (N, 2) w, h
        self.label_matrix = np.zeros((len(images), self.num_classes), np.float32)
        self._annotations = [coco.imgToAnns.get(image_id, []) for image_id in self.image_ids]
        for row, anns in enumerate(self._annotations):
            for ann in anns:
                self.label_matrix[row, index_of[ann["category_id"]]] = 1
        self._index_of = index_of

    def _check_folder(self, names: list[str]) -> None:
        """Every listed image must be in the image folder."""
        if not self.image_dir.is_dir():
            raise BioattnError(f"COCO image folder not found: {self.image_dir} "
                               f"(expected next to {self.annotation_file.parent})")
        with os.scandir(self.image_dir) as entries:
            present = {entry.name for entry in entries}
        missing = [name for name in names if name not in present]
        if len(missing) == len(names):
            raise BioattnError(f"{self.image_dir} holds none of the {len(names)} images listed in "
                               f"{self.annotation_file} (first: {names[0]}): annotations of another split?")
        if missing:
            raise BioattnError(f"{len(missing)} of the {len(names)} images listed in {self.annotation_file} "
                               f"are missing from {self.image_dir} (first: {missing[0]})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        img = open_rgb(self.files[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, torch.from_numpy(self.label_matrix[index].copy())

    def objects(self, index: int) -> dict[str, np.ndarray]:
        """The annotated objects of image ``index``: ``labels`` (M,) class indices, ``boxes``
        (M, 4) float ``x0, y0, x1, y1`` in pixels of the original image, ``areas`` (M,) the
        segmented areas in pixels, ``area_fractions`` (M,) the same as shares of the image,
        ``iscrowd`` (M,) bool; and ``size`` (width, height)."""
        anns = self._annotations[index]
        width, height = (int(v) for v in self.image_sizes[index])
        boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        areas = np.array([a.get("area", 0.0) for a in anns], np.float64)
        return {
            "labels": np.array([self._index_of[a["category_id"]] for a in anns], np.int64),
            "boxes": boxes,
            "areas": areas,
            "area_fractions": areas / (width * height),
            "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
            "size": np.array([width, height], np.int64),
        }

    def object_masks(self, index: int) -> np.ndarray:
        """Bool (M, H, W): each annotated object's mask over the original image, in the order
        of :meth:`objects`."""
        anns = self._annotations[index]
        width, height = (int(v) for v in self.image_sizes[index])
        if not anns:
            return np.zeros((0, height, width), bool)
        with warnings.catch_warnings():
            # pycocotools' decoder predates numpy 2's copy keyword; harmless
            warnings.filterwarnings("ignore", message=".*__array__ implementation doesn't accept a copy",
                                    category=DeprecationWarning)
            return np.stack([self.coco.annToMask(a).astype(bool) for a in anns])


def coco_transform(size: int, mean, std, train: bool, aug: Augmentation | None) -> Callable:
    """timm's transforms of COCO images: training crops that keep at least half the image, or
    the whole image resized to ``size`` x ``size`` (see the module's notes)."""
    # deferred: timm and torchvision load in seconds; reading the embedded data needs neither
    from timm.data import create_transform
    from torchvision.transforms import v2

    whole = create_transform(size, is_training=False, interpolation="bicubic", crop_pct=1.0,
                             crop_mode="squash", mean=tuple(mean), std=tuple(std))
    if not train:
        return whole
    a = aug or Augmentation()
    if not a.random_resized_crop and not a.auto_augment:
        return v2.Compose([v2.RandomHorizontalFlip(a.hflip), whole]) if a.hflip > 0 else whole
    return create_transform(
        size, is_training=True, scale=_TRAIN_CROP_SCALE, hflip=a.hflip, color_jitter=a.color_jitter,
        auto_augment=a.auto_augment, interpolation=a.interpolation, re_prob=a.re_prob,
        re_mode=a.re_mode, re_count=a.re_count, mean=tuple(mean), std=tuple(std),
    )


def coco_root(spec: str) -> str:
    """The COCO folder a ``coco:ROOT`` spec names."""
    root = spec.strip()[len("coco:"):].strip()
    if not root:
        raise BioattnError("'coco:' needs the COCO folder: coco:ROOT (holding train2017/, val2017/, annotations/)")
    return root
