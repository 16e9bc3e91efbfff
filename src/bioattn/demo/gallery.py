"""The demo's attention gallery: figures of where each model looks."""

from __future__ import annotations

from pathlib import Path

from ..attention.maps import attention_maps, has_maps
from ..attention.plots import plot_attention
from ..attention.scanpaths import plot_glimpses
from ..data.pixels import Pixels
from ..protocol import Glimpsing, TopDownSteerable, capable
from .settings import DemoSettings
from .training import slug


def attention_gallery(label: str, model, meta: dict, test_set, pair_set, settings: DemoSettings,
                      fig_dir: Path, prior_scale: float = 40.0) -> list[tuple[str, str]]:
    """Figures of where ``model`` looks, as (caption, file name relative to the report): glimpse
    models' fixation paths (with the maps that chose the second fixation on the first image, for
    models that learn where to look), other models' attention maps, and for a model a class prior
    steers, its maps on two-object images under each object's class at ``prior_scale`` (the
    steering benchmark's chosen scale; the authors' demo uses 40)."""

    mean, std = meta["mean"], meta["std"]
    classes = meta.get("classes") or []
    out: list[tuple[str, str]] = []
    stem = slug(label)
    model.eval()
    for i in range(min(settings.gallery_images, len(test_set))):
        x, y = test_set[i]
        name = f"{stem}-{i}.png"
        if capable(model, Glimpsing):
            learns_fixations = getattr(model, "learns_fixations", True)
            plot_glimpses(model, x, fig_dir / name, glimpses=settings.glimpses, mean=mean, std=std,
                          class_names=classes, map_glimpse=2 if learns_fixations and i == 0 else None)
            what = (f"fixation path over {settings.glimpses} glimpses" if learns_fixations
                    else "one feedforward view of the whole image, no fixations")
            out.append((f"{label}: {what} (image {i}, a {classes[y] if classes else y})", name))
        elif has_maps(model):
            maps = attention_maps(model, x[None])
            plot_attention(Pixels(mean, std).to_picture(x), {k: v[0] for k, v in maps.items()}, fig_dir / name,
                           title=f"{label} (a {classes[y] if classes else y})")
            out.append((f"{label}: attention maps (image {i})", name))
    if capable(model, TopDownSteerable):
        for i in range(min(settings.gallery_images, len(pair_set))):
            x, _ = pair_set[i]
            labels = [int(v) for v in pair_set.arrays.labels[i]]
            maps = attention_maps(model, x[None], priors=labels, prior_scale=prior_scale)
            named = {}
            for k, v in maps.items():
                if k.startswith("class "):
                    c = int(k.split()[1])
                    k = f"prior: {classes[c] if classes else c}"
                named[k] = v[0]
            name = f"{stem}-pair-{i}.png"
            plot_attention(Pixels(mean, std).to_picture(x), named, fig_dir / name,
                           title=f"{label} steered by two different class priors")
            out.append((f"{label} on a two-object image: bottom-up, prompt and the two class priors "
                        f"(scale {prior_scale:g})", name))
    return out
