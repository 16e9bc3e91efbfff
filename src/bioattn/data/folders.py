"""ImageNet-style image folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``).

Files are found with timm's folder reader; images are decoded by :func:`bioattn.images.open_rgb`
(every PIL mode to 8-bit RGB) so that an unreadable file is reported by name, or skipped and
counted when asked.

A folder can be restricted to a subset of its classes (e.g. ImageNet-100 out of ImageNet-1k)
with a class list file read by :func:`read_class_list`: one class folder name per line
(``examples/imagenet100_classes.txt`` is one).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from timm.data.readers.reader_image_folder import find_images_and_targets
from torch.utils.data import Dataset, get_worker_info

from ..errors import BioattnError, listing
from ..images import open_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_MAX_WORKER_SLOTS = 256
_MAX_CONSECUTIVE_BAD = 50


def read_class_list(path: str | os.PathLike) -> list[str]:
    """The class folder names listed in a text file, in file order: one per line, surrounding
    spaces dropped; blank lines and ``#`` comments (to the end of the line) are ignored; a UTF-8
    byte-order mark (some editors start files with one) is not part of the first name. A name
    listed twice, or a file that lists none, is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BioattnError(f"class list {path} is not UTF-8 text") from None
    except OSError as exc:
        raise BioattnError(f"cannot read class list {path}: {exc.strerror or exc}") from None
    names: list[str] = []
    first_line: dict[str, int] = {}
    repeated: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name in first_line:
            repeated.append(f"'{name}' (lines {first_line[name]} and {number})")
            continue
        first_line[name] = number
        names.append(name)
    if repeated:
        raise BioattnError(f"class list {path} names {len(repeated)} class(es) twice: {listing(repeated, 3)}")
    if not names:
        raise BioattnError(f"class list {path} names no class (one class folder name per line)")
    return names


def class_folders(root: Path, only: Sequence[str] | None = None) -> list[str]:
    """Sorted class folder names under ``root``; each must hold at least one image. With
    ``only``, just those folders (sorted), each of which must be there."""
    if not root.is_dir():
        raise BioattnError(f"data folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise BioattnError(f"no class folders in {root}")
    if only is not None:
        present = set(classes)
        missing = [name for name in only if name not in present]
        if missing:
            raise BioattnError(f"{root} lacks {len(missing)} of the {len(only)} listed classes: {listing(missing)}")
        classes = sorted(only)
    empty = []
    for name in classes:
        has_image = False
        for _dirpath, _dirs, files in os.walk(root / name):
            if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
                has_image = True
                break
        if not has_image:
            empty.append(name)
    if empty:
        raise BioattnError(f"empty class folder(s) in {root}: {listing(empty)}")
    return classes


class ImageFolderDataset(Dataset):
    """Images under ``root/<class>/`` with labels from the sorted class folder names.

    ``classes`` fixes the class order (e.g. the training split's, so validation labels agree):
    every class folder read must be one of them, and classes without a folder get no image.
    ``subset`` (e.g. from :func:`read_class_list`) reads only those class folders, each of which
    must exist, and ignores the others; without ``classes`` the labels follow the subset's
    sorted names, as for a folder holding only those classes.

    With ``skip_bad_images`` an unreadable image is replaced by the next readable one and counted
    (:meth:`skipped`); otherwise it raises :class:`BioattnError` naming the file.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        classes: list[str] | None = None,
        skip_bad_images: bool = False,
        subset: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if subset is not None:
            subset = list(subset)
            if not subset:
                raise BioattnError(f"an empty class subset for {self.root}")
            twice = sorted(name for name, count in Counter(subset).items() if count > 1)
            if twice:
                raise BioattnError(f"class subset for {self.root} names some classes twice: {listing(twice)}")
        found = class_folders(self.root, subset)
        if classes is None:
            classes = found
        else:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise BioattnError(
                    f"{self.root} has class folders the training split lacks: {', '.join(unknown[:10])}"
                )
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        class_to_idx = {c: i for i, c in enumerate(self.classes)}
        if subset is not None:      # the folders left out are not read, whatever ``classes`` holds
            read = set(found)
            class_to_idx = {c: i for c, i in class_to_idx.items() if c in read}
        samples, _ = find_images_and_targets(
            str(self.root), types=IMAGE_EXTENSIONS, class_to_idx=class_to_idx
        )
        if not samples:
            raise BioattnError(f"no images found in {self.root}")
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        # one counter slot per data-loader worker, in shared memory so workers' counts add up
        self._skipped = torch.zeros(_MAX_WORKER_SLOTS + 1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def skipped(self) -> int:
        """How many unreadable images were skipped so far."""
        return int(self._skipped.sum())

    def _load(self, index: int) -> Image.Image:
        return open_rgb(self.samples[index][0])

    def __getitem__(self, index: int):
        for attempt in range(_MAX_CONSECUTIVE_BAD):
            i = (index + attempt) % len(self.samples)
            try:
                img = self._load(i)
            except BioattnError:
                if not self.skip_bad_images:
                    raise
                info = get_worker_info()
                slot = 0 if info is None else 1 + info.id % _MAX_WORKER_SLOTS
                self._skipped[slot] += 1
                continue
            if self.transform is not None:
                img = self.transform(img)
            return img, self.targets[i]
        raise BioattnError(f"{_MAX_CONSECUTIVE_BAD} unreadable images in a row near index {index} in {self.root}")
