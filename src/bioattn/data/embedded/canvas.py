"""Painting shapes on a canvas: bilinear control-point fields, windows around each shape
(:class:`Instances`: signed distance, textures), alpha blending, and the :class:`Layer` of
shapes a look paints."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .shapes import SHAPES
from .spec import TEXTURE_NAMES

TEXTURE_CONTRAST = 0.5       # a texture mixes an instance's first colour with this fraction of
                              # the way to its second one, so the silhouette stays whole


def _interp_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Left control point and weight of the right one, per output pixel, for linear
    interpolation of n_in control points spread across n_out pixels."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    return lo, (pos - lo).astype(np.float32)


def upsample(grids: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of (..., a, b) control grids to (..., h, w)."""
    lo, f = _interp_taps(h, grids.shape[-2])
    f = f[:, None]
    rows = grids[..., lo, :] * (1 - f) + grids[..., lo + 1, :] * f
    lo, f = _interp_taps(w, grids.shape[-1])
    return rows[..., lo] * (1 - f) + rows[..., lo + 1] * f


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The interpolation of :func:`_interp_taps` as a (n_out, n_in) matrix."""
    lo, f = _interp_taps(n_out, n_in)
    out = np.zeros((n_out, n_in), np.float32)
    out[np.arange(n_out), lo] = 1 - f
    out[np.arange(n_out), lo + 1] = f
    return out


_ROW_BLOCK = 32


def background_field(colours: np.ndarray, detail: np.ndarray, size: int) -> np.ndarray:
    """Smooth colour field (N, a, a, 3) plus brightness ripples (N, b, b), both bilinearly
    interpolated from their control points: (N, 3, size, size).

    Computed as ``W @ blockdiag(colours[c], detail) @ W.T`` with ``W = [W_a | W_b]``, the left
    product in blocks of 32 output rows: small matrix products, which BLAS runs on one thread
    (a multi-threaded BLAS inside every pool worker would only compete for the same cores).
    """
    n, a, b = len(colours), colours.shape[1], detail.shape[1]
    weights = np.concatenate([_interp_matrix(size, a), _interp_matrix(size, b)], axis=1)
    grid = np.zeros((n, 3, a + b, a + b), np.float32)
    grid[:, :, :a, :a] = np.moveaxis(colours, -1, 1)
    grid[:, :, a:, a:] = detail[:, None]
    blocks = -(-size // _ROW_BLOCK)
    left = np.zeros((blocks * _ROW_BLOCK, a + b), np.float32)
    left[:size] = weights
    right = grid @ weights.T                                          # (n, 3, a+b, size)
    field = left.reshape(blocks, _ROW_BLOCK, a + b) @ right[:, :, None]  # (n, 3, blocks, 32, size)
    field = field.reshape(n, 3, blocks * _ROW_BLOCK, size)
    return field if blocks * _ROW_BLOCK == size else np.ascontiguousarray(field[:, :, :size])


def lerp(lo: float, hi: float, u):
    return lo + (hi - lo) * u


class Instances:
    """Shapes to draw, one per image of the chunk, each computed in a square window of ``w``
    pixels. A window holds its whole shape, or the part of it inside the image: it is centred on
    the shape, then slid inside the image (``2 * radius + 4 <= w <= size``)."""

    def __init__(self, classes, cx, cy, radius, angle, w, size, image_rows=None):
        self.classes = np.asarray(classes, np.int64)
        self.angle, self.size = angle, size
        # which image of the chunk each instance belongs to
        self.image_rows = np.arange(len(self.classes)) if image_rows is None else image_rows
        self.cx, self.cy = np.asarray(cx, np.float64), np.asarray(cy, np.float64)
        self.radius = np.asarray(radius, np.float64)
        self.w = w
        self.x0 = np.clip(np.floor(self.cx).astype(np.int64) - w // 2, 0, size - w)
        self.y0 = np.clip(np.floor(self.cy).astype(np.int64) - w // 2, 0, size - w)
        grid = np.arange(w, dtype=np.float64) + 0.5
        # pixel offsets from the centre, y down: (N, 1, w) and (N, w, 1)
        self.dx = (self.x0[:, None] + grid - self.cx[:, None]).astype(np.float32)[:, None, :]
        self.dy = (self.y0[:, None] + grid - self.cy[:, None]).astype(np.float32)[:, :, None]
        c = np.cos(angle).astype(np.float32)[:, None, None]
        s = np.sin(angle).astype(np.float32)[:, None, None]
        inv_r = (1 / self.radius).astype(np.float32)[:, None, None]
        self.u = (c * self.dx + s * self.dy) * inv_r
        self.v = (s * self.dx - c * self.dy) * inv_r

    def moved(self, dx=0.0, dy=0.0, scale=1.0, turn=0.0) -> Instances:
        """The same shapes shifted by ``(dx, dy)`` pixels, scaled and turned (radians), each in
        its own window of the same side (``scale`` must leave the shape inside it)."""
        return Instances(self.classes, self.cx + dx, self.cy + dy, self.radius * scale,
                         self.angle + turn, self.w, self.size, self.image_rows)

    def _window_view(self, canvas: np.ndarray):
        """Writeable view of every window of ``canvas`` (images, [C,] size, size) and the index
        picking this instance's ones: ``view[index]`` is (N, [C,] w, w)."""
        axes = (canvas.ndim - 2, canvas.ndim - 1)
        view = sliding_window_view(canvas, (self.w, self.w), axis=axes, writeable=True)
        channels = (slice(None),) * (canvas.ndim - 3)
        return view, (self.image_rows, *channels, self.y0, self.x0)

    def gather(self, canvas: np.ndarray) -> np.ndarray:
        """Copy of each instance's window: (N, [C,] w, w)."""
        view, index = self._window_view(canvas)
        return view[index]

    def scatter(self, canvas: np.ndarray, values: np.ndarray) -> None:
        """Write (N, [C,] w, w) into each instance's window (one instance per image)."""
        view, index = self._window_view(canvas)
        view[index] = values

    def sdf(self, cut_angle=None, cut_offset=None) -> np.ndarray:
        """Signed distance in pixels, (N, w, w); optionally keeping one side of a line."""
        n, w = len(self.classes), self.w
        out = np.empty((n, w, w), np.float32)
        for k in np.unique(self.classes):
            sel = self.classes == k
            out[sel] = SHAPES[k](self.u[sel], self.v[sel])
        if cut_angle is not None:
            nx = np.cos(cut_angle).astype(np.float32)[:, None, None]
            ny = np.sin(cut_angle).astype(np.float32)[:, None, None]
            off = np.asarray(cut_offset, np.float32)[:, None, None]
            np.maximum(out, nx * self.u + ny * self.v - off, out=out)
        return out * self.radius.astype(np.float32)[:, None, None]

    def texture(self, kinds, params, noise_grids) -> np.ndarray:
        """Mix factor in [0, 1] between an instance's two colours, (N, w, w)."""
        n, w = len(self.classes), self.w
        out = np.zeros((n, w, w), np.float32)
        r = self.radius.astype(np.float32)
        angle, scale, phase, phase2 = (params[:, i].astype(np.float32) for i in range(4))
        for kind in np.unique(kinds):
            name = TEXTURE_NAMES[kind]
            sel = kinds == kind
            if name == "solid":
                continue
            ca = np.cos(angle[sel] * 2 * np.pi)[:, None, None]
            sa = np.sin(angle[sel] * 2 * np.pi)[:, None, None]
            dx, dy, rs = self.dx[sel], self.dy[sel], r[sel][:, None, None]
            along = ca * dx + sa * dy
            if name == "stripes":
                period = rs * lerp(0.35, 0.9, scale[sel])[:, None, None]
                wave = np.sin(along * (2 * np.pi / period) + phase[sel][:, None, None] * 2 * np.pi)
                t = 0.5 + wave * np.maximum(period / (2 * np.pi), 0.5)
            elif name == "checker":
                cell = rs * lerp(0.3, 0.7, scale[sel])[:, None, None]
                across = ca * dy - sa * dx
                wave = (np.sin(along * (np.pi / cell) + phase[sel][:, None, None] * 2 * np.pi)
                        * np.sin(across * (np.pi / cell) + phase2[sel][:, None, None] * 2 * np.pi))
                t = 0.5 + wave * np.maximum(cell / 2, 0.5)
            elif name == "noise":
                field = upsample(noise_grids[sel].astype(np.float32), w, w)
                t = 0.5 + (field - 0.5) * 3
            elif name == "split":
                t = 0.5 + along - (phase[sel] - 0.5)[:, None, None] * 0.6 * rs
            else:  # gradient
                t = 0.5 + along / (1.9 * rs)
            out[sel] = np.clip(t, 0, 1)
        return out


def blend(instances: Instances, canvas: np.ndarray, alpha, colour) -> None:
    """Paint ``colour`` ((N, C, w, w) or (N, C, 1, 1)) over each instance's window with
    coverage ``alpha`` (N, w, w)."""
    window = instances.gather(canvas)                     # (N, C, w, w)
    window += alpha[:, None] * (colour - window)
    instances.scatter(canvas, window)


def composite(instances: Instances, canvas: np.ndarray, alpha, c1, c2, mix) -> None:
    """Paint each instance, coloured ``c1 + TEXTURE_CONTRAST * mix * (c2 - c1)``, with
    coverage ``alpha``."""
    colour = c1[:, :, None, None] + mix[:, None] * (TEXTURE_CONTRAST * (c2 - c1))[:, :, None, None]
    blend(instances, canvas, alpha, colour)


def window_side(max_radius: float, size: int) -> int:
    """Side of the square windows holding shapes of radius up to ``max_radius`` pixels with
    their anti-aliased rim, whatever the sub-pixel position of the centre."""
    return min(size, 2 * math.ceil(max_radius + 2))


def pick_first_ok(ok: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per row, the first column where ``ok``, else the column with the best score."""
    return np.where(ok.any(axis=1), ok.argmax(axis=1), score.argmax(axis=1))


@dataclass
class Layer:
    """One shape per image of some rows of the chunk (a layer of fragments, or one object of
    every image), with everything a look needs to paint it."""

    inst: Instances
    sdf: np.ndarray               # signed distance in pixels, (N, w, w)
    slot: int                     # the shape's place among an image's shapes: objects first
    texture_kinds: np.ndarray     # (N,) index into TEXTURE_NAMES
    texture_params: np.ndarray    # (N, 4)
    noise_grid: np.ndarray        # (N, _NOISE_GRID, _NOISE_GRID)
    colours: np.ndarray           # fragments: (N, 2, 3) uniforms; objects: (N, 2, candidates, 3)
    is_object: bool
    cut: tuple[np.ndarray, np.ndarray] | None = None   # fragments: the half-plane kept

    @property
    def rows(self) -> np.ndarray:
        return self.inst.image_rows

    def texture(self) -> np.ndarray:
        return self.inst.texture(self.texture_kinds, self.texture_params, self.noise_grid)

    def sdf_of(self, inst: Instances) -> np.ndarray:
        """The signed distance of this layer's shapes placed as ``inst`` (e.g. moved)."""
        return inst.sdf() if self.cut is None else inst.sdf(*self.cut)
