"""The embedded data as torch data sets: one class per image, or multi-hot targets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import BioattnError
from ..stats import EMBEDDED_MEAN, EMBEDDED_STD
from .arrays import EmbeddedArrays


class EmbeddedDataset(Dataset):
    """(normalised float image CHW, class) pairs from :class:`EmbeddedArrays`.

    ``transform``, if given, receives the uint8 CHW tensor (e.g. a torchvision v2 random flip)
    and returns a uint8 tensor or a float tensor in [0, 1]; normalisation by ``mean``/``std``
    (per channel, [0, 1] units) comes after it. For pairs the target is the first object's
    class, or both objects' classes ``(2,)`` after :meth:`keep_all_labels`; ``dataset.arrays``
    keeps everything.
    """

    def __init__(self, arrays: EmbeddedArrays, mean: Sequence[float] = EMBEDDED_MEAN,
                 std: Sequence[float] = EMBEDDED_STD, transform: Callable | None = None):
        if len(mean) != 3 or len(std) != 3:
            raise BioattnError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise BioattnError(f"std must be positive, got {tuple(std)}")
        self.arrays = arrays
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.classes = list(arrays.class_names)
        self.num_classes = len(self.classes)
        self.targets = np.asarray(arrays.targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def keep_all_labels(self) -> EmbeddedDataset:
        """Make every object's class the target of a two-object image, ``(2,)`` int64 (the
        first object's first), for a model whose training draws one of them as its prompt
        (:class:`~bioattn.models.absvit.PromptedAbSViT`); one-object images keep their class.
        Returns the data set itself."""
        if self.arrays.multi:
            raise BioattnError("every object's class as the target suits one- and two-object images, "
                               "not the multi-object variant")
        self.targets = np.asarray(self.arrays.labels, dtype=np.int64)
        return self

    def targets_of(self, rows: np.ndarray) -> np.ndarray:
        """The targets of items ``rows`` as one array (class indices, ``(len(rows), 2)`` for
        both objects' classes)."""
        return self.targets[rows]

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.array(self.arrays.images[index], copy=True)).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        target = self.targets[index]
        return (x - self.mean) / self.std, int(target) if target.ndim == 0 else torch.from_numpy(target.copy())


class EmbeddedMultiLabel(EmbeddedDataset):
    """(normalised float image CHW, multi-hot float target (K,)) pairs: the target is 1 for the
    class of every object in the image (multi-label classification; for the multi variant,
    ``embedded:multi``, one to three distinct classes). Images, ``transform``, ``mean`` and
    ``std`` are as in :class:`EmbeddedDataset`; ``label_matrix`` holds every target (N, K)."""

    multilabel = True

    def __init__(self, arrays: EmbeddedArrays, mean: Sequence[float] = EMBEDDED_MEAN,
                 std: Sequence[float] = EMBEDDED_STD, transform: Callable | None = None):
        super().__init__(arrays, mean=mean, std=std, transform=transform)
        self.label_matrix = arrays.multi_hot()

    def targets_of(self, rows: np.ndarray) -> np.ndarray:
        """The multi-hot targets of items ``rows``, ``(len(rows), K)``."""
        return self.label_matrix[rows]

    def __getitem__(self, index: int):
        x, _ = super().__getitem__(index)
        return x, torch.from_numpy(self.label_matrix[index].copy())
