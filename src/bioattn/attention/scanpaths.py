"""Pictures of glimpse models: the fixation path, what each glimpse saw, and the maps that chose
the next fixation.

:func:`plot_glimpses` works with every model that has ``forward_glimpses`` and
``glimpse_images`` (RS-RNN and its baselines, :mod:`bioattn.models.glimpse`). It draws with
matplotlib's Agg canvas (no display, no global backend change) and writes GIFs with PIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.pixels import Pixels
from ..errors import BioattnError
from ..fileio import atomic_write, check_output_file
from ..protocol import Glimpsing, evaluating, unwrap

_PATH_COLOUR = "#ffcc00"
_OUTLINE_COLOURS = ("#00e5ff", "#ff4fd8", "#7dff6b")


def _denormalise(image: torch.Tensor, mean, std) -> np.ndarray:
    return Pixels(mean, std).to_picture(image)


def _to_pixels(points: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Image coordinates (..., 2) in [-1, 1] to imshow pixel coordinates (centres at integers)."""
    p = points.detach().float().cpu().numpy()
    return np.stack([(p[..., 0] + 1) / 2 * width - 0.5, (p[..., 1] + 1) / 2 * height - 0.5], -1)


def _draw_path(ax, fixations: np.ndarray, upto: int, height: int, width: int) -> None:
    """Fixation path up to glimpse ``upto`` (inclusive), numbered from 1."""
    pts = fixations[: upto + 1]
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib import patheffects

    ax.plot(pts[:, 0], pts[:, 1], "-", color=_PATH_COLOUR, lw=1.5, alpha=0.9, clip_on=False)
    for i, (x, y) in enumerate(pts):
        last = i == upto
        ax.plot(x, y, "o", ms=9 if last else 7, mfc=_PATH_COLOUR if last else "none",
                mec=_PATH_COLOUR, mew=1.5, clip_on=False)
        # the number goes on the side of the point that faces the image's centre, so it stays
        # inside the picture at the edges
        right = x < 0.75 * width
        below = y < 0.8 * height
        ax.annotate(str(i + 1), (x, y), xytext=(5 if right else -5, -5 if below else 5),
                    textcoords="offset points", color="white", fontsize=8, fontweight="bold",
                    ha="left" if right else "right", va="top" if below else "bottom",
                    annotation_clip=False,
                    path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)


def _outline_names(count: int) -> list[str]:
    """Legend names of the outlines a glimpse model draws (one per glimpse kind)."""
    if count == 1:
        return ["field of each glimpse"]
    if count == 2:
        return ["outer field of each glimpse", "inner field (fovea) of each glimpse"]
    return [f"field {k + 1} of each glimpse" for k in range(count)]


def _outline_legend(ax, count: int) -> None:
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_PATH_COLOUR, marker="o", mfc="none", lw=1.5)]
    names = ["fixation path (numbered)"]
    handles += [Line2D([], [], color=_OUTLINE_COLOURS[k % len(_OUTLINE_COLOURS)], lw=1.0)
                for k in range(count)]
    names += _outline_names(count)
    ax.legend(handles, names, loc="center", fontsize=7, frameon=False, ncol=1, handlelength=1.8)


def _draw_outlines(ax, outlines: list[np.ndarray], alpha: float = 0.9) -> None:
    for k, poly in enumerate(outlines):
        ax.plot(poly[:, 0], poly[:, 1], "-", color=_OUTLINE_COLOURS[k % len(_OUTLINE_COLOURS)],
                lw=1.0, alpha=alpha)


def _show_glimpse(ax, glimpse: torch.Tensor, mean, std, title: str | None = None) -> None:
    ax.imshow(_denormalise(glimpse, mean, std), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _prediction_text(logits: torch.Tensor, class_names: Sequence[str] | None) -> str:
    probs = logits.float().softmax(-1)
    p, k = probs.max(-1)
    name = class_names[int(k)] if class_names is not None and int(k) < len(class_names) else str(int(k))
    return f"{name} {100 * float(p):.0f}%"


def _canvas(figsize):
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_glimpses(
    model: nn.Module,
    image: torch.Tensor,
    out_path: str | Path,
    glimpses: int | None = 8,
    gif: bool = False,
    map_glimpse: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> list[Path]:
    """Draw how ``model`` looks at ``image`` over ``glimpses`` glimpses.

    The PNG at ``out_path`` shows the image with the fixation path (numbered, the field of every
    glimpse outlined faintly) and, below it, what each glimpse saw (one row per glimpse kind,
    e.g. the two crops of Crop-D) titled with the prediction after that glimpse. With
    ``map_glimpse`` (a glimpse number from 1 to ``glimpses``, or -1 for the last) it adds that
    glimpse's maps over the image (RS-RNN: saliency, inhibition of return and the probability of
    the next fixation). With ``gif=True`` it also writes ``out_path`` with a ``.gif`` suffix: one
    frame per glimpse, the path so far and the current glimpse.

    ``image`` is one normalised image ``(C, H, W)`` (or a batch of one, ``(1, C, H, W)``) as
    the model takes it; ``mean``/``std`` undo the normalisation for display (default: the
    model's ``pretrained_cfg``, else the ImageNet values). For an image already in ``[0, 1]``
    pass ``mean=(0,)`` and ``std=(1,)``. ``glimpses=None`` draws 8 glimpses. ``class_names`` label
    the predictions. The model runs in eval mode (its mode is restored afterwards).

    Returns the written paths: the PNG (``out_path``; given a ``.gif`` name, the PNG takes the
    ``.png`` suffix instead) then, with ``gif=True``, the GIF.
    """
    model = unwrap(model)
    if not isinstance(model, Glimpsing):
        raise BioattnError(f"{type(model).__name__} is not a glimpse model (no forward_glimpses)")
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise BioattnError(f"image must be one normalised image (C, H, W); got {shape}")
    glimpses = 8 if glimpses is None else glimpses
    if isinstance(glimpses, bool) or not isinstance(glimpses, int) or glimpses < 1:
        raise BioattnError(f"glimpses must be an integer >= 1; got {glimpses!r}")
    if map_glimpse is not None:
        if map_glimpse == -1:
            map_glimpse = glimpses
        if isinstance(map_glimpse, bool) or not isinstance(map_glimpse, int) or not 1 <= map_glimpse <= glimpses:
            raise BioattnError(
                f"map_glimpse must be a glimpse number from 1 to {glimpses} (or -1); got {map_glimpse!r}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406))
    std = std if std is not None else cfg.get("std", (0.229, 0.224, 0.225))
    out_path = Path(out_path)
    gif_path = out_path.with_suffix(".gif")
    if out_path.suffix.lower() == ".gif":
        gif_path, out_path = out_path, out_path.with_suffix(".png")

    for target in [out_path] + ([gif_path] if gif else []):
        check_output_file(target, "figure")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = image.detach().to(device, torch.float32)[None]
    height, width = x.shape[-2:]
    with evaluating(model):
        with torch.no_grad():
            g = model.forward_glimpses(x, glimpses=glimpses, return_maps=True)
            views = model.glimpse_images(x, g.fixations)
            outlines = [[_to_pixels(o[0], height, width)
                         for o in model.glimpse_outlines(g.fixations[t], (height, width))]
                        for t in range(glimpses)]

    picture = _denormalise(x[0], mean, std)
    fixations = _to_pixels(g.fixations[:, 0], height, width)
    predictions = [_prediction_text(g.logits[t, 0], class_names) for t in range(glimpses)]
    maps = {}
    if map_glimpse is not None and g.maps:
        maps = {name: m[map_glimpse - 1, 0].float().cpu().numpy() for name, m in g.maps.items()}

    # a model that never moves its eyes and sees the whole image each time (FF-CNN) has no
    # fixation path: it is drawn as one view of the image
    single_view = (len(views) == 1 and tuple(views[0].shape[-2:]) == (height, width)
                   and bool((g.fixations[:, 0] == g.fixations[0, 0]).all())
                   and all(torch.equal(views[0][t], views[0][0]) for t in range(glimpses)))
    written = [_write_strip(out_path, picture, fixations, outlines, views, predictions, maps, map_glimpse,
                            mean, std, height, width, single_view=single_view)]
    if gif:
        written.append(_write_gif(gif_path, picture, fixations, outlines, views,
                                  predictions, mean, std, height, width))
    return written


def _write_strip(path: Path, *drawing, single_view: bool = False) -> Path:
    fig = _strip_figure(*drawing, single_view=single_view)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"), what="figure")
    return path


def _strip_figure(picture, fixations, outlines, views, predictions, maps, map_glimpse,
                  mean, std, height, width, single_view: bool = False):
    """The PNG of :func:`plot_glimpses`: the image with the fixation path (and the chosen
    glimpse's maps) above, with the legend of the path and the fields under them in a row of
    its own, and what each glimpse saw in the rows below."""
    n_glimpses = len(predictions)
    rows = 0 if single_view else len(views)
    cols = max(n_glimpses, 1)
    top_panels = 1 + len(maps)
    if single_view:
        fig = _canvas((3.2 * top_panels, 3.6))
        top = fig.add_gridspec(1, top_panels, wspace=0.15)
    else:
        kinds = len(outlines[0]) if outlines else 0
        # inches: the image, the legend (a line per entry), the glimpses (a row per glimpse kind)
        image_h, legend_h, glimpses_h = 3.0, 0.2 * (1 + kinds) + 0.1, 1.5 * rows
        fig = _canvas((max(1.5 * cols, 3.2 * top_panels), image_h + legend_h + glimpses_h + 0.9))
        outer = fig.add_gridspec(3, 1, height_ratios=[image_h, legend_h, glimpses_h], hspace=0.12)
        top = outer[0].subgridspec(1, top_panels, wspace=0.15)
        legend_ax = fig.add_subplot(outer[1])
        legend_ax.set_axis_off()
    ax = fig.add_subplot(top[0])
    ax.imshow(picture, interpolation="bilinear")
    if single_view:
        ax.set_title(f"one view of the whole image, no fixations: {predictions[-1]}", fontsize=9)
    else:
        for t in range(n_glimpses):
            _draw_outlines(ax, outlines[t], alpha=0.25)
        _draw_path(ax, fixations, n_glimpses - 1, height, width)
        ax.set_title(f"fixation path ({n_glimpses} glimpses): {predictions[-1]}", fontsize=9)
        _outline_legend(legend_ax, kinds)
    ax.set_xticks([])
    ax.set_yticks([])
    for i, (name, m) in enumerate(maps.items()):
        axm = fig.add_subplot(top[1 + i])
        axm.imshow(picture, interpolation="bilinear")
        axm.imshow(m, cmap="inferno", alpha=0.6, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                   interpolation="bilinear")
        if not single_view:
            _draw_path(axm, fixations, min(map_glimpse, n_glimpses) - 1, height, width)
        axm.set_title(f"{name} after glimpse {map_glimpse}" if not single_view else name, fontsize=9)
        axm.set_xticks([])
        axm.set_yticks([])
    if single_view:
        return fig
    bottom = outer[2].subgridspec(rows, cols, wspace=0.08, hspace=0.25)
    for r, view in enumerate(views):
        for t in range(n_glimpses):
            axg = fig.add_subplot(bottom[r, t])
            title = f"{t + 1}: {predictions[t]}" if r == 0 else None
            _show_glimpse(axg, view[t, 0], mean, std, title)
    return fig


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _write_gif(path: Path, picture, fixations, outlines, views, predictions, mean, std,
               height, width, frame_ms: int = 700) -> Path:
    frames = []
    for t in range(len(predictions)):
        fig = _canvas((3.2 + 1.9 * len(views), 3.4))
        grid = fig.add_gridspec(1, 1 + len(views), width_ratios=[1.7] + [1.0] * len(views), wspace=0.1,
                                left=0.03, right=0.97, top=0.9, bottom=0.03)
        ax = fig.add_subplot(grid[0])
        ax.imshow(picture, interpolation="bilinear")
        _draw_outlines(ax, outlines[t])
        _draw_path(ax, fixations, t, height, width)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"glimpse {t + 1}: {predictions[t]}", fontsize=9)
        for r, view in enumerate(views):
            _show_glimpse(fig.add_subplot(grid[1 + r]), view[t, 0], mean, std)
        frames.append(Image.fromarray(_render(fig)))
    atomic_write(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                 duration=frame_ms, loop=0), what="figure")
    return path
