"""The ten shape classes as signed distances in the object's local frame (unit radius, y up);
negative inside. Every shape fits in the disk of radius 1."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .spec import CLASS_NAMES


def _box(x, y, hx, hy):
    return np.maximum(np.abs(x) - hx, np.abs(y) - hy)


def _radius(u, v):
    return np.sqrt(u * u + v * v)


def _sdf_disk(u, v):
    return _radius(u, v) - 0.92


def _sdf_ring(u, v):
    return np.abs(_radius(u, v) - 0.70) - 0.24


def _sdf_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - 0.68


_COS30 = math.cos(math.pi / 6)


def _sdf_triangle(u, v):
    # equilateral, circumradius 0.98, apex up: inradius 0.49
    side = _COS30 * np.abs(u) + 0.5 * v
    return np.maximum(side, -v) - 0.49


_STAR_TIP, _STAR_INNER, _STAR_POINTS = 0.98, 0.45, 5
_STAR_SECTOR = 2 * math.pi / _STAR_POINTS
# Edge of the star inside one half-sector: from the tip (tip, 0) to the inner vertex.
_ex = _STAR_INNER * math.cos(_STAR_SECTOR / 2) - _STAR_TIP
_ey = _STAR_INNER * math.sin(_STAR_SECTOR / 2)
_en = math.hypot(_ex, _ey)
_STAR_NORMAL = (_ey / _en, -_ex / _en)   # points away from the centre


def _sdf_star(u, v):
    r = _radius(u, v)
    angle = np.arctan2(u, v)  # 0 along +v: a tip points up
    folded = np.abs(np.mod(angle + _STAR_SECTOR / 2, _STAR_SECTOR) - _STAR_SECTOR / 2)
    x, y = r * np.cos(folded), r * np.sin(folded)
    return _STAR_NORMAL[0] * (x - _STAR_TIP) + _STAR_NORMAL[1] * y


def _sdf_plus(u, v):
    return np.minimum(_box(u, v, 0.92, 0.30), _box(u, v, 0.30, 0.92))


def _sdf_crescent(u, v):
    return np.maximum(_radius(u, v) - 0.92, 0.74 - _radius(u - 0.42, v))


def _sdf_l_shape(u, v):
    return np.minimum(_box(u + 0.40, v, 0.26, 0.66), _box(u, v + 0.40, 0.66, 0.26))


def _sdf_t_shape(u, v):
    return np.minimum(_box(u, v - 0.45, 0.70, 0.24), _box(u, v + 0.055, 0.24, 0.745))


_HEART_A, _HEART_C = 0.70, -0.0725   # diamond |u| + |v - c| <= a with two disks on its top edges


def _sdf_heart(u, v):
    diamond = (np.abs(u) + np.abs(v - _HEART_C) - _HEART_A) * (1 / math.sqrt(2))
    lobes = _radius(np.abs(u) - _HEART_A / 2, v - (_HEART_C + _HEART_A / 2)) - _HEART_A / math.sqrt(2)
    return np.minimum(diamond, lobes)


SHAPES: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _sdf_disk, _sdf_ring, _sdf_square, _sdf_triangle, _sdf_star,
    _sdf_plus, _sdf_crescent, _sdf_l_shape, _sdf_t_shape, _sdf_heart,
)
assert len(SHAPES) == len(CLASS_NAMES)
