"""Reading image files as 8-bit RGB, whatever their PIL mode.

Every image bioattn reads from disk (training and evaluation folders, ``attend``, fixation
stimuli) goes through :func:`open_rgb`, so all of them treat a mode the same way:

* ``RGB`` is used as it is; ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and
  ``RGBX`` are converted by PIL (palette entries, ink, colour spaces).
* 16-bit greyscale (``I;16`` and its byte orders, and ``I`` holding values from 0 to 65535) is
  scaled from its full 16-bit range to 8 bits (65535 becomes 255), never clipped at 255.
* ``F`` (32-bit float greyscale) is read as fractions when every pixel is in [0, 1], as 8-bit
  values when every pixel is in [0, 255]; other values (or NaN, infinities) are refused.
* Transparency (``RGBA``, ``LA``, ``PA``, their premultiplied forms, and a palette or
  greyscale image with a transparent colour) is composited on :data:`ALPHA_BACKGROUND`, white,
  as the image shows on a page.

A mode that cannot be converted is refused with a one-line
:class:`~bioattn.errors.BioattnError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import BioattnError

__all__ = ["ALPHA_BACKGROUND", "open_rgb", "to_rgb"]

ALPHA_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _grey_to_rgb(img: Image.Image, name: str) -> Image.Image:
    """A one-band integer or float image scaled to 8 bits by its nominal range."""
    values = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        if not np.isfinite(values).all():
            raise BioattnError(f"{name}: floating-point pixels include NaN or infinity")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low >= 0.0 and high <= 1.0:
            full = 1.0
        elif low >= 0.0 and high <= 255.0:
            full = 255.0
        else:
            raise BioattnError(f"{name}: floating-point pixels from {low:g} to {high:g} are neither "
                               "in [0, 1] nor in [0, 255]")
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0 or high > 65535:
            raise BioattnError(f"{name}: {img.mode} pixels from {low:g} to {high:g} do not fit "
                               "16 bits (0 to 65535)")
        full = 65535.0
    scaled = np.rint(values * (255.0 / full)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L").convert("RGB")


def _composite(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """``img`` as a new 8-bit RGB image (see the module's description for each mode); ``name``
    starts the error message when the mode cannot be converted."""
    mode = img.mode
    try:
        if mode == "RGB" and "transparency" not in img.info:
            return img.copy()
        if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
            if mode == "La":  # PIL converts premultiplied grey only to LA
                img = img.convert("LA")
            return _composite(img)
        if mode == "F" or mode == "I" or mode.startswith("I;16"):
            return _grey_to_rgb(img, name)
        if mode == "1":
            return img.convert("L").convert("RGB")
        return img.convert("RGB")
    except BioattnError:
        raise
    except (ValueError, OSError, TypeError) as exc:
        raise BioattnError(f"{name}: cannot convert PIL mode {mode} to RGB ({exc})".splitlines()[0]) from None


def open_rgb(path: str | Path) -> Image.Image:
    """The image file at ``path`` decoded and converted to 8-bit RGB (:func:`to_rgb`); a missing,
    unreadable or unconvertible file raises a one-line :class:`BioattnError` naming it."""
    path = Path(path)
    if path.is_dir():
        raise BioattnError(f"image {path} is a directory, not an image file")
    if not path.is_file():
        raise BioattnError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img, f"image {path}")
    except BioattnError:
        raise
    except Exception as exc:  # PIL raises many kinds for damaged or foreign files
        raise BioattnError(f"cannot read image {path}: {exc}".splitlines()[0]) from None
