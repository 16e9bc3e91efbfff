"""The demo: train the three systems and their baselines on the embedded data, evaluate them
side by side, and write a report page.

``run_demo()`` (``bioattn demo``) trains the micro variants of ViT, AbSViT, RVT with
self-attention, RVT with VARS-D, RS-RNN and FF-CNN on the embedded cluttered-shapes data, then
scores each on clean images, the 15 corruptions, FGSM and PGD (per glimpse for the glimpse
models), how much of its attention falls on the object, and AbSViT's top-down steering on
two-object images. Trained checkpoints are cached (``$BIOATTN_CACHE/demo/<settings>``), so a second
run only evaluates; ``retrain=True`` trains again. ``quick=True`` runs the same pipeline on a
tiny budget (for tests).

The report directory holds ``index.html`` (a static page: the table, the robustness plots and
an attention gallery), ``report.md`` and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import BioattnError

DEMO_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ViT", "vit_micro_patch8_64", {}),
    ("AbSViT", "absvit_micro_patch8_64", {}),
    ("RVT", "rvt_micro", {"attention": "self-att"}),
    ("RVT VARS-D", "rvt_micro", {"attention": "vars_d"}),
    ("RS-RNN", "rsrnn_micro", {}),
    ("FF-CNN", "ffcnn_micro", {}),
)


@dataclass(frozen=True)
class DemoSettings:
    """Budget of one demo run (the full run fits in 15 minutes on 2 CPU cores)."""

    data: str = "embedded:train=8000,val=500,test=1000"
    pair_data: str = "embedded:pair,train=64,val=64,test=300"
    epochs: int = 3
    batch_size: int = 64
    base_lr: float = 4e-3
    eval_images: int = 1000
    corruption_images: int = 200
    severities: tuple[int, ...] = (3,)
    corruptions: tuple[str, ...] | None = None
    attack_images: int = 200
    glimpses: int = 8
    attack_step: int = 4
    attention_images: int = 300
    steering_images: int = 300
    gallery_images: int = 4
    seed: int = 0

    @property
    def key(self) -> str:
        """Identifies the trained checkpoints: the training settings and the data generator's
        version (checkpoints trained on other images are not reused)."""
        from .data.embedded import generator_digest

        train_part = {k: getattr(self, k) for k in ("data", "epochs", "batch_size", "base_lr", "seed")}
        train_part["data_generator"] = generator_digest()
        return hashlib.sha256(json.dumps(train_part, sort_keys=True).encode()).hexdigest()[:12]


QUICK = DemoSettings(
    data="embedded:train=128,val=32,test=32",
    pair_data="embedded:pair,train=16,val=16,test=8",
    epochs=1, batch_size=32, eval_images=32, corruption_images=8,
    corruptions=("gaussian_noise", "motion_blur", "contrast", "jpeg_compression"),
    attack_images=8, glimpses=4, attack_step=2, attention_images=8, steering_images=8,
    gallery_images=1,
)


def _cache_root() -> Path:
    import os

    return Path(os.environ.get("BIOATTN_CACHE", Path.home() / ".cache" / "bioattn"))


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise BioattnError(f"cannot write the report to {out}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------
# attention against the object masks
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def mask_attention_scores(model, dataset, limit: int, batch_size: int = 64) -> dict[str, float]:
    """How well a model's primary attention map finds the object: the share of the map's mass
    inside the object mask (chance: the mask's share of the image) and AUC-Judd with the mask's
    pixels as positives, averaged over images."""
    from .attention.maps import saliency
    from .attention.metrics import auc_judd

    arrays = dataset.arrays
    n = min(limit, len(dataset))
    shares, chance, aucs = [], [], []
    model.eval()
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        x = torch.stack([dataset[i][0] for i in idx])
        masks = torch.as_tensor(np.asarray(arrays.masks[idx.start:idx.stop]))
        if masks.ndim == 4:  # two-object images: the first object is the label
            masks = masks[:, 0]
        sal = saliency(model, x, size=tuple(masks.shape[-2:])).float().clamp_min(0)
        for s, m in zip(sal, masks.bool()):
            total = s.sum().item()
            shares.append(s[m].sum().item() / total if total > 0 else float("nan"))
            chance.append(m.float().mean().item())
            aucs.append(auc_judd(s.numpy(), m.numpy()))
    return {
        "mask_share": 100.0 * float(np.nanmean(shares)),
        "mask_share_chance": 100.0 * float(np.mean(chance)),
        "mask_auc": float(np.nanmean(aucs)),
    }


# ------------------------------------------------------------------------------------------
# the gallery
# ------------------------------------------------------------------------------------------
def _picture(x: torch.Tensor, mean, std) -> np.ndarray:
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def _gallery(label: str, model, meta: dict, test_set, pair_set, settings: DemoSettings,
             fig_dir: Path) -> list[tuple[str, str]]:
    """Figures of where ``model`` looks, as (caption, file name relative to the report)."""
    from .attention.maps import attention_maps, has_maps
    from .attention.plots import plot_attention

    mean, std = meta["mean"], meta["std"]
    classes = meta.get("classes") or []
    out: list[tuple[str, str]] = []
    slug = _slug(label)
    model.eval()
    for i in range(min(settings.gallery_images, len(test_set))):
        x, y = test_set[i]
        name = f"{slug}-{i}.png"
        if hasattr(model, "forward_glimpses"):
            from .attention.fixations import plot_glimpses

            plot_glimpses(model, x, fig_dir / name, steps=settings.glimpses, mean=mean, std=std,
                          class_names=classes, map_step=2 if label == "RS-RNN" and i == 0 else None)
            out.append((f"{label}: fixation path over {settings.glimpses} glimpses (image {i}, "
                        f"a {classes[y] if classes else y})", name))
        elif has_maps(model):
            maps = attention_maps(model, x[None])
            plot_attention(_picture(x, mean, std), {k: v[0] for k, v in maps.items()}, fig_dir / name,
                           title=f"{label} (a {classes[y] if classes else y})")
            out.append((f"{label}: attention maps (image {i})", name))
    if label == "AbSViT":
        for i in range(min(settings.gallery_images, len(pair_set))):
            x, _ = pair_set[i]
            labels = [int(v) for v in pair_set.arrays.labels[i]]
            maps = attention_maps(model, x[None], priors=labels, prior_scale=40.0)
            named = {}
            for k, v in maps.items():
                if k.startswith("class "):
                    c = int(k.split()[1])
                    k = f"prior: {classes[c] if classes else c}"
                named[k] = v[0]
            name = f"{slug}-pair-{i}.png"
            plot_attention(_picture(x, mean, std), named, fig_dir / name,
                           title="AbSViT steered by two different class priors")
            out.append(("AbSViT on a two-object image: bottom-up, prompt and the two class priors", name))
    return out


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def _train_or_load(label: str, name: str, args: dict, settings: DemoSettings, ckpt_root: Path,
                   retrain: bool, progress: bool, log) -> tuple[Any, dict, float]:
    from .checkpoint import load_model, read_meta
    from .train import TrainConfig, train

    run_dir = ckpt_root / _slug(label)
    seconds = 0.0
    if not retrain and (run_dir / "best" / "model.safetensors").exists():
        try:
            model = load_model(run_dir / "best")
        except BioattnError as exc:  # written by another version of the model code
            log(f"{label}: the cached checkpoint cannot be used ({exc}); training again")
        else:
            log(f"{label}: using the cached checkpoint {run_dir / 'best'}")
            return model, read_meta(run_dir / "best"), seconds
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    log(f"[bold]training {label}[/] ({name} {args or ''})")
    t0 = time.perf_counter()
    train(TrainConfig(
        model=name, data=settings.data, output=str(run_dir), recipe="small", model_args=dict(args),
        epochs=settings.epochs, batch_size=settings.batch_size, base_lr=settings.base_lr,
        warmup_epochs=min(1, settings.epochs - 1), seed=settings.seed, progress=progress,
        tensorboard=False, device="cpu" if not torch.cuda.is_available() else "auto",
    ))
    seconds = time.perf_counter() - t0
    model = load_model(run_dir / "best")
    return model, read_meta(run_dir / "best"), seconds


def run_demo(out: str | Path = "demo-report", quick: bool = False, retrain: bool = False,
             models: Sequence[str] | None = None, progress: bool = True,
             settings: DemoSettings | None = None) -> dict[str, Any]:
    """Train (or load) and evaluate every demo model; write the report; return the results."""
    from .data import build_dataset
    from .data.embedded import EmbeddedSpec, load_embedded
    from .evaluate.report import markdown_report, write_report
    from .evaluate.suites import nan_to_none, run_suites

    settings = settings or (QUICK if quick else DemoSettings())
    out = Path(out)
    _check_out(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    chosen = [m for m in DEMO_MODELS if models is None or m[0] in models or m[1] in models]
    if not chosen:
        raise BioattnError(f"no demo model matches {', '.join(models or [])} "
                           f"(choose from {', '.join(m[0] for m in DEMO_MODELS)})")

    def log(message: str) -> None:
        if progress:
            from rich.console import Console

            Console().print(message)

    t_start = time.perf_counter()
    log(f"[bold]bioattn demo[/]: data {settings.data}, {settings.epochs} epochs per model, "
        f"{len(chosen)} models")
    t0 = time.perf_counter()
    for spec in (settings.data, settings.pair_data):
        for split in ("train", "val", "test"):
            load_embedded(EmbeddedSpec.parse(spec), split)
    data_seconds = time.perf_counter() - t0
    ckpt_root = _cache_root() / "demo" / settings.key
    torch.manual_seed(settings.seed)

    all_results: list[dict] = []
    gallery: list[tuple[str, str]] = []
    timings: dict[str, dict[str, float]] = {}
    baseline_model = None
    for label, name, args in chosen:
        model, meta, train_seconds = _train_or_load(label, name, args, settings, ckpt_root, retrain,
                                                    progress, log)
        mean, std, size = meta["mean"], meta["std"], meta["img_size"]
        test_set = build_dataset(settings.data, "test", size, mean, std)
        pair_set = build_dataset(settings.pair_data, "test", size, mean, std)
        glimpse = hasattr(model, "forward_glimpses")
        t0 = time.perf_counter()
        common = dict(mean=mean, std=std, img_size=size, classes=meta.get("classes"),
                      model_info={"name": label, "model": name, "model_args": args},
                      progress=progress, seed=settings.seed, device="auto")
        results = run_suites(model, test_set, ["clean"], limit=settings.eval_images, **common)
        corr = run_suites(model, test_set, ["corruptions"], limit=settings.corruption_images,
                          severities=list(settings.severities),
                          corruptions=list(settings.corruptions) if settings.corruptions else None,
                          baseline=baseline_model, **common)
        attack_kw: dict[str, Any] = {}
        if glimpse:
            attack_kw = {"steps": settings.glimpses, "attack_step": settings.attack_step}
        attacks = run_suites(model, test_set, ["fgsm", "pgd"], limit=settings.attack_images,
                             **attack_kw, **common)
        results["results"].update(corr["results"])
        results["results"].update(attacks["results"])
        from .attention.maps import has_maps

        if has_maps(model):
            results["results"]["attention"] = mask_attention_scores(model, test_set, settings.attention_images)
        if hasattr(model, "top_down_maps"):
            results["results"]["steering"] = run_suites(
                model, pair_set, ["steering"], limit=settings.steering_images, **common)["results"]["steering"]
        if glimpse:
            steps_clean = run_suites(model, test_set, ["clean"], limit=settings.eval_images,
                                     steps=max(16, settings.glimpses), **common)["results"]["clean"]
            results["results"]["glimpses"] = {
                "per_glimpse_top1": steps_clean.get("per_step_top1"),
            }
        eval_seconds = time.perf_counter() - t0
        timings[label] = {"train_s": train_seconds, "eval_s": eval_seconds}
        results["model"] = dict(results.get("model") or {}, name=label)
        all_results.append(results)
        gallery += _gallery(label, model, meta, test_set, pair_set, settings, fig_dir)
        if label == "ViT":
            baseline_model = model
        top1 = results["results"]["clean"]["top1"]
        log(f"{label}: clean top-1 {top1:.1f}% (train {train_seconds:.0f} s, eval {eval_seconds:.0f} s)")

    files = write_report(all_results, out, stem="report")
    total = time.perf_counter() - t_start
    summary = {
        "settings": dataclasses.asdict(settings),
        "quick": quick,
        "data_seconds": data_seconds,
        "total_seconds": total,
        "timings": timings,
        "models": nan_to_none(all_results),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    plots = [p.name for p in files if p.suffix == ".png"]
    _write_html(out, markdown_report(all_results), plots, gallery, settings, total)
    log(f"report written to {out / 'index.html'} in {total:.0f} s")
    return summary


def _markdown_table_to_html(md: str) -> str:
    """Markdown headings, paragraphs and pipe tables as HTML (what report.md holds)."""
    parts: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, body = rows[0], [r for r in rows[2:]]
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                         + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("## "):
            parts.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith("# "):
            continue
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


def _write_html(out: Path, md: str, plots: list[str], gallery: list[tuple[str, str]],
                settings: DemoSettings, seconds: float) -> None:
    from .fileio import atomic_write_text

    figures = "\n".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(p)}"><figcaption>{html.escape(p)}</figcaption></figure>'
        for p in plots)
    tiles = "\n".join(
        f'<figure><img src="figures/{html.escape(f)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for c, f in gallery)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bioattn demo report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
figure img {{ max-width: 640px; }}
figcaption {{ font-size: 0.8em; color: #444; max-width: 640px; }}
</style></head><body>
<h1>bioattn demo</h1>
<p>Micro models trained on the embedded cluttered-shapes data ({html.escape(settings.data)},
{settings.epochs} epochs each) and evaluated side by side; the whole run took {seconds:.0f} s.
Attention columns: share of the primary attention map's mass on the object (chance is the object's
share of the image) and AUC of the map against the object mask. Steering: share of AbSViT's
top-down attention on the prompted object vs the other one, on two-object images.</p>
<h2>Results</h2>
{_markdown_table_to_html(md)}
<h2>Robustness plots</h2>
{figures}
<h2>Attention gallery</h2>
{tiles}
</body></html>
"""
    atomic_write_text(out / "index.html", page)
