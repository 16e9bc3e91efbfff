"""Looks: how a scene's shapes are painted. The original look (no domain) and the four domains
of :data:`EMBEDDED_DOMAINS` (photo, cartoon, sketch, painting)."""

from __future__ import annotations

import math

import numpy as np

from .canvas import TEXTURE_CONTRAST, Layer, background_field, blend, composite, lerp, pick_first_ok, upsample
from .spec import EMBEDDED_DOMAINS, MAX_DISTRACTORS

_MIN_CONTRAST = 0.4           # RGB distance in [0, 1] units
_BACKGROUND_LEVELS = (0.0, 0.35)   # range of each channel of the background's control points
_FOREGROUND_LEVELS = (0.5, 1.0)    # range of each channel of object and fragment colours
_PIXEL_GRAIN = 0.02            # amplitude of the uniform pixel noise


def _contrasting_colours(layer: Layer, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An object's two colours: of its candidates (light, as fragments), the first that stands
    out from the band of pixels just outside it, else the one that stands out most."""
    sdf, rows = layer.sdf, np.arange(len(layer.sdf))
    band = ((sdf > 0) & (sdf <= 2.5)).astype(np.float32)
    under = layer.inst.gather(canvas)                        # (n, 3, w, w)
    around = np.einsum("ncij,nij->nc", under, band) / np.maximum(
        band.sum(axis=(1, 2)), 1)[:, None]
    picked = []
    for c in range(2):
        cand = lerp(*_FOREGROUND_LEVELS, layer.colours[:, c])   # (n, C, 3)
        dist = np.linalg.norm(cand - around[:, None, :], axis=-1)
        picked.append(cand[rows, pick_first_ok(dist >= _MIN_CONTRAST, dist)].astype(np.float32))
    return picked[0], picked[1]


def _layer_colours(layer: Layer, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A shape's two colours as in the original look: fragments' drawn, objects' contrasting."""
    if layer.is_object:
        return _contrasting_colours(layer, canvas)
    colours = lerp(*_FOREGROUND_LEVELS, layer.colours).astype(np.float32)
    return colours[:, 0], colours[:, 1]


def _to_uint8(canvas: np.ndarray, grain: np.ndarray | None, amplitude: float) -> np.ndarray:
    """(N, C, s, s) in [0, 1] to uint8 (N, s, s, C), with uniform grain of ``amplitude`` from
    random bytes ``grain`` (None: no grain): after adding 0.5 and clipping to [0, 255.5), the
    conversion's truncation is the floor."""
    levels = amplitude * 255
    canvas *= 255
    if grain is None:
        canvas += np.float32(0.5)
    else:
        canvas += grain * np.float32(2 * levels / 255) + np.float32(0.5 - levels)
    np.clip(canvas, 0, 255.49, out=canvas)
    return canvas.astype(np.uint8).transpose(0, 2, 3, 1).copy()


def _offsets_from_centre(layer: Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel of the windows, the offset from the shape's centre in units of its radius,
    (N, 1, w) and (N, w, 1), and the radius in pixels (N, 1, 1)."""
    r = layer.inst.radius.astype(np.float32)[:, None, None]
    return layer.inst.dx / r, layer.inst.dy / r, r


# Light falls from the upper left (image x right, y down), as a unit vector towards the light.
_LIGHT = (-math.sqrt(0.5), -math.sqrt(0.5))
_INK = np.array([0.06, 0.05, 0.08], np.float32)    # cartoon outlines


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(N,) hue, saturation and value in [0, 1] to (N, 3) RGB."""
    k = (np.array([5, 3, 1], np.float32) + hue[:, None] * 6) % 6
    return value[:, None] * (1 - saturation[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))


def _blur(canvas: np.ndarray, passes: int) -> np.ndarray:
    """``passes`` times the separable [1, 2, 1] / 4 filter over the last two axes (edges
    repeated): a Gaussian of standard deviation ``sqrt(passes / 2)`` pixels."""
    quarter, half = np.float32(0.25), np.float32(0.5)
    for _ in range(passes):
        for axis in (canvas.ndim - 1, canvas.ndim - 2):
            def part(index, axis=axis):
                return (slice(None),) * axis + (index,)
            out = np.empty_like(canvas)
            out[part(slice(1, -1))] = ((canvas[part(slice(None, -2))] + canvas[part(slice(2, None))]) * quarter
                                       + canvas[part(slice(1, -1))] * half)
            out[part(0)] = canvas[part(0)] * (1 - quarter) + canvas[part(1)] * quarter
            out[part(-1)] = canvas[part(-1)] * (1 - quarter) + canvas[part(-2)] * quarter
            canvas = out
    return canvas


class Look:
    """The original look (no domain): light shapes, textured with two colours, on a dark
    smooth colour field with brightness ripples, and uniform pixel grain."""

    def layout(self, n_obj: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the uniform numbers the look draws per image, besides the scene's own."""
        return {}

    def background(self, rnd: dict, style: dict, s: int) -> np.ndarray:
        """The canvas before any shape is painted, (N, C, s, s) float32 in [0, 1]."""
        return background_field(lerp(*_BACKGROUND_LEVELS, rnd["background"]), (rnd["detail"] - 0.5) * 0.25, s)

    def paint(self, canvas: np.ndarray, layer: Layer, style: dict) -> None:
        c1, c2 = _layer_colours(layer, canvas)
        composite(layer.inst, canvas, np.clip(0.5 - layer.sdf, 0, 1), c1, c2, layer.texture())

    def finish(self, canvas: np.ndarray, rnd: dict, style: dict) -> np.ndarray:
        """The painted canvas as uint8 images (N, s, s, 3)."""
        return _to_uint8(canvas, rnd["grain"], _PIXEL_GRAIN)


class _PhotoLook(Look):
    """"photo": the original look made richer. The ground gets a fine mottled texture and an
    illumination ramp; every shape casts a soft drop shadow, is shaded as a bevelled solid lit
    from the upper left (bright rim towards the light, dark rim away from it, a gentle ramp
    across it) and has a soft specular highlight."""

    def layout(self, n_obj):
        return {"mottle": (12, 12), "ramp": (2,)}

    def background(self, rnd, style, s):
        field = super().background(rnd, style, s)
        field += ((upsample(style["mottle"], s, s) - 0.5) * 0.14)[:, None]
        angle = style["ramp"][:, 0] * 2 * np.pi
        pos = (np.arange(s, dtype=np.float32) + 0.5) / s - 0.5
        along = (np.cos(angle)[:, None, None] * pos[None, None, :]
                 + np.sin(angle)[:, None, None] * pos[None, :, None])      # (N, s, s) in [-0.71, 0.71]
        field *= (1 + along * lerp(0.3, 0.8, style["ramp"][:, 1])[:, None, None])[:, None]
        return np.clip(field, 0, 1, out=field)

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        r = inst.radius.astype(np.float32)[:, None, None]
        # drop shadow, down and to the right, away from the light
        offset = 0.14 * inst.radius
        shadow = inst.moved(offset, offset)
        s_sdf = layer.sdf_of(shadow)
        px = inst.size / 64
        darkness = 0.5 * np.clip((1.5 * px - s_sdf) / (3 * px), 0, 1)
        window = shadow.gather(canvas)
        window *= 1 - darkness[:, None]
        shadow.scatter(canvas, window)
        # textured colour, then shading
        c1, c2 = _layer_colours(layer, canvas)
        mix = layer.texture()
        colour = c1[:, :, None, None] + mix[:, None] * (TEXTURE_CONTRAST * (c2 - c1))[:, :, None, None]
        gy, gx = np.gradient(sdf, axis=(1, 2))
        norm = np.maximum(np.sqrt(gx * gx + gy * gy), 1e-3)
        facing = (gx * _LIGHT[0] + gy * _LIGHT[1]) / norm                 # outward normal . light
        rim = 1 - np.clip(-sdf / (0.35 * r), 0, 1)
        u, v, _ = _offsets_from_centre(layer)
        towards = np.clip(u * _LIGHT[0] + v * _LIGHT[1], -1, 1)
        shade = 1 + 0.45 * rim * facing + 0.18 * towards
        spot = np.exp(-((u - 0.4 * _LIGHT[0]) ** 2 + (v - 0.4 * _LIGHT[1]) ** 2) / 0.08)
        colour = colour * shade[:, None] + (0.35 * spot)[:, None] * (1 - colour)
        blend(inst, canvas, np.clip(0.5 - sdf, 0, 1), np.clip(colour, 0, 1))


class _CartoonLook(Look):
    """"cartoon": flat, saturated fills (random hue) with a dark outline and a hard-edged cel
    shadow on the side away from the light, on a plain pale background; no grain."""

    def layout(self, n_obj):
        return {"paper": (3,), "fill": (n_obj + MAX_DISTRACTORS, 3)}

    def background(self, rnd, style, s):
        colour = lerp(0.72, 0.96, style["paper"])                       # (N, 3)
        return np.broadcast_to(colour[:, :, None, None], (len(colour), 3, s, s)).copy()

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        px = inst.size / 64
        hsv = style["fill"][layer.rows, layer.slot]                     # (N, 3)
        fill = _hsv_to_rgb(hsv[:, 0], lerp(0.75, 1.0, hsv[:, 1]), lerp(0.8, 1.0, hsv[:, 2]))
        u, v, r = _offsets_from_centre(layer)
        towards = (u * _LIGHT[0] + v * _LIGHT[1]) * r                     # pixels towards the light
        shade = 1 - 0.22 * np.clip(0.5 - (towards + 0.3 * r), 0, 1)
        colour = fill[:, :, None, None] * shade[:, None]
        blend(inst, canvas, np.clip(0.5 - sdf, 0, 1), colour)
        width = 1.7 * px
        outline = np.clip(width / 2 + 0.5 - np.abs(sdf), 0, 1)
        blend(inst, canvas, outline, _INK[None, :, None, None])

    def finish(self, canvas, rnd, style):
        return _to_uint8(canvas, None, 0.0)


class _SketchLook(Look):
    """"sketch": grey pencil strokes on light paper. Each shape's contour is drawn twice, once
    exactly and once slightly off (shifted, scaled, turned), with a pressure that varies along
    it; some shapes are hatched inside with parallel lines. A shape hides the strokes beneath
    it (its inside is paper). Greyscale: the three channels are equal."""

    def layout(self, n_obj):
        n_shapes = n_obj + MAX_DISTRACTORS
        return {"paper": (1,), "fibres": (16, 16), "stroke": (n_shapes, 8),
                "pressure": (n_shapes, 5, 5)}

    def background(self, rnd, style, s):
        paper = lerp(0.87, 0.97, style["paper"][:, 0])
        field = paper[:, None, None] + (upsample(style["fibres"], s, s) - 0.5) * 0.05
        return field[:, None].astype(np.float32)                        # (N, 1, s, s)

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        px = inst.size / 64
        p = style["stroke"][layer.rows, layer.slot]                     # (N, 8)
        paper = lerp(0.87, 0.97, style["paper"][layer.rows, 0])
        blend(inst, canvas, np.clip(0.5 - sdf, 0, 1), paper[:, None, None, None])
        width = 1.1 * px
        line = np.clip(width / 2 + 0.5 - np.abs(sdf), 0, 1)
        again = inst.moved((p[:, 0] - 0.5) * 1.6 * px, (p[:, 1] - 0.5) * 1.6 * px,
                           scale=1 + (p[:, 2] - 0.5) * 0.08, turn=(p[:, 3] - 0.5) * 0.12)
        second = np.clip(width / 2 + 0.5 - np.abs(layer.sdf_of(again)), 0, 1)
        pressure = lerp(0.55, 0.85, p[:, 4])[:, None, None] * (
            0.55 + 0.45 * upsample(style["pressure"][layer.rows, layer.slot], inst.w, inst.w))
        # hatching: parallel lines inside, off the contour
        angle = p[:, 5] * np.pi
        along = np.cos(angle)[:, None, None] * inst.dx + np.sin(angle)[:, None, None] * inst.dy
        period = lerp(2.5, 4.0, p[:, 6])[:, None, None] * px
        to_line = np.abs(np.mod(along / period, 1) - 0.5) * period
        hatch = np.clip(0.4 * px + 0.5 - to_line, 0, 1) * np.clip(-sdf - 1.5 * px, 0, 1)
        strength = np.clip(lerp(-0.3, 0.6, p[:, 7]), 0, None)[:, None, None]   # a third unhatched
        keep = (1 - pressure * line) * (1 - 0.7 * pressure * second) * (1 - strength * hatch)
        window = inst.gather(canvas)
        window *= keep[:, None]
        inst.scatter(canvas, window)

    def finish(self, canvas, rnd, style):
        grey = _to_uint8(canvas, rnd["grain"][:, :1], 0.015)             # (N, s, s, 1)
        return np.repeat(grey, 3, axis=-1)


class _PaintingLook(Look):
    """"painting": colours laid on in blotches and brush strokes. The ground is a smooth field
    of mid tones (lighter than the original look's) with strong colour blotches; each shape is
    painted with its colours plus per-channel blotches, with a wobbly, soft edge; coloured brush
    streaks (horizontal or vertical per image) then modulate the whole canvas, which is finally
    blurred (edges soften over about two pixels)."""

    def layout(self, n_obj):
        n_shapes = n_obj + MAX_DISTRACTORS
        return {"blotches": (3, 6, 6), "streaks": (3, 24, 6), "direction": (1,),
                "shape_blotches": (n_shapes, 3, 4, 4), "wobble": (n_shapes, 5, 5)}

    def background(self, rnd, style, s):
        field = background_field(lerp(0.15, 0.5, rnd["background"]), (rnd["detail"] - 0.5) * 0.25, s)
        field += (upsample(style["blotches"], s, s) - 0.5) * 0.4
        return np.clip(field, 0, 1, out=field)

    def paint(self, canvas, layer, style):
        inst, sdf = layer.inst, layer.sdf
        px = inst.size / 64
        c1, c2 = _layer_colours(layer, canvas)
        mix = layer.texture()
        colour = c1[:, :, None, None] + mix[:, None] * (TEXTURE_CONTRAST * (c2 - c1))[:, :, None, None]
        blotches = upsample(style["shape_blotches"][layer.rows, layer.slot], inst.w, inst.w)
        colour = np.clip(colour + (blotches - 0.5) * 0.3, 0, 1)
        wobble = (upsample(style["wobble"][layer.rows, layer.slot], inst.w, inst.w) - 0.5) * 2.5 * px
        blend(inst, canvas, np.clip(0.5 - (sdf + wobble) / (1.5 * px), 0, 1), colour)

    def finish(self, canvas, rnd, style):
        s = canvas.shape[-1]
        vertical = style["direction"][:, 0] < 0.5
        streaks = np.empty_like(canvas)                                   # (N, 3, s, s)
        streaks[~vertical] = upsample(style["streaks"][~vertical], s, s)   # along x
        streaks[vertical] = upsample(style["streaks"][vertical].swapaxes(-1, -2), s, s)
        canvas *= 1 + (streaks - 0.5) * 0.4
        canvas = _blur(canvas, max(1, round(2 * s / 64)))
        return _to_uint8(np.clip(canvas, 0, 1), rnd["grain"], 0.01)


LOOKS: dict[str | None, Look] = {
    None: Look(), "photo": _PhotoLook(), "cartoon": _CartoonLook(), "sketch": _SketchLook(),
    "painting": _PaintingLook(),
}
assert set(LOOKS) == {None, *EMBEDDED_DOMAINS}
