"""One generated split as numpy arrays, and the dtype and shape of each array."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import CLASS_NAMES, EmbeddedSpec


@dataclass
class EmbeddedArrays:
    """One split as numpy arrays (memory-mapped when loaded from the cache).

    ``images`` uint8 (N, H, W, 3); ``labels`` int64 (N,), (N, 2) for pairs or (N, 3) for multi;
    ``masks`` bool (N, H, W), (N, 2, H, W) or (N, 3, H, W); ``boxes`` int64 (N, 4), (N, 2, 4) or
    (N, 3, 4) as pixel ``x0, y0, x1, y1`` with exclusive ends (the mask lies in
    ``mask[y0:y1, x0:x1]``); ``n_distractors`` int64 (N,). Multi only: ``n_objects`` int64 (N,),
    1 to 3; the objects are the first ``n_objects`` of each row, and the absent ones have label
    -1, an empty mask and the box ``0, 0, 0, 0``.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    n_distractors: np.ndarray
    n_objects: np.ndarray | None = None
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def pair(self) -> bool:
        """Whether every image holds two objects."""
        return self.labels.ndim == 2 and self.n_objects is None

    @property
    def multi(self) -> bool:
        """Whether images hold one to three objects."""
        return self.n_objects is not None

    @property
    def targets(self) -> np.ndarray:
        """Classification target per image: the (first) object's class."""
        return self.labels[:, 0] if self.labels.ndim == 2 else self.labels

    def multi_hot(self) -> np.ndarray:
        """float32 (N, K): 1 for every class shown in the image (multi-label targets)."""
        labels = self.labels if self.labels.ndim == 2 else self.labels[:, None]
        out = np.zeros((len(labels), len(self.class_names)), np.float32)
        rows, slots = np.nonzero(labels >= 0)
        out[rows, labels[rows, slots]] = 1
        return out


def field_layout(spec: EmbeddedSpec) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """dtype and per-image shape of each array."""
    s = spec.size
    obj = (spec.n_objects,) if spec.n_objects > 1 else ()
    layout = {
        "images": (np.dtype(np.uint8), (s, s, 3)),
        "labels": (np.dtype(np.int64), obj),
        "masks": (np.dtype(bool), (*obj, s, s)),
        "boxes": (np.dtype(np.int64), (*obj, 4)),
        "n_distractors": (np.dtype(np.int64), ()),
    }
    if spec.multi:
        layout["n_objects"] = (np.dtype(np.int64), ())
    return layout


def empty_arrays(spec: EmbeddedSpec, n: int) -> dict[str, np.ndarray]:
    return {field: np.zeros((n, *shape), dtype) for field, (dtype, shape) in field_layout(spec).items()}
