"""The 15 ImageNet-C corruptions applied on the fly (``imagecorruptions``) to any data set.

Data sets give normalised tensors; each batch is turned back into uint8 pixels, corrupted image
by image (in a process pool with ``workers > 0``), normalised again and classified. Every image
has its own seed per corruption and severity, so results do not depend on the batch size or the
number of workers. A baseline model, when given, sees exactly the same corrupted images, and the
result then includes the corruption errors normalised by the baseline's (mCE) and the relative
mCE (degradation from clean, normalised by the baseline's degradation).

The corruption functions need images of at least 32x32 pixels: smaller images are upscaled
(bicubic) so their short side is 32, corrupted, and resized back.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from ..data.pixels import Pixels
from ..errors import BioattnError
from ..protocol import forward_readouts
from .mce import CORRUPTIONS, check_corruption_names, check_severities, mce, relative_mce

MIN_SIDE = 32
_SEEDED_BY_ARGUMENT = ("glass_blur", "impulse_noise")


def image_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """The seed of image ``index`` under one corruption and severity."""
    ci = CORRUPTIONS.index(corruption) if corruption in CORRUPTIONS else len(CORRUPTIONS)
    return int(np.random.SeedSequence([seed, ci, severity, index]).generate_state(1)[0])


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """One uint8 ``(H, W, 3)`` image corrupted by ``corruption`` at ``severity`` (1..5)."""
    # deferred: imagecorruptions (and its scikit-image/scipy stack) is only needed for corruptions
    from imagecorruptions import corrupt

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BioattnError(f"corruptions need uint8 (H, W, 3) images, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    small = min(h, w) < MIN_SIDE
    work = image
    if small:
        scale = MIN_SIDE / min(h, w)
        size = (max(MIN_SIDE, math.ceil(w * scale)), max(MIN_SIDE, math.ceil(h * scale)))
        work = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
    np.random.seed(seed)
    kwargs = {"seed": seed} if corruption in _SEEDED_BY_ARGUMENT else {}
    out = corrupt(np.ascontiguousarray(work), corruption_name=corruption, severity=severity, **kwargs)
    if out.shape[:2] != work.shape[:2]:  # a few corruptions may round the size; restore it
        out = np.asarray(Image.fromarray(out).resize((work.shape[1], work.shape[0]), Image.BICUBIC))
    if small:
        out = np.asarray(Image.fromarray(out).resize((w, h), Image.BICUBIC))
    return np.ascontiguousarray(out, dtype=np.uint8)


def _corrupt_chunk(images: np.ndarray, corruption: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
    return np.stack([corrupt_image(img, corruption, severity, s) for img, s in zip(images, seeds)])


def _init_worker() -> None:
    try:
        # deferred: OpenCV is only needed for corruptions
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover  (cv2 is a dependency of imagecorruptions)
        pass


class _Done:
    """A finished result with the ``Future.result`` interface."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


def warm_up(corruptions: Sequence[str]) -> None:
    """Compile the just-in-time parts of the corruption library (glass blur's pixel shuffle)
    once in this process, so that forked workers inherit the compiled code."""
    if "glass_blur" in corruptions:
        corrupt_image(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8), "glass_blur", 1, seed=0)


class Corrupter:
    """Corrupts batches of uint8 images, in ``workers`` processes (0: in this process).

    ``corruptions`` lists the corruptions that will be used, to prepare them before forking.
    """

    def __init__(self, workers: int = 0, corruptions: Sequence[str] = ()) -> None:
        if workers < 0:
            raise BioattnError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        warm_up(corruptions)
        if workers > 0:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)

    def submit(self, images: np.ndarray, corruption: str, severity: int, seeds: Sequence[int]):
        """Start corrupting ``images`` ``(B, H, W, 3)``; ``.result()`` gives the corrupted batch."""
        if self._pool is None:
            return _Done(_corrupt_chunk(images, corruption, severity, seeds))
        n = images.shape[0]
        chunk = max(1, math.ceil(n / self.workers))
        futures = [
            self._pool.submit(_corrupt_chunk, images[i:i + chunk], corruption, severity, list(seeds[i:i + chunk]))
            for i in range(0, n, chunk)
        ]
        return _Gathered(futures)

    def corrupt(self, images: np.ndarray, corruption: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
        return self.submit(images, corruption, severity, seeds).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Corrupter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Gathered:
    def __init__(self, futures: list[Future]) -> None:
        self.futures = futures

    def result(self) -> np.ndarray:
        return np.concatenate([f.result() for f in self.futures])


class _Counts:
    """Top-1 hits of one model: clean and per (corruption, severity)."""

    def __init__(self) -> None:
        self.clean = 0
        self.hits: dict[tuple[str, int], int] = {}

    def add(self, key, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, readouts: int | None) -> None:
        with torch.no_grad():
            pred = forward_readouts(model, x, readouts=readouts).logits.argmax(dim=1)
        hits = int((pred == labels).sum().item())
        if key is None:
            self.clean += hits
        else:
            self.hits[key] = self.hits.get(key, 0) + hits

    def summary(self, corruptions, severities, n: int) -> dict:
        top1 = {c: {str(s): 100.0 * self.hits.get((c, s), 0) / n for s in severities} for c in corruptions}
        return {"clean_top1": 100.0 * self.clean / n, **summarise_top1(top1)}


def summarise_top1(top1: dict[str, dict[str, float]]) -> dict:
    """Per-corruption means and the overall corruption accuracy / error from per-severity
    accuracies (percent)."""
    per_c = {c: sum(v.values()) / len(v) for c, v in top1.items()}
    mean_top1 = sum(per_c.values()) / len(per_c) if per_c else math.nan
    return {
        "top1": top1,
        "corruption_top1": per_c,
        "mean_top1": mean_top1,
        "mean_error": 100.0 - mean_top1,
    }


def errors_from_top1(top1: dict[str, dict[str, float]]) -> dict[str, dict[int, float]]:
    """Per-severity accuracies in percent -> errors as fractions keyed by integer severity."""
    return {c: {int(s): 1.0 - a / 100.0 for s, a in v.items()} for c, v in top1.items()}


def evaluate_corruptions(
    model: nn.Module,
    loader: DataLoader,
    pixels: Pixels,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    baseline: nn.Module | None = None,
    workers: int = 0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    readouts: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Top-1 accuracy (percent) of ``model`` on ``loader``'s images under each corruption and
    severity, generated on the fly; with ``baseline`` also its accuracies, the mCE normalised by
    the baseline and the relative mCE. ``mean_error`` is the absolute mean corruption error."""
    corruptions = check_corruption_names(corruptions)
    severities = check_severities(severities)
    device = torch.device(device)
    models = {"model": model} if baseline is None else {"model": model, "baseline": baseline}
    for m in models.values():
        m.eval()
    counts = {name: _Counts() for name in models}
    units = [(c, s) for c in corruptions for s in severities]
    seen = 0
    with Corrupter(workers, corruptions) as corrupter:
        for images, labels in loader:
            labels_dev = labels.to(device)
            n = labels.shape[0]
            for name, m in models.items():
                counts[name].add(None, m, images.to(device).float(), labels_dev, readouts)
            raw = pixels.to_uint8(images)
            seeds = {u: [image_seed(seed, u[0], u[1], seen + i) for i in range(n)] for u in units}
            window: deque = deque()
            ahead = 2 if workers > 0 else 1
            queued = 0
            for _ in units:
                while queued < len(units) and len(window) < ahead:
                    u = units[queued]
                    window.append((u, corrupter.submit(raw, u[0], u[1], seeds[u])))
                    queued += 1
                u, pending = window.popleft()
                x = pixels.from_uint8(pending.result()).to(device)
                for name, m in models.items():
                    counts[name].add(u, m, x, labels_dev, readouts)
                if progress is not None:
                    progress(n)
            seen += n
    if seen == 0:
        raise BioattnError("the data set for the corruption suite is empty")
    result = {
        "corruptions": corruptions,
        "severities": severities,
        "n": seen,
        "seed": seed,
        **counts["model"].summary(corruptions, severities, seen),
    }
    if baseline is not None:
        base = counts["baseline"].summary(corruptions, severities, seen)
        result["baseline"] = base
        errs = errors_from_top1(result["top1"])
        base_errs = errors_from_top1(base["top1"])
        result.update(mce(errs, base_errs))
        result.update(relative_mce(errs, 1 - result["clean_top1"] / 100, base_errs,
                                   1 - base["clean_top1"] / 100))
    return result
