"""Human fixation data sets in the MIT1003 or SALICON-like layouts.

Two layouts are recognised under a root directory, files being matched by stem:

* MIT1003: images in ``ALLSTIMULI/`` (``name.jpeg``), and anywhere under the root, usually in
  ``ALLFIXATIONMAPS/``, fixation point maps ``name_fixPts.jpg`` and fixation density maps
  ``name_fixMap.jpg``.
* SALICON-like: ``images/``, ``fixations/`` (point maps) and ``maps/`` (density maps), each file
  named by the image's stem (a ``_fixPts`` / ``_fixMap`` suffix is also accepted).

``stimuli/`` is accepted as another name for the image folder; folders are searched recursively
(so ``images/train/...`` works) and names are compared case-insensitively. Point maps are images
that are nonzero at fixated pixels; density maps are greyscale images. Density maps are optional
for the whole data set: when there are none, :attr:`FixationItem.density` is ``None``.

Point maps saved as JPEG carry compression noise around each point (up to about 15% of full
scale), so in ``.jpg``/``.jpeg`` files a pixel counts as fixated when its value exceeds half the
map's maximum; in lossless files any nonzero pixel counts. ``point_threshold`` overrides this.
Maps are read from disk when accessed, so loading the 1003 MIT1003 items costs nothing upfront.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BioattnError
from ..images import open_rgb

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg"})
IMAGE_DIR_NAMES = ("allstimuli", "images", "stimuli")
POINTS_DIR_NAME = "fixations"
DENSITY_DIR_NAME = "maps"
POINTS_SUFFIX = "_fixpts"
DENSITY_SUFFIX = "_fixmap"
_MAX_LISTED = 10


def _read_gray(path: Path) -> np.ndarray:
    """A greyscale image file as a float64 (H, W) array of its raw values."""
    try:
        with Image.open(path) as img:
            if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
                arr = np.asarray(img)
            else:
                arr = np.asarray(img.convert("L"))
    except (OSError, UnidentifiedImageError) as exc:
        raise BioattnError(f"cannot read map {path}: {exc}") from None
    return arr.astype(np.float64)


def _threshold_points(values: np.ndarray, path: Path, point_threshold: float | None) -> np.ndarray:
    if point_threshold is None:
        point_threshold = 0.5 if path.suffix.lower() in LOSSY_SUFFIXES else 0.0
    peak = float(values.max()) if values.size else 0.0
    if peak <= 0:
        return np.zeros(values.shape, dtype=bool)
    return values > point_threshold * peak


@dataclass(frozen=True)
class FixationItem:
    """One image with its fixation maps; the maps are read from disk on each access."""

    stem: str
    image_path: Path
    points_path: Path
    density_path: Path | None
    point_threshold: float | None = None

    @property
    def points(self) -> np.ndarray:
        """(H, W) bool map, True at fixated pixels."""
        values = _read_gray(self.points_path)
        return _threshold_points(values, self.points_path, self.point_threshold)

    @property
    def density(self) -> np.ndarray | None:
        """(H, W) float64 fixation density map (raw pixel values), or ``None`` if there is none."""
        if self.density_path is None:
            return None
        return _read_gray(self.density_path)

    def load_maps(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(points, density)``, checking that both maps have the same size."""
        points = self.points
        density = self.density
        if density is not None and density.shape != points.shape:
            raise BioattnError(
                f"{self.stem}: fixation point map is {points.shape[1]}x{points.shape[0]} but the "
                f"density map is {density.shape[1]}x{density.shape[0]} (width x height)"
            )
        return points, density

    def load_image(self) -> Image.Image:
        """The stimulus as an RGB PIL image."""

        return open_rgb(self.image_path)


@dataclass(frozen=True)
class FixationDataset(Sequence[FixationItem]):
    """The matched items of a fixation data set, sorted by stem.

    ``unmatched`` lists ``(stem, reason)`` for every file skipped because its image or one of its
    maps was missing (only when loaded with ``allow_unmatched=True``).
    """

    root: Path
    items: tuple[FixationItem, ...]
    unmatched: tuple[tuple[str, str], ...] = ()

    @property
    def has_density(self) -> bool:
        return bool(self.items) and self.items[0].density_path is not None

    @property
    def n_unmatched(self) -> int:
        return len(self.unmatched)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> FixationItem: ...

    @overload
    def __getitem__(self, index: slice) -> list[FixationItem]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self.items[index])
        return self.items[index]

    def __iter__(self) -> Iterator[FixationItem]:
        return iter(self.items)


def _child_dir(root: Path, name: str) -> Path | None:
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() == name:
            return child
    return None


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _strip_suffix(stem: str, suffix: str) -> str:
    return stem[: -len(suffix)] if suffix and stem.lower().endswith(suffix) else stem


def _by_stem(files: list[Path], suffix: str, what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        stem = _strip_suffix(path.stem, suffix)
        if stem in found:
            raise BioattnError(
                f"two {what} files share the name '{stem}': {found[stem]} and {path}"
            )
        found[stem] = path
    return found


def _map_files(root: Path, dir_name: str, suffix: str, exclude: list[Path]) -> list[Path]:
    folder = _child_dir(root, dir_name)
    if folder is not None:
        return _image_files(folder)
    return [
        p
        for p in _image_files(root)
        if p.stem.lower().endswith(suffix) and not any(p.is_relative_to(e) for e in exclude)
    ]


def load_fixation_dataset(
    root: str | Path,
    allow_unmatched: bool = False,
    point_threshold: float | None = None,
) -> FixationDataset:
    """Find the images and fixation maps under ``root`` and match them by stem.

    Every image needs a fixation point map, and, when the data set has density maps at all,
    a density map; every map needs an image. Otherwise a :class:`BioattnError` lists the first
    10 unmatched stems and the count of the rest, unless ``allow_unmatched`` is set, in which case
    those files are skipped and listed in :attr:`FixationDataset.unmatched`.
    ``point_threshold`` (a fraction of each map's maximum in [0, 1)) overrides the rule deciding
    which pixels of a point map are fixated (see the module documentation).
    """
    root = Path(root)
    if not root.is_dir():
        raise BioattnError(f"fixation data directory not found: {root}")
    if point_threshold is not None and not (0.0 <= point_threshold < 1.0):
        raise BioattnError(f"point_threshold must be in [0, 1), got {point_threshold}")

    image_dir = next(
        (d for d in (_child_dir(root, n) for n in IMAGE_DIR_NAMES) if d is not None), None
    )
    if image_dir is None:
        raise BioattnError(
            f"no image folder in {root}: expected ALLSTIMULI/ (MIT1003) or images/ (SALICON-like)"
        )
    image_files = [
        p
        for p in _image_files(image_dir)
        if not p.stem.lower().endswith((POINTS_SUFFIX, DENSITY_SUFFIX))
    ]
    if not image_files:
        raise BioattnError(f"no image files in {image_dir}")
    images = _by_stem(image_files, "", "image")
    points = _by_stem(
        _map_files(root, POINTS_DIR_NAME, POINTS_SUFFIX, [image_dir]),
        POINTS_SUFFIX,
        "fixation point map",
    )
    if not points:
        raise BioattnError(
            f"no fixation point maps in {root}: expected fixations/ or files named *_fixPts.jpg/.png"
        )
    density = _by_stem(
        _map_files(root, DENSITY_DIR_NAME, DENSITY_SUFFIX, [image_dir]),
        DENSITY_SUFFIX,
        "fixation density map",
    )

    unmatched: list[tuple[str, str]] = []
    for stem in sorted(images):
        missing = []
        if stem not in points:
            missing.append("fixation points")
        if density and stem not in density:
            missing.append("density map")
        if missing:
            unmatched.append((stem, "no " + " or ".join(missing)))
    for stem in sorted(set(points) - set(images)):
        unmatched.append((stem, "fixation points without an image"))
    for stem in sorted(set(density) - set(images)):
        unmatched.append((stem, "density map without an image"))
    unmatched.sort()

    if unmatched and not allow_unmatched:
        listed = ", ".join(f"{stem} ({why})" for stem, why in unmatched[:_MAX_LISTED])
        more = len(unmatched) - _MAX_LISTED
        tail = f" and {more} more" if more > 0 else ""
        raise BioattnError(
            f"{len(unmatched)} unmatched file(s) in {root}: {listed}{tail}; "
            "pass allow_unmatched=True to skip them"
        )

    skipped = {stem for stem, _ in unmatched}
    items = tuple(
        FixationItem(
            stem=stem,
            image_path=images[stem],
            points_path=points[stem],
            density_path=density.get(stem),
            point_threshold=point_threshold,
        )
        for stem in sorted(images)
        if stem not in skipped
    )
    if not items:
        raise BioattnError(f"no image in {root} has matching fixation maps")
    return FixationDataset(root=root, items=items, unmatched=tuple(unmatched))
