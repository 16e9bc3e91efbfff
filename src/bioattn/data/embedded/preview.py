"""A PNG grid of generated images with their objects outlined."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ...errors import BioattnError
from ...fileio import atomic_write
from .generate import generate_split
from .spec import CLASS_NAMES, EmbeddedSpec, check_split

_OUTLINES = ("#00e5ff", "#ff2bd6", "#ffd000")


def preview(spec: EmbeddedSpec, out_png: str | os.PathLike, n: int = 16, split: str = "val") -> Path:
    """Write a PNG grid of the first ``n`` images of a split, object outlines drawn on them and
    class names as titles (several objects: first cyan, second magenta, third yellow)."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_split(split)
    if n < 1:
        raise BioattnError(f"n must be at least 1, got {n}")
    n = min(n, spec.split_size(split))
    arrays = generate_split(spec, split, 0, n)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.9 * cols, 2.05 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(arrays.images[i], interpolation="nearest")
        several = arrays.labels.ndim == 2
        masks = arrays.masks[i] if several else arrays.masks[i][None]
        labels = arrays.labels[i] if several else arrays.labels[i][None]
        for j, (mask, label) in enumerate(zip(masks, labels)):
            if label >= 0:
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[_OUTLINES[j]], linewidths=1.0)
        ax.set_title(" + ".join(CLASS_NAMES[c] for c in labels if c >= 0), fontsize=8)
    outlines = {2: "first cyan, second magenta", 3: "first cyan, second magenta, third yellow"}
    title = f"{spec} ({split})" + (f"   outlines: {outlines[spec.n_objects]}" if spec.n_objects > 1 else "")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out_png)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    return out
