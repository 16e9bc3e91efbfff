"""Training batches of an image folder decoded and augmented on the compute device.

The loader's workers only read files: :class:`EncodedImages` gives each JPEG file's bytes (other
formats, a small share of ImageNet, are decoded in the worker by :func:`bioattn.images.open_rgb`).
:class:`DecodeOnDevice` takes each batch of the loader in the main process, decodes the JPEGs on
the device (``torchvision.io.decode_jpeg(device=...)``, nvJPEG on a GPU) and applies the training
transform of :func:`bioattn.data.build_dataset` there: random resized crop (or, without crop and
RandAugment, a resize and centre crop), horizontal flip, colour jitter, normalisation and random
erasing. RandAugment (timm's, on PIL images) is not offered on this path.

Every random draw is made in the main process (Python's and torch's CPU generators), so an
epoch's augmentation depends only on the seeds, as on the PIL path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import BioattnError

JPEG_MAGIC = b"\xff\xd8\xff"


class EncodedImages(Dataset):
    """The images of a :class:`bioattn.data.folders.ImageFolderDataset` (``folder``) as
    ``(payload, target, index)``: ``payload`` is a JPEG file's bytes (a 1-D uint8 tensor), an
    image of another format decoded to ``(3, H, W)`` uint8, or an empty tensor for an unreadable
    file when the folder skips bad images (the batch's decoder replaces it and counts it)."""

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self.classes = folder.classes
        self.num_classes = folder.num_classes

    def __len__(self) -> int:
        return len(self.folder)

    def path(self, index: int) -> str:
        return str(self.folder.samples[index][0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        # deferred: torchvision loads in seconds; only this path needs it
        from torchvision.transforms.functional import pil_to_tensor

        path, target = self.folder.samples[index]
        try:
            data = Path(path).read_bytes()
            if data[:3] == JPEG_MAGIC:
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), target, index
            return pil_to_tensor(self.folder._load(index)), target, index
        except (OSError, BioattnError) as exc:
            if not self.folder.skip_bad_images:
                if isinstance(exc, BioattnError):
                    raise
                raise BioattnError(f"cannot read image {path}: {exc.strerror or exc}") from None
            return torch.empty(0, dtype=torch.uint8), target, index


def collate_encoded(batch: Sequence[tuple[torch.Tensor, int, int]]) -> tuple[list[torch.Tensor], torch.Tensor,
                                                                            torch.Tensor]:
    """``(payloads, targets, indices)`` of a batch of :class:`EncodedImages` items (the payloads
    differ in length, so they stay a list)."""
    payloads = [item[0] for item in batch]
    targets = torch.tensor([item[1] for item in batch], dtype=torch.int64)
    indices = torch.tensor([item[2] for item in batch], dtype=torch.int64)
    return payloads, targets, indices


class DecodeOnDevice:
    """Iterates ``loader`` (batches of :func:`collate_encoded`) and yields ``(images, targets)``
    on ``device``: images decoded there and transformed as :func:`bioattn.data.build_dataset`'s
    training transform does (``aug``: a :class:`bioattn.data.Augmentation` without RandAugment),
    normalised with ``mean``/``std``, ``size`` pixels square, float32."""

    def __init__(self, loader: Any, images: EncodedImages, size: int, mean: Sequence[float],
                 std: Sequence[float], aug: Any, device: torch.device) -> None:
        # deferred: timm and torchvision load in seconds; only this path needs them
        from timm.data.random_erasing import RandomErasing
        from torchvision.transforms import v2

        if aug.auto_augment:
            raise BioattnError("images decoded on the device are not RandAugmented (timm's RandAugment "
                               "works on PIL images): leave out --aa, or decode on the CPU")
        self.loader = loader
        self.images = images
        self.size = size
        self.device = device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        # as timm's create_transform: without crop and RandAugment, a resize and centre crop only
        self.plain = not aug.random_resized_crop
        self.hflip = 0.0 if self.plain else aug.hflip
        cj = 0.0 if self.plain else aug.color_jitter
        self.jitter = v2.ColorJitter(cj, cj, cj) if cj > 0 else None
        self.erase = (RandomErasing(aug.re_prob, mode=aug.re_mode, max_count=aug.re_count, device=device)
                      if aug.re_prob > 0 and not self.plain else None)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self) -> Any:
        return self.loader.sampler

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for payloads, targets, indices in self.loader:
            decoded = self.decode(payloads, indices.tolist())
            yield self.transform(decoded), targets.to(self.device, non_blocking=True)

    # decoding ---------------------------------------------------------------------------------
    def decode(self, payloads: list[torch.Tensor], indices: list[int]) -> list[torch.Tensor]:
        """``(3, H, W)`` uint8 images on the device: the JPEGs in one batched call, the images
        decoded by the workers copied over; an unreadable one is refused (naming its file), or
        replaced by another image of the batch and counted when the folder skips bad images."""
        # deferred: torchvision loads in seconds; only this path needs it
        from torchvision.io import ImageReadMode, decode_jpeg

        out: list[torch.Tensor | None] = [None] * len(payloads)
        jpegs = [i for i, p in enumerate(payloads) if p.ndim == 1 and p.numel()]
        if jpegs:
            try:
                images = decode_jpeg([payloads[i] for i in jpegs], mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one bad file fails the whole call: decode one by one
                images = [self._decode_one(payloads[i]) for i in jpegs]
            for i, img in zip(jpegs, images):
                out[i] = img
        for i, p in enumerate(payloads):
            if p.ndim == 3:
                out[i] = p.to(self.device, non_blocking=True)
        bad = [i for i, img in enumerate(out) if img is None]
        if bad:
            folder = self.images.folder
            if not folder.skip_bad_images or len(bad) == len(out):
                raise BioattnError(f"cannot decode image {self.images.path(indices[bad[0]])}")
            good = [img for img in out if img is not None]
            for n, i in enumerate(bad):
                out[i] = good[n % len(good)]
            folder._skipped[0] += len(bad)
        return out  # type: ignore[return-value]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | None:
        # deferred: torchvision loads in seconds; only this path needs it
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            pass
        try:  # the CPU decoder reads some JPEGs the device's does not (e.g. CMYK)
            return decode_image(data, mode=ImageReadMode.RGB).to(self.device)
        except RuntimeError:
            return None

    # the training transform -------------------------------------------------------------------
    def transform(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Crop (or resize and centre-crop), flip and jitter each image, then normalise and
        randomly erase the batch: ``(B, 3, size, size)`` float32."""
        # deferred: timm loads in seconds; only this path needs it
        from timm.data.transforms import RandomResizedCropAndInterpolation

        out = []
        for img in images:
            if self.plain:
                x = self._resize_centre_crop(img)
            else:
                i, j, h, w = RandomResizedCropAndInterpolation.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3))
                x = self._resize(img[:, i:i + h, j:j + w], (self.size, self.size))
            if self.hflip > 0 and torch.rand(1) < self.hflip:
                x = x.flip(-1)
            if self.jitter is not None:
                x = self.jitter(x.div(255.0)).mul_(255.0)
            out.append(x)
        batch = torch.stack(out).div_(255.0).sub_(self.mean).div_(self.std)
        if self.erase is not None:
            batch = self.erase(batch)
        return batch

    @staticmethod
    def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bicubic, antialiased resize of a uint8 ``(3, h, w)`` image to float values in [0, 255]."""
        x = F.interpolate(img.unsqueeze(0).float(), size=size, mode="bicubic", antialias=True,
                          align_corners=False)
        return x.squeeze(0).clamp_(0.0, 255.0)

    def _resize_centre_crop(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        short = min(h, w)
        # as torchvision's Resize(size): the shorter side to ``size``, the other in proportion
        new_h = self.size if h == short else int(self.size * h / w)
        new_w = self.size if w == short else int(self.size * w / h)
        x = self._resize(img, (new_h, new_w))
        top, left = int(round((new_h - self.size) / 2.0)), int(round((new_w - self.size) / 2.0))
        return x[:, top:top + self.size, left:left + self.size]
