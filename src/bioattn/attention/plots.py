"""Figures of attention: an image and each of a model's maps overlaid on it.

:func:`attend` is the whole ``bioattn attend`` command: it reads an image, prepares it for the
model (resize to the model's input size, normalise with its mean/std), computes the model's
named maps and draws them. Glimpse models (those with ``forward_glimpses``) are drawn by
:func:`bioattn.attention.scanpaths.plot_glimpses` instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..errors import BioattnError
from ..fileio import atomic_write, check_output_file, refuse_input_as_output
from ..images import open_rgb
from ..models import data_config
from ..protocol import Glimpsing, unwrap
from .maps import attention_maps, display_normalise, upsample
from .scanpaths import plot_glimpses

__all__ = ["input_settings", "load_image", "resolve_priors", "plot_attention", "attention_figure", "attend"]

# Longest side of the image drawn in the figure (the model input is resized separately).
DISPLAY_SIDE = 448
MAX_COLUMNS = 6
_FORMATS = {".png", ".pdf", ".svg", ".jpg", ".jpeg"}


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    return (size[0], size[0]) if len(size) == 1 else (size[-2], size[-1])


def input_settings(model: nn.Module, meta: Mapping[str, Any] | None = None,
                   img_size: int | None = None) -> dict[str, Any]:
    """Input size ``(h, w)`` and normalisation ``mean``/``std`` of ``model``: from ``img_size``,
    the model's patch embedding, the checkpoint metadata, then the model's ``pretrained_cfg``."""
    inner = unwrap(model)
    meta = meta or {}
    cfg = data_config(inner) if getattr(inner, "pretrained_cfg", None) else {}
    size = None
    if img_size is not None:
        size = _pair(img_size)
    elif getattr(inner, "patch_embed", None) is not None and hasattr(inner.patch_embed, "img_size"):
        size = _pair(inner.patch_embed.img_size)
    elif meta.get("img_size"):
        size = _pair(meta["img_size"])
    elif cfg.get("input_size"):
        size = _pair(cfg["input_size"])
    if size is None:
        raise BioattnError(f"cannot tell the input size of {type(inner).__name__}: give --img-size")
    mean = meta.get("mean") or cfg.get("mean") or IMAGENET_DEFAULT_MEAN
    std = meta.get("std") or cfg.get("std") or IMAGENET_DEFAULT_STD
    return {"img_size": size, "mean": tuple(float(m) for m in mean), "std": tuple(float(s) for s in std)}


def load_image(path: str | Path, img_size: tuple[int, int], mean: Sequence[float],
               std: Sequence[float]) -> tuple[torch.Tensor, np.ndarray]:
    """Read an image file: the model input ``(1, 3, h, w)`` (resized to ``img_size``,
    normalised) and the picture to draw, ``(H, W, 3)`` floats in [0, 1] (longest side at most
    :data:`DISPLAY_SIDE`)."""


    img = open_rgb(path)
    h, w = img_size
    model_in = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    x = torch.from_numpy(model_in).permute(2, 0, 1)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    scale = min(1.0, DISPLAY_SIDE / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    return x[None].contiguous(), np.asarray(img, dtype=np.float32) / 255.0


def resolve_priors(priors: Sequence[str | int], classes: Sequence[str] | None = None) -> list[int]:
    """Class indices for ``priors`` given as indices or (with ``classes``) class names."""
    out = []
    for prior in priors:
        text = str(prior).strip()
        if text.lstrip("-").isdigit():
            out.append(int(text))
            continue
        if not classes:
            raise BioattnError(f"prior '{text}' is not a class index, and the checkpoint lists no class names")
        names = list(classes)
        lowered = [n.lower() for n in names]
        if text in names:
            out.append(names.index(text))
        elif text.lower() in lowered:
            out.append(lowered.index(text.lower()))
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise BioattnError(f"unknown class '{text}' (classes: {shown})")
    return out


def plot_attention(image: np.ndarray | torch.Tensor, maps: Mapping[str, torch.Tensor], out_path: str | Path,
                   title: str | None = None, normalise: bool = True, alpha: float = 0.55) -> Path:
    """Draw ``image`` ``(H, W, 3)`` in [0, 1] and each ``(h, w)`` map overlaid on it, upsampled
    to the image (display-normalised as the authors do unless ``normalise=False``); panels go in
    rows of at most :data:`MAX_COLUMNS`. Writes ``out_path`` (png, pdf, svg or jpg)."""
    out_path = Path(out_path)
    fmt = out_path.suffix.lower()
    if fmt not in _FORMATS:
        raise BioattnError(f"cannot write a figure as '{out_path.suffix}': use one of {', '.join(sorted(_FORMATS))}")
    fig = attention_figure(image, maps, title=title, normalise=normalise, alpha=alpha)
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format=fmt.lstrip(".").replace("jpg", "jpeg")),
                 what="figure")
    return out_path


def attention_figure(image: np.ndarray | torch.Tensor, maps: Mapping[str, torch.Tensor],
                     title: str | None = None, normalise: bool = True, alpha: float = 0.55):
    """The matplotlib figure of :func:`plot_attention`."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if torch.is_tensor(image):
        image = image.detach().cpu().float().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.transpose(1, 2, 0)
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    height, width = image.shape[:2]

    panels = [("image", None)] + [(name, m) for name, m in maps.items()]
    cols = min(len(panels), MAX_COLUMNS)
    rows = math.ceil(len(panels) / cols)
    # sizes in inches: every panel keeps the image's aspect and has room for its title above it
    panel_w, panel_h = 2.8, 2.8 * height / width
    title_h, gap, margin = 0.3, 0.12, 0.1
    suptitle_h = 0.4 if title else 0.0
    fig_w = cols * panel_w + (cols - 1) * gap + 2 * margin
    fig_h = suptitle_h + rows * (title_h + panel_h) + (rows - 1) * gap + 2 * margin
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=margin / fig_w, right=1 - margin / fig_w, bottom=margin / fig_h,
                        top=1 - (margin + suptitle_h + title_h) / fig_h, wspace=gap / panel_w,
                        hspace=(title_h + gap) / panel_h)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, amap) in zip(axes.flat, panels):
        ax.imshow(image)
        if amap is not None:
            amap = amap.detach().float().cpu()
            if amap.ndim != 2:
                raise BioattnError(f"map '{name}' must be (h, w), got {tuple(amap.shape)}")
            shown = upsample(amap, (height, width))
            if normalise:
                shown = display_normalise(shown)
            ax.imshow(shown.numpy(), cmap="jet", alpha=alpha)
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - margin / fig_h, va="top")
    return fig


def plot_steering(pictures: np.ndarray | torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                  maps: torch.Tensor, shares: torch.Tensor, out_path: str | Path,
                  class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Two-object images and where a class prior puts the top-down map: one row per image, its
    picture with both objects outlined (the first in red, the second in cyan), then the map under
    each object's class with the share of the map on each object (the steering benchmark's
    quantities, :func:`bioattn.evaluate.steering.steered_maps`). ``pictures`` ``(N, H, W, 3)``
    in [0, 1]; ``labels`` ``(N, 2)``; ``masks`` and ``maps`` ``(N, 2, H, W)``; ``shares``
    ``(N, 2, 2)``. Writes ``out_path``."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_path = Path(out_path)
    fmt = out_path.suffix.lower()
    if fmt not in _FORMATS:
        raise BioattnError(f"cannot write a figure as '{out_path.suffix}': use one of {', '.join(sorted(_FORMATS))}")
    pictures = np.clip(np.asarray(torch.as_tensor(pictures).float()), 0.0, 1.0)
    n = len(pictures)
    if not (labels.shape[:2] == (n, 2) and masks.shape[:2] == (n, 2) and maps.shape[:2] == (n, 2)
            and tuple(shares.shape) == (n, 2, 2)):
        raise BioattnError(f"plot_steering needs N pictures with (N, 2) labels, (N, 2, H, W) masks and maps and "
                           f"(N, 2, 2) shares; got {n}, {tuple(labels.shape)}, {tuple(masks.shape)}, "
                           f"{tuple(maps.shape)}, {tuple(shares.shape)}")

    def name(c: int) -> str:
        return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)

    colours = ("red", "cyan")
    fig = Figure(figsize=(3 * 2.6, n * 2.9 + (0.4 if title else 0.0)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        a, b = (name(int(c)) for c in labels[i])
        panels = [(f"{a} (red), {b} (cyan)", None)]
        for j in range(2):
            on = shares[i, j]
            panels.append((f"prior {name(int(labels[i, j]))}: {100 * on[0]:.0f}% on {a},\n"
                           f"{100 * on[1]:.0f}% on {b}", maps[i, j]))
        for ax, (text, amap) in zip(axes[i], panels):
            ax.set_axis_off()
            ax.imshow(pictures[i])
            if amap is not None:  # the map as the benchmark scores it, scaled to its maximum
                amap = amap.float().clamp(min=0)
                ax.imshow((amap / amap.max().clamp(min=1e-12)).numpy(), cmap="jet", alpha=0.55, vmin=0.0, vmax=1.0)
            for k in range(2):
                ax.contour(masks[i, k].float().numpy(), levels=[0.5], colors=colours[k], linewidths=1.2)
            ax.set_title(text, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format=fmt.lstrip(".").replace("jpg", "jpeg")),
                 what="figure")
    return out_path


def attend(
    model: nn.Module,
    image_path: str | Path,
    out_path: str | Path,
    priors: Sequence[str | int] = (),
    prior_scale: float = 40.0,
    meta: Mapping[str, Any] | None = None,
    img_size: int | None = None,
    glimpses: int | None = None,
    gif: bool = False,
) -> Path:
    """Draw where ``model`` attends on the image at ``image_path`` into ``out_path``.

    ``priors`` (class indices, or names listed in ``meta["classes"]``) add one top-down map each
    for models that can be steered (AbSViT). Glimpse models are drawn by
    :func:`bioattn.attention.scanpaths.plot_glimpses` with ``glimpses`` and ``gif``.
    """
    inner = unwrap(model)
    out_path = Path(out_path)
    glimpse = isinstance(inner, Glimpsing)
    targets = [out_path]
    if glimpse:  # the PNG and, with gif, the GIF (see plot_glimpses)
        gif_path = out_path.with_suffix(".gif")
        if out_path.suffix.lower() == ".gif":
            targets = [out_path.with_suffix(".png"), out_path]
        else:
            targets = [out_path] + ([gif_path] if gif else [])
    elif out_path.suffix.lower() not in _FORMATS:
        raise BioattnError(f"cannot write a figure as '{out_path.suffix}': use one of {', '.join(sorted(_FORMATS))}")
    for target in targets:
        check_output_file(target, "figure")
        refuse_input_as_output(target, [image_path], "figure")
    model.eval()
    settings = input_settings(inner, meta, img_size)
    x, picture = load_image(image_path, settings["img_size"], settings["mean"], settings["std"])
    x = x.to(next(iter(inner.parameters()), x).device)
    if glimpse:
        if priors:
            raise BioattnError(f"{type(inner).__name__} is a glimpse model: it takes no --prior")

        return plot_glimpses(model, x, out_path, glimpses=glimpses or 8, gif=gif, mean=settings["mean"],
                             std=settings["std"], class_names=(meta or {}).get("classes"))
    if glimpses is not None or gif:
        raise BioattnError("--readouts and --gif apply to glimpse models only")
    classes = (meta or {}).get("classes")
    kwargs: dict[str, Any] = {}
    if priors:
        kwargs = {"priors": resolve_priors(priors, classes), "prior_scale": prior_scale}
    maps = attention_maps(model, x, **kwargs)
    named = {}
    for name, amap in maps.items():
        if name.startswith("class ") and classes:
            index = int(name.split()[1])
            if 0 <= index < len(classes):
                name = f"{name} ({classes[index]})"
        named[name] = amap[0]
    title = (meta or {}).get("model") or (getattr(inner, "pretrained_cfg", None) or {}).get("architecture")
    return plot_attention(picture, named, out_path, title=title)
