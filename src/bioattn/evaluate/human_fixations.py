"""Compare a model's saliency maps with human fixations (MIT1003 or SALICON-like data).

Each image is resized to the model's input size, the model's map is computed and upsampled to
the fixation map's size, and all metrics of :mod:`bioattn.attention.metrics` are computed. A
centre-bias baseline is scored the same way for reference: people look at the centre of images
more than anywhere else, so this fixed map scores well on most metrics, except the shuffled AUC,
whose negatives share the same bias.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..attention.maps import saliency
from ..attention.metrics import average_scores, resize_map, score_all
from ..data.human_fixations import FixationDataset, load_fixation_dataset
from ..data.subsets import spread_indices
from ..errors import BioattnError

#: Default width of the centre-bias Gaussian, as a fraction of the image's shorter side.
CENTRE_SIGMA = 0.25


def centre_bias_map(shape: tuple[int, int], sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """An isotropic Gaussian centred on an image of ``shape`` = (H, W), with peak 1.

    Its standard deviation is ``sigma`` times the shorter side, in pixels (the same in both
    directions, so a wide image gets a round blob, not an elliptic one).
    """
    if not sigma > 0:
        raise BioattnError(f"centre-bias sigma must be positive, got {sigma}")
    h, w = int(shape[0]), int(shape[1])
    s = sigma * min(h, w)
    ys = (np.arange(h, dtype=np.float64) - (h - 1) / 2.0) ** 2
    xs = (np.arange(w, dtype=np.float64) - (w - 1) / 2.0) ** 2
    return np.exp(-(ys[:, None] + xs[None, :]) / (2.0 * s * s))


def _size_pair(img_size) -> tuple[int, int]:
    if isinstance(img_size, int):
        size = (img_size, img_size)
    else:
        size = tuple(int(v) for v in img_size)
    if len(size) != 2 or min(size) < 1:
        raise BioattnError(f"img_size must be a positive int or (height, width), got {img_size}")
    return size


def _channel_stats(values: Sequence[float], what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() != 3:
        raise BioattnError(f"{what} must have 3 values (one per RGB channel), got {t.numel()}")
    if what == "std" and (t <= 0).any():
        raise BioattnError(f"std values must be positive, got {t.tolist()}")
    return t.view(1, 3, 1, 1)


def _model_input(image: Image.Image, size: tuple[int, int], mean, std) -> torch.Tensor:
    resized = image.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(resized, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    return (x - mean) / std


class _OtherFixations:
    """Fixations of other images of the data set, for the shuffled AUC's negatives.

    For image ``i``, ``n_other`` other images are picked with a generator seeded by
    ``(seed, i, 0)``; their fixations are placed at the same relative positions in image ``i``'s
    frame. Fixation positions are cached as fractions of each image's size.
    """

    def __init__(self, dataset: FixationDataset, n_other: int, seed: int):
        self.dataset = dataset
        self.n_other = n_other
        self.seed = seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def cache(self, j: int, points: np.ndarray) -> None:
        """Remember image ``j``'s fixations (from its already loaded point map)."""
        if j not in self._cache:
            ys, xs = np.nonzero(points)
            self._cache[j] = ((ys + 0.5) / points.shape[0], (xs + 0.5) / points.shape[1])

    def _relative(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        if j not in self._cache:
            self.cache(j, self.dataset[j].points)
        return self._cache[j]

    def map_for(self, i: int, shape: tuple[int, int]) -> np.ndarray | None:
        others = [j for j in range(len(self.dataset)) if j != i]
        if not others or self.n_other < 1:
            return None
        gen = np.random.default_rng([self.seed, i, 0])
        picked = gen.choice(others, size=min(self.n_other, len(others)), replace=False)
        out = np.zeros(shape, dtype=bool)
        h, w = shape
        for j in sorted(int(p) for p in picked):
            fy, fx = self._relative(j)
            rows = np.minimum((fy * h).astype(np.int64), h - 1)
            cols = np.minimum((fx * w).astype(np.int64), w - 1)
            out[rows, cols] = True
        return out


@torch.no_grad()
def evaluate_fixations(
    model: nn.Module,
    root,
    img_size,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    limit: int | None = None,
    map_fn: Callable | None = None,
    *,
    allow_unmatched: bool = False,
    centre_sigma: float = CENTRE_SIGMA,
    n_other: int = 10,
    n_splits: int = 100,
    step: float = 0.1,
    seed: int = 0,
    per_image: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Score ``model``'s saliency maps against the human fixations under ``root``.

    ``root`` is a fixation data set (see :func:`bioattn.data.human_fixations.load_fixation_dataset`).
    Each image is resized (bilinear, no crop) to ``img_size`` (an int or (height, width)),
    normalised with ``mean``/``std`` (per RGB channel, on [0, 1] pixels) and passed to
    ``map_fn(model, x, size=(height, width))``, which returns the map as (1, h, w) or (h, w);
    the default is :func:`bioattn.attention.maps.saliency`. The map is upsampled to the fixation
    map's size and scored with :func:`~bioattn.attention.metrics.score_all`, as is the centre
    baseline :func:`centre_bias_map` (``centre_sigma``). The shuffled AUC's negatives are the
    fixations of ``n_other`` other images of the data set. AUC-Borji and sAUC draw their
    negatives from a generator seeded by ``(seed, image index, 1)``, the same for model and
    baseline. The model should already be on ``device``; maps are computed under
    ``torch.no_grad()``. ``limit`` scores that many images, spread evenly over the data set
    (in stem order; as every suite chooses its images).

    Returns ``{"n_images", "n_unmatched", "model": {metric: mean}, "centre": {metric: mean},
    "model_n_nan": {metric: images skipped}, "centre_n_nan": {...}, "settings": {...}}`` plus
    ``"per_image"`` (a list of ``{"stem", "model", "centre"}``) when ``per_image`` is set. Means
    skip images where a metric is undefined (see :mod:`bioattn.attention.metrics`).
    """
    size = _size_pair(img_size)
    mean_t = _channel_stats(mean, "mean")
    std_t = _channel_stats(std, "std")
    if limit is not None and limit < 1:
        raise BioattnError(f"limit must be a positive number of images, got {limit}")
    if n_other < 0:
        raise BioattnError(f"n_other must be >= 0, got {n_other}")
    if map_fn is None:
        map_fn = saliency

    dataset = load_fixation_dataset(root, allow_unmatched=allow_unmatched)
    chosen = spread_indices(len(dataset), limit)
    n = len(chosen)
    others = _OtherFixations(dataset, n_other, seed)
    device = torch.device(device)
    model.eval()

    model_scores: list[dict[str, float]] = []
    centre_scores: list[dict[str, float]] = []
    rows: list[dict] = []
    for i in chosen:
        item = dataset[i]

        def scored(saliency_map: np.ndarray, points, density, other, index: int = i) -> dict[str, float]:
            # AUC-Borji's and sAUC's negatives: the same draw for the model and the baseline
            return score_all(saliency_map, points, density, other, n_splits=n_splits, step=step,
                             rng=np.random.default_rng([seed, index, 1]))

        try:
            points, density = item.load_maps()
            others.cache(i, points)
            x = _model_input(item.load_image(), size, mean_t, std_t).to(device)
            other = others.map_for(i, points.shape)
            scores_m = scored(resize_map(map_fn(model, x, size=size), points.shape), points, density, other)
            scores_c = scored(centre_bias_map(points.shape, centre_sigma), points, density, other)
        except BioattnError as exc:
            raise BioattnError(f"{item.stem}: {exc}") from None
        model_scores.append(scores_m)
        centre_scores.append(scores_c)
        if per_image:
            rows.append({"stem": item.stem, "model": scores_m, "centre": scores_c})
        if progress is not None:
            progress(1)

    summary_m = average_scores(model_scores)
    summary_c = average_scores(centre_scores)
    settings = dict(img_size=list(size), centre_sigma=centre_sigma, n_other=n_other, n_splits=n_splits, step=step,
                    seed=seed)
    result = {"n_images": n, "n_unmatched": dataset.n_unmatched, "model": summary_m["mean"],
              "centre": summary_c["mean"], "model_n_nan": summary_m["n_nan"], "centre_n_nan": summary_c["n_nan"],
              "settings": settings}
    if per_image:
        result["per_image"] = rows
    return result
