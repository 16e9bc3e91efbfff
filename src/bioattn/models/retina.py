"""A differentiable retina: a radially symmetric warp centred on a fixation.

The retinal image is a square of ``out_size`` pixels. Its pixels have *retinal coordinates*
``u = (u_x, u_y)`` in ``[-1, 1]^2`` (pixel centres at ``(2i + 1) / out_size - 1``, the
``grid_sample`` convention with ``align_corners=False``). Images use the same convention:
*image coordinates* ``p`` in ``[-1, 1]^2``, x (width) first then y (height), ``(-1, -1)`` the
top-left corner of the image.

Radial profile. With ``rho = |u|`` the retinal eccentricity, the retina samples the image at

    p = fixation + (s_x, s_y) * G(rho) * u / rho
    G(rho) = rho                                     for rho <= fovea
    G(rho) = fovea + (exp(falloff * (rho - fovea)) - 1) / falloff     beyond

``G`` is continuous with a continuous slope: inside the fovea the warp is linear, beyond it the
spacing between neighbouring samples grows like ``exp(falloff * (rho - fovea))``, a log-polar-like
periphery. ``falloff = 0`` makes the whole retina linear: a plain crop, resized by ``scale``.
``(s_x, s_y) = scale * out_size / (W, H)`` so that in the fovea one retinal pixel spans ``scale``
image pixels along both axes: ``scale = 1`` is full resolution.

Anti-aliasing. A sparse periphery sampled from the full-resolution image would alias. With
``antialias=True`` the retina samples a pyramid of 2x box-filtered copies of the image and blends,
per retinal pixel, the two levels that bracket ``log2`` of its sample spacing (trilinear
"mip-map" sampling), so the periphery is also blurred, as in a biological retina. Pixels whose
spacing is at most one image pixel read the full-resolution image only.

Inverse mapping. :meth:`Retina.to_retina` takes image points to retinal coordinates (closed form:
``G^{-1}(r) = fovea + log(1 + falloff * (r - fovea)) / falloff``); :meth:`Retina.to_image_grid`
uses it to carry a map computed on the retinal image (or a feature map of it) back onto a grid
over the whole image, and :meth:`Retina.remap` carries a map from one fixation's retinal frame to
another's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BioattnError

_EPS = 1e-6


def _pixel_centres(n: int, device=None, dtype=None) -> torch.Tensor:
    return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1


def _scale_xy(v: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    return torch.stack([v[..., 0] * sx, v[..., 1] * sy], dim=-1)


def coordinate_grid(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """Cell centres of an ``height x width`` grid over ``[-1, 1]^2``: ``(height, width, 2)``, x then y."""
    ys = _pixel_centres(height, device, dtype)
    xs = _pixel_centres(width, device, dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def check_fixations(fixations: torch.Tensor, batch: int | None = None) -> None:
    """Fixations must be a ``(B, 2)`` tensor of finite image coordinates in ``[-1, 1]``."""
    if not isinstance(fixations, torch.Tensor) or fixations.dim() != 2 or fixations.shape[1] != 2:
        shape = tuple(fixations.shape) if isinstance(fixations, torch.Tensor) else type(fixations).__name__
        raise BioattnError(f"fixations must have shape (B, 2) (x, y in [-1, 1]); got {shape}")
    if batch is not None and fixations.shape[0] != batch:
        raise BioattnError(f"{fixations.shape[0]} fixations for a batch of {batch} images")
    bad = ~(fixations.detach().abs() <= 1 + _EPS)
    if bool(bad.any()):
        value = fixations.detach()[bad.any(dim=1)][0].tolist()
        raise BioattnError(
            f"fixation ({value[0]:.3g}, {value[1]:.3g}) lies outside the image: "
            "fixations are image coordinates in [-1, 1]"
        )


def falloff_for_field(field: float, fovea: float, foveal_scale: float) -> float:
    """The fall-off that makes the retina's edge (``u = (1, 0)``) reach ``field`` image units
    from the fixation, given the fovea radius and the fovea's magnification ``foveal_scale``
    (image-normalised units per retinal-normalised unit, ``scale * out_size / image_size``)."""
    if field <= 0 or foveal_scale <= 0:
        raise BioattnError(
            f"retina field and scale must be positive; got field={field}, scale={foveal_scale}")
    reach = field / foveal_scale  # the value G(1) must take
    if reach < 1 - 1e-9:
        raise BioattnError(
            f"a retinal field of {field:g} is smaller than the linear field {foveal_scale:g} of the "
            "fovea's resolution: raise the field, or lower the retina scale or size"
        )
    if fovea >= 1 or reach <= 1 + 1e-9:
        if reach > 1 + 1e-9:
            raise BioattnError(
                f"a fovea of radius {fovea:g} >= 1 covers the whole retina: no fall-off can widen the field")
        return 0.0

    def reach_of(a: float) -> float:
        return fovea + math.expm1(a * (1 - fovea)) / a

    lo, hi = 1e-9, 1.0
    while reach_of(hi) < reach:
        hi *= 2
        if hi > 1e4:
            raise BioattnError(f"retina field {field:g} is out of reach for fovea {fovea:g}")
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if reach_of(mid) < reach:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class Retina(nn.Module):
    """Retinal sampling around fixations (see the module docstring for the geometry).

    Args:
        out_size: side of the (square) retinal image in pixels.
        fovea: radius of the linear, full-resolution fovea, as a fraction of the retinal image's
            half-width (0: no linear part; >= sqrt(2): no fall-off anywhere).
        falloff: growth rate of the sample spacing beyond the fovea (0: plain crop).
        scale: image pixels per retinal pixel inside the fovea (1: full resolution).
        antialias: blur the periphery in proportion to its sample spacing (mip-map pyramid).
        padding_mode: what the retina sees outside the image (``grid_sample`` modes).
        max_levels: at most this many pyramid levels (level 0 is the image itself).
    """

    def __init__(
        self,
        out_size: int,
        fovea: float = 0.5,
        falloff: float = 3.0,
        scale: float = 1.0,
        antialias: bool = True,
        padding_mode: str = "zeros",
        max_levels: int = 6,
    ):
        super().__init__()
        if int(out_size) != out_size or out_size < 1:
            raise BioattnError(f"retina out_size must be a positive integer; got {out_size}")
        if fovea < 0:
            raise BioattnError(f"retina fovea must be >= 0; got {fovea}")
        if falloff < 0:
            raise BioattnError(f"retina falloff must be >= 0 (0 = plain crop); got {falloff}")
        if scale <= 0:
            raise BioattnError(f"retina scale must be > 0; got {scale}")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise BioattnError(f"retina padding_mode must be zeros, border or reflection; got {padding_mode}")
        self.out_size = int(out_size)
        self.fovea = float(fovea)
        self.falloff = float(falloff)
        self.scale = float(scale)
        self.antialias = bool(antialias)
        self.padding_mode = padding_mode
        self.max_levels = max(1, int(max_levels))
        self._level_cache: dict = {}
        self._grid_cache: dict = {}

    def extra_repr(self) -> str:
        return (f"out_size={self.out_size}, fovea={self.fovea:g}, falloff={self.falloff:.4g}, "
                f"scale={self.scale:g}, antialias={self.antialias}")

    # ------------------------------------------------------------------ radial profile
    def expand(self, rho: torch.Tensor) -> torch.Tensor:
        """``G(rho)``: retinal eccentricity to image eccentricity (in retinal units)."""
        f, a = self.fovea, self.falloff
        if a == 0:
            return rho
        return torch.clamp(rho, max=f) + torch.expm1(a * torch.relu(rho - f)) / a

    def contract(self, r: torch.Tensor) -> torch.Tensor:
        """``G^{-1}(r)``: image eccentricity (in retinal units) to retinal eccentricity."""
        f, a = self.fovea, self.falloff
        if a == 0:
            return r
        return torch.clamp(r, max=f) + torch.log1p(a * torch.relu(r - f)) / a

    def magnification(self, rho: torch.Tensor) -> torch.Tensor:
        """``G'(rho)``: radial sample spacing relative to the fovea's (1 inside the fovea)."""
        if self.falloff == 0:
            return torch.ones_like(rho)
        return torch.exp(self.falloff * torch.relu(rho - self.fovea))

    def spacing(self, rho: torch.Tensor) -> torch.Tensor:
        """Distance in image pixels between neighbouring retinal samples at eccentricity ``rho``
        (the radial spacing, which for this convex profile is the larger of radial and tangential)."""
        return self.scale * self.magnification(rho)

    def _axis_scales(self, image_hw: Sequence[int]) -> tuple[float, float]:
        h, w = int(image_hw[0]), int(image_hw[1])
        return self.scale * self.out_size / w, self.scale * self.out_size / h

    # ------------------------------------------------------------------ coordinates
    def to_image(self, u: torch.Tensor, fixations: torch.Tensor, image_hw: Sequence[int]) -> torch.Tensor:
        """Retinal coordinates ``u (..., 2)`` to image coordinates, for fixations broadcastable
        against ``u`` (e.g. ``(B, 1, 1, 2)`` against a ``(h, w, 2)`` grid)."""
        sx, sy = self._axis_scales(image_hw)
        rho = u.norm(dim=-1, keepdim=True)
        ratio = torch.where(rho > _EPS, self.expand(rho) / rho.clamp(min=_EPS), torch.ones_like(rho))
        return fixations + _scale_xy(u * ratio, sx, sy)

    def to_retina(self, p: torch.Tensor, fixations: torch.Tensor, image_hw: Sequence[int]) -> torch.Tensor:
        """Image coordinates ``p (..., 2)`` to retinal coordinates (the inverse of :meth:`to_image`)."""
        sx, sy = self._axis_scales(image_hw)
        e = _scale_xy(p - fixations, 1 / sx, 1 / sy)
        r = e.norm(dim=-1, keepdim=True)
        ratio = torch.where(r > _EPS, self.contract(r) / r.clamp(min=_EPS), torch.ones_like(r))
        return e * ratio

    def grid(self, fixations: torch.Tensor, image_hw: Sequence[int], size: int | None = None) -> torch.Tensor:
        """The sampling grid ``(B, n, n, 2)``: image coordinates of every retinal pixel
        (``n = out_size`` unless ``size`` gives a coarser or finer retinal grid)."""
        n = self.out_size if size is None else int(size)
        u = coordinate_grid(n, n, fixations.device, fixations.dtype)
        return self.to_image(u, fixations[:, None, None, :], image_hw)

    def _cached(self, key: tuple, make) -> torch.Tensor:
        """Constant grids reused across calls (keyed by sizes, device and dtype)."""
        if key not in self._grid_cache:
            if len(self._grid_cache) > 32:
                self._grid_cache.clear()
            self._grid_cache[key] = make()
        return self._grid_cache[key]

    def retinal_coordinates_of(self, fixations: torch.Tensor, image_hw: Sequence[int],
                               grid_hw: Sequence[int]) -> torch.Tensor:
        """Retinal coordinates ``(B, gh, gw, 2)`` of the cell centres of a grid over the image."""
        gh, gw = int(grid_hw[0]), int(grid_hw[1])
        p = self._cached(("cells", gh, gw, fixations.device, fixations.dtype),
                         lambda: coordinate_grid(gh, gw, fixations.device, fixations.dtype))
        return self.to_retina(p, fixations[:, None, None, :], image_hw)

    def to_image_grid(self, maps: torch.Tensor, fixations: torch.Tensor, image_hw: Sequence[int],
                      grid_hw: Sequence[int], padding_mode: str = "zeros") -> torch.Tensor:
        """Carry maps ``(B, C, h, w)`` laid out on the retinal image (any resolution: a feature map
        of the retinal image covers the same square) back onto a ``grid_hw`` grid over the image.
        Cells outside the retina's field get ``padding_mode``'s value."""
        u = self.retinal_coordinates_of(fixations, image_hw, grid_hw).to(maps.dtype)
        return F.grid_sample(maps, u, mode="bilinear", padding_mode=padding_mode, align_corners=False)

    def remap(self, maps: torch.Tensor, old_fixations: torch.Tensor, new_fixations: torch.Tensor,
              image_hw: Sequence[int]) -> torch.Tensor:
        """Carry maps ``(B, C, h, w)`` from the retinal frame of ``old_fixations`` into that of
        ``new_fixations`` (what lay at an image point stays at that point); places the old
        retina never covered get zeros."""
        h, w = maps.shape[-2:]
        dev, dt = maps.device, new_fixations.dtype
        offsets = self._cached(  # image offsets of the retinal cells from the fixation
            ("offsets", h, w, int(image_hw[0]), int(image_hw[1]), dev, dt),
            lambda: self.to_image(coordinate_grid(h, w, dev, dt), torch.zeros(2, device=dev, dtype=dt),
                                  image_hw))
        p = new_fixations[:, None, None, :] + offsets
        u_old = self.to_retina(p, old_fixations[:, None, None, :], image_hw).to(maps.dtype)
        return F.grid_sample(maps, u_old, mode="bilinear", padding_mode="zeros", align_corners=False)

    # ------------------------------------------------------------------ sampling
    def num_levels(self, image_hw: Sequence[int]) -> int:
        """Pyramid levels the retina reads for images of this size."""
        if not self.antialias:
            return 1
        widest = self.scale * math.exp(self.falloff * max(0.0, math.sqrt(2.0) - self.fovea))
        needed = 1 + max(0, math.ceil(math.log2(max(widest, 1.0)) - 1e-9))
        smallest = min(int(image_hw[0]), int(image_hw[1]))
        possible = 1 + max(0, int(math.floor(math.log2(max(smallest, 1)))))
        return max(1, min(needed, possible, self.max_levels))

    def pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Box-filtered 2x pyramid of ``images`` (reuse it for several fixations on one image).
        A level with an odd side pools its last row or column alone (a half-pixel shift there)."""
        levels = [images]
        for _ in range(self.num_levels(images.shape[-2:]) - 1):
            x = levels[-1]
            if x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
                x = (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) * 0.25
            else:
                x = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
            levels.append(x)
        return levels

    def level_weights(self, n_levels: int, device=None, dtype=None) -> torch.Tensor:
        """Blend weights ``(n_levels, n, n)`` of the pyramid levels for every retinal pixel."""
        u = coordinate_grid(self.out_size, self.out_size, device, dtype)
        rho = u.norm(dim=-1)
        level = torch.log2(self.spacing(rho).clamp(min=1.0)).clamp(max=n_levels - 1)
        ks = torch.arange(n_levels, device=device, dtype=dtype)[:, None, None]
        return torch.relu(1 - (level[None] - ks).abs())

    def check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise BioattnError(f"images must have shape (B, C, H, W); got {shape}")
        h, w = images.shape[-2:]
        if h < self.out_size or w < self.out_size:
            raise BioattnError(
                f"image {h}x{w} is smaller than the retina's output {self.out_size}x{self.out_size}"
            )

    def forward(self, images: torch.Tensor, fixations: torch.Tensor,
                pyramid: list[torch.Tensor] | None = None, check: bool = True) -> torch.Tensor:
        """Retinal images ``(B, C, out_size, out_size)`` of ``images (B, C, H, W)`` fixated at
        ``fixations (B, 2)`` (image coordinates). ``pyramid`` reuses :meth:`pyramid`'s output;
        ``check=False`` skips the input checks (for callers that already made them)."""
        if check:
            self.check_images(images)
            check_fixations(fixations, images.shape[0])
        if pyramid is None:
            pyramid = self.pyramid(images)
        b, c = images.shape[:2]
        n = self.out_size
        fix = fixations.to(images.dtype)[:, None, :]
        levels = self._level_table(len(pyramid), images.shape[-2:], images.device, images.dtype)
        if len(levels) == 1 and levels[0][1] is None:
            grid = (fix + levels[0][3][None]).reshape(b, n, n, 2)
            return F.grid_sample(pyramid[levels[0][0]], grid, mode="bilinear",
                                 padding_mode=self.padding_mode, align_corners=False)
        out = images.new_zeros(b, c, n * n)
        for k, index, weight, offsets in levels:
            grid = (fix + offsets[None])[:, None]  # (B, 1, n_k, 2)
            sample = F.grid_sample(pyramid[k], grid, mode="bilinear", padding_mode=self.padding_mode,
                                   align_corners=False)
            out.index_add_(2, index, sample[:, :, 0] * weight)
        return out.reshape(b, c, n, n)

    def _level_table(self, n_levels: int, image_hw: Sequence[int], device, dtype) -> list:
        """Per pyramid level read: (level, retinal pixel indices or None for all, blend weights,
        offsets from the fixation in image coordinates); cached per image size, device and dtype."""
        key = (n_levels, int(image_hw[0]), int(image_hw[1]), device, dtype)
        if key not in self._level_cache:
            if len(self._level_cache) > 16:
                self._level_cache.clear()
            u = coordinate_grid(self.out_size, self.out_size, dtype=torch.float64).reshape(-1, 2)
            offsets = self.to_image(u, torch.zeros_like(u), image_hw)
            weights = self.level_weights(n_levels, dtype=torch.float64).flatten(1)
            table = []
            for k in range(n_levels):
                index = weights[k].nonzero().squeeze(1)
                if index.numel() == weights.shape[1] and bool((weights[k] == 1).all()):
                    table = [(k, None, None, offsets)]
                    break
                if index.numel():
                    table.append((k, index, weights[k, index], offsets[index]))
            self._level_cache[key] = [
                (k, None if i is None else i.to(device), None if w is None else w.to(device, dtype),
                 o.to(device, dtype)) for k, i, w, o in table
            ]
        return self._level_cache[key]


def retina(images: torch.Tensor, fixations: torch.Tensor, out_size: int, **settings) -> torch.Tensor:
    """Retinal images ``(B, C, out_size, out_size)`` of ``images (B, C, H, W)`` around
    ``fixations (B, 2)`` (image coordinates in ``[-1, 1]``, x then y); ``settings`` are those of
    :class:`Retina` (``fovea``, ``falloff``, ``scale``, ``antialias``, ``padding_mode``)."""
    return Retina(out_size, **settings)(images, fixations)
