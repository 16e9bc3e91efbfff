"""The demo: train the three systems and their baselines on the embedded data, evaluate them
side by side, and write a report page.

``run_demo()`` (``bioattn demo``) trains the micro variants of ViT, AbSViT, RVT with
self-attention, RVT with VARS-D, RS-RNN and FF-CNN on the embedded cluttered-shapes data, then
scores each on clean images, the 15 corruptions, FGSM and PGD (per glimpse for the glimpse
models), how much of its attention falls on the object, and AbSViT's top-down steering on
two-object images; then fine-tunes ViT and AbSViT as segmenters and ViT and RS-RNN as
multi-label models (:mod:`bioattn.demo_tasks`). Trained checkpoints are cached
(``$BIOATTN_CACHE/demo/<settings>``), so a second run only evaluates; ``retrain=True`` trains
again. ``quick=True`` runs the same pipeline on a tiny budget (for tests).

The report directory holds ``index.html`` (a static page: the table, the robustness plots and
an attention gallery), ``report.md`` and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from .attention.maps import attention_maps, has_maps, saliency
from .attention.metrics import auc_judd
from .attention.plots import plot_attention
from .attention.scanpaths import plot_glimpses
from .data import build_dataset
from .data.embedded import EmbeddedSpec, cache_root, generator_digest, load_embedded
from .data.pixels import Pixels
from .demo_tasks import (
    QUICK_TASKS,
    TaskDemoSettings,
    multilabel_demo,
    segmentation_demo,
    task_findings,
    task_rows,
    train_or_load,
)
from .domains import leave_one_domain_out
from .errors import BioattnError
from .evaluate.report import PLOT_CORRUPTIONS, format_eps, markdown_report, nan_to_none, write_report
from .evaluate.suites import run_suites
from .fileio import atomic_write, atomic_write_text, check_output_file, output_folder
from .protocol import Glimpsing, TopDownSteerable, capable
from .train import TrainConfig

DEMO_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ViT", "vit_micro_patch8_64", {}),
    ("AbSViT", "absvit_micro_patch8_64", {}),
    ("RVT", "rvt_micro", {"attention": "self-att"}),
    ("RVT VARS-D", "rvt_micro", {"attention": "vars_d"}),
    ("RS-RNN", "rsrnn_micro", {}),
    ("FF-CNN", "ffcnn_micro", {}),
    ("GFNet", "gfnet_micro", {}),
    ("GFNet VARS-S", "gfnet_micro", {"mixer": "vars_s"}),
)
# The models of the domain-generalisation table: each is fine-tuned from its demo checkpoint on
# three of the embedded data's four styles and tested on the fourth.
DOMAIN_MODELS: tuple[str, ...] = ("ViT", "AbSViT", "RVT", "RVT VARS-D", "GFNet", "GFNet VARS-S")


@dataclass(frozen=True)
class DemoSettings:
    """Budget of one demo run (its training time per model and the number of images evaluated)."""

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
    attack_readout: int = 4
    attention_images: int = 300
    steering_images: int = 300
    gallery_images: int = 4
    domain_data: str = "embedded:train=400,val=100,test=300"
    domain_epochs: int = 1
    tasks: TaskDemoSettings = TaskDemoSettings()
    seed: int = 0

    @property
    def key(self) -> str:
        """Identifies the trained checkpoints: the training settings and the data generator's
        version (checkpoints trained on other images are not reused)."""

        train_part = {k: getattr(self, k) for k in ("data", "epochs", "batch_size", "base_lr", "seed")}
        train_part["data_generator"] = generator_digest()
        return hashlib.sha256(json.dumps(train_part, sort_keys=True).encode()).hexdigest()[:12]


QUICK = DemoSettings(
    data="embedded:train=128,val=32,test=32",
    pair_data="embedded:pair,train=16,val=16,test=8",
    epochs=1, batch_size=32, eval_images=32, corruption_images=8,
    corruptions=("gaussian_noise", "motion_blur", "contrast", "jpeg_compression"),
    attack_images=8, glimpses=4, attack_readout=2, attention_images=8, steering_images=8,
    gallery_images=1, domain_data="embedded:train=16,val=8,test=8", tasks=QUICK_TASKS,
)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


REPORT_FILES = ("index.html", "report.md", "results.json")


def _check_out(out: Path) -> None:
    """``out`` must be a new or empty folder, or hold an earlier demo report (replaced file by
    file); anything else is refused before the demo starts, so no one's files are replaced."""

    try:
        output_folder(out, "report folder")
    except BioattnError as exc:
        raise BioattnError(f"cannot write the report to {out}: {exc}") from None
    entries = {p.name for p in out.iterdir()}
    if entries and not (entries & set(REPORT_FILES)):
        raise BioattnError(f"cannot write the report to {out}: it holds other files and no earlier "
                           "demo report (give a new or empty folder)")
    for name in REPORT_FILES:
        check_output_file(out / name, "report file")


# ------------------------------------------------------------------------------------------
# attention against the object masks
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def mask_attention_scores(model, dataset, limit: int, batch_size: int = 64) -> dict[str, float]:
    """How well a model's primary attention map finds the object: the share of the map's mass
    inside the object mask (chance: the mask's share of the image) and AUC-Judd with the mask's
    pixels as positives, averaged over images."""

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
        "n_images": n,
    }


# ------------------------------------------------------------------------------------------
# the gallery
# ------------------------------------------------------------------------------------------
def _gallery(label: str, model, meta: dict, test_set, pair_set, settings: DemoSettings,
             fig_dir: Path) -> list[tuple[str, str]]:
    """Figures of where ``model`` looks, as (caption, file name relative to the report)."""

    mean, std = meta["mean"], meta["std"]
    classes = meta.get("classes") or []
    out: list[tuple[str, str]] = []
    slug = _slug(label)
    model.eval()
    for i in range(min(settings.gallery_images, len(test_set))):
        x, y = test_set[i]
        name = f"{slug}-{i}.png"
        if capable(model, Glimpsing):
            plot_glimpses(model, x, fig_dir / name, glimpses=settings.glimpses, mean=mean, std=std,
                          class_names=classes, map_glimpse=2 if label == "RS-RNN" and i == 0 else None)
            what = (f"fixation path over {settings.glimpses} glimpses"
                    if getattr(model, "learns_fixations", True)
                    else "one feedforward view of the whole image, no fixations")
            out.append((f"{label}: {what} (image {i}, a {classes[y] if classes else y})", name))
        elif has_maps(model):
            maps = attention_maps(model, x[None])
            plot_attention(Pixels(mean, std).to_picture(x), {k: v[0] for k, v in maps.items()}, fig_dir / name,
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
            plot_attention(Pixels(mean, std).to_picture(x), named, fig_dir / name,
                           title="AbSViT steered by two different class priors")
            out.append(("AbSViT on a two-object image: bottom-up, prompt and the two class priors", name))
    return out


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def _train_or_load(label: str, name: str, args: dict, settings: DemoSettings, ckpt_root: Path,
                   retrain: bool, progress: bool, log) -> tuple[Any, dict, float]:
    config = TrainConfig(
        model=name, data=settings.data, output=str(ckpt_root / _slug(label)), recipe="small",
        model_args=dict(args), epochs=settings.epochs, batch_size=settings.batch_size, base_lr=settings.base_lr,
        warmup_epochs=min(1, settings.epochs - 1), seed=settings.seed, progress=progress,
        tensorboard=False, device="cpu" if not torch.cuda.is_available() else "auto",
    )
    return train_or_load(config, label, f"[bold]training {label}[/] ({name} {args or ''})", retrain, log)


def run_demo(out: str | Path = "demo-report", quick: bool = False, retrain: bool = False,
             models: Sequence[str] | None = None, progress: bool = True,
             settings: DemoSettings | None = None) -> dict[str, Any]:
    """Train (or load) and evaluate every demo model; write the report; return the results."""

    settings = settings or (QUICK if quick else DemoSettings())
    out = Path(out)
    _check_out(out)

    fig_dir = output_folder(out / "figures", "figure folder")
    chosen = [m for m in DEMO_MODELS if models is None or m[0] in models or m[1] in models]
    if not chosen:
        raise BioattnError(f"no demo model matches {', '.join(models or [])} "
                           f"(choose from {', '.join(m[0] for m in DEMO_MODELS)})")

    def log(message: str) -> None:
        if progress:
            Console().print(message)

    t_start = time.perf_counter()
    log(f"[bold]bioattn demo[/]: data {settings.data}, {settings.epochs} epochs per model, "
        f"{len(chosen)} models")
    t0 = time.perf_counter()
    for spec in (settings.data, settings.pair_data):
        for split in ("train", "val", "test"):
            load_embedded(EmbeddedSpec.parse(spec), split)
    data_seconds = time.perf_counter() - t0
    ckpt_root = cache_root() / "demo" / settings.key
    torch.manual_seed(settings.seed)

    all_results: list[dict] = []
    gallery: list[tuple[str, str]] = []
    timings: dict[str, dict[str, float]] = {}
    baseline_model = None
    retrained: set[str] = set()
    for label, name, args in chosen:
        model, meta, train_seconds = _train_or_load(label, name, args, settings, ckpt_root, retrain,
                                                    progress, log)
        if train_seconds > 0:
            retrained.add(label)
        mean, std, size = meta["mean"], meta["std"], meta["img_size"]
        test_set = build_dataset(settings.data, "test", size, mean, std)
        pair_set = build_dataset(settings.pair_data, "test", size, mean, std)
        glimpse = capable(model, Glimpsing)
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
            attack_kw = {"readouts": settings.glimpses, "attack_readout": settings.attack_readout}
        attacks = run_suites(model, test_set, ["fgsm", "pgd"], limit=settings.attack_images,
                             **attack_kw, **common)
        results["results"].update(corr["results"])
        results["results"].update(attacks["results"])

        if has_maps(model):
            results["results"]["attention"] = mask_attention_scores(model, test_set, settings.attention_images)
        if capable(model, TopDownSteerable):
            results["results"]["steering"] = run_suites(
                model, pair_set, ["steering"], limit=settings.steering_images, **common)["results"]["steering"]
        if glimpse:
            longer = run_suites(model, test_set, ["clean"], limit=settings.eval_images,
                                readouts=max(16, settings.glimpses), **common)["results"]["clean"]
            results["results"]["glimpses"] = {
                "per_glimpse_top1": longer.get("per_readout_top1"),
                "trained_glimpses": int(getattr(model, "num_glimpses", settings.glimpses)),
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

    checkpoints = {label: ckpt_root / _slug(label) / "best" for label, _, _ in chosen}
    domains = domain_generalisation([m for m in chosen if m[0] in DOMAIN_MODELS], checkpoints, settings,
                                    ckpt_root / "domains", retrained, progress, log)
    segmentation, seg_gallery = segmentation_demo(checkpoints, settings.tasks, ckpt_root, retrained, progress,
                                                  log, fig_dir)
    multilabel, multi_gallery = multilabel_demo(checkpoints, settings.tasks, ckpt_root, retrained, progress,
                                                log, fig_dir)
    gallery += seg_gallery + multi_gallery
    files = write_report(all_results, out, stem="report")
    total = time.perf_counter() - t_start
    summary = {
        "settings": dataclasses.asdict(settings),
        "quick": quick,
        "data_seconds": data_seconds,
        "total_seconds": total,
        "timings": timings,
        "models": nan_to_none(all_results),
        "domains": nan_to_none(domains),
        "segmentation": nan_to_none(segmentation),
        "multilabel": nan_to_none(multilabel),
    }
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n",
                      what="results file")
    plots = [p.name for p in files if p.suffix == ".png"]
    if len(settings.severities) < 2:  # one point per panel: the heat map shows the same numbers
        plots = [p for p in plots if not p.endswith(PLOT_CORRUPTIONS)]
    tasks_md = "\n".join(task_rows(segmentation, multilabel))
    if tasks_md:
        report_md = out / "report.md"
        atomic_write_text(report_md, report_md.read_text(encoding="utf-8") + tasks_md + "\n", what="report file")
    _write_html(out, all_results, markdown_report(all_results), plots, gallery, settings, total, domains,
                tasks_md, task_findings(segmentation, multilabel))
    log(f"report written to {out / 'index.html'} in {total:.0f} s")
    return summary


def domain_generalisation(models: Sequence[tuple[str, str, dict[str, Any]]], checkpoints: dict[str, Path],
                          settings: DemoSettings, root: Path, retrained: set[str], progress: bool,
                          log) -> dict[str, Any] | None:
    """The leave-one-domain-out table on the embedded data's four styles: every model is
    fine-tuned from its demo checkpoint (trained on the default look) on three styles, the epoch
    with the best validation top-1 is kept, and it is tested on the fourth style. Runs are cached
    under ``root`` with the checkpoints (a retrained model's runs are redone)."""
    if not models:
        return None
    rows, result = [], None
    for label, name, args in models:
        folder = root / _slug(label)
        if label in retrained and folder.exists():
            shutil.rmtree(folder)
        log(f"[bold]domain generalisation[/]: {label}")
        result = leave_one_domain_out(
            [(name, dict(args))], settings.domain_data, folder, log=None, init=str(checkpoints[label]),
            epochs=settings.domain_epochs, batch_size=settings.batch_size, seed=settings.seed,
            progress=progress, tensorboard=False, overwrite=True,
            device="cpu" if not torch.cuda.is_available() else "auto")
        row = dict(result["rows"][0], label=label)
        rows.append(row)
        log(f"{label}: mean top-1 on held-out styles {row['mean_top1']:.1f}%")
    return {"data": settings.domain_data, "epochs": settings.domain_epochs,
            "test_domains": result["test_domains"], "test_images": result["test_images"], "rows": rows}


def _domain_table(domains: dict[str, Any] | None) -> str:
    if not domains:
        return ""
    heads = [*domains["test_domains"], "mean"]
    body = "".join(
        f"<tr><td>{html.escape(row['label'])}</td>"
        + "".join(f"<td>{_pct(row['top1'].get(d))}</td>" for d in domains["test_domains"])
        + f"<td>{_pct(row['mean_top1'])}</td></tr>" for row in domains["rows"])
    images = ", ".join(f"{d} {n}" for d, n in domains["test_images"].items())
    return ("<h2>Domain generalisation</h2>\n<table><thead><tr><th>model \\ held-out style</th>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + f"</tr></thead><tbody>{body}</tbody></table>"
            f"\n<p class=\"about\">Top-1 in % on the held-out style (chance 10%; test images: {images}) "
            f"after fine-tuning each demo checkpoint for {domains['epochs']} epoch(s) on the other three "
            f"styles ({html.escape(domains['data'])}), keeping the epoch with the best validation top-1. "
            "The demo checkpoints learned the shapes in the default look, closest to the photo style.</p>")


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


# ------------------------------------------------------------------------------------------
# the page: findings first, then a heat map and compact tables; the long tables behind links
# ------------------------------------------------------------------------------------------
SYSTEMS = (("AbSViT", "ViT"), ("RVT VARS-D", "RVT"), ("GFNet VARS-S", "GFNet"), ("RS-RNN", "FF-CNN"))
HEATMAP = "corruptions_heatmap.png"


def _attack_top1(results: dict, suite: str) -> float | None:
    runs = (results.get(suite) or {}).get("runs") or []
    if not runs:
        return None
    run = runs[0]
    return run.get("attacked_readout_top1") if run.get("attack_readout") else run.get("top1")


def _scores(result: dict) -> dict[str, Any]:
    r = result.get("results", {})
    return {
        "clean": (r.get("clean") or {}).get("top1"),
        "corrupted": (r.get("corruptions") or {}).get("mean_top1"),
        "fgsm": _attack_top1(r, "fgsm"),
        "pgd": _attack_top1(r, "pgd"),
        "on_object": (r.get("attention") or {}).get("mask_share"),
        "object_area": (r.get("attention") or {}).get("mask_share_chance"),
        "n_clean": (r.get("clean") or {}).get("n"),
        "n_corrupted": (r.get("corruptions") or {}).get("n"),
        "n_attack": ((r.get("pgd") or {}).get("runs") or [{}])[0].get("n"),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _noise(n: int | None) -> float:
    """Differences up to two images' worth of top-1 (in points) are read as no difference."""
    return 200.0 / n if n else 5.0


def _compare(diff: float, tol: float) -> int:
    return 0 if abs(diff) <= tol else (1 if diff > 0 else -1)


def findings(results_list: Sequence[dict]) -> list[str]:
    """One sentence per finding, each derived from the numbers in ``results_list`` (the demo's
    per-model results): robustness of each system against its baseline, where the models look,
    whether AbSViT's steering works, and whether looking longer helps the glimpse models."""
    by_label = {(r.get("model") or {}).get("name"): r for r in results_list}
    scores = {label: _scores(r) for label, r in by_label.items()}
    out: list[str] = []
    for system, base in SYSTEMS:
        if system not in scores or base not in scores:
            continue
        a, b = scores[system], scores[base]
        parts, verdicts = [], []
        for key, what, n in (("corrupted", "under corruptions", "n_corrupted"), ("pgd", "under PGD", "n_attack")):
            if a[key] is None or b[key] is None:
                continue
            parts.append(f"{what} {_pct(a[key])} vs {_pct(b[key])}")
            verdicts.append(_compare(a[key] - b[key], _noise(a[n] or b[n])))
        if not parts:
            continue
        if verdicts and all(v > 0 for v in verdicts):
            verdict = f"{system} is more robust than {base}"
        elif verdicts and all(v < 0 for v in verdicts):
            verdict = f"{system} is less robust than {base}"
        elif all(v == 0 for v in verdicts):
            verdict = f"{system} is about as robust as {base} (differences within two images)"
        else:
            words = {1: "more robust", 0: "about as robust", -1: "less robust"}
            verdict = f"{system} against {base}: " + ", ".join(
                f"{words[v]} {w}" for w, v in zip(("under corruptions", "under attack"), verdicts))
        out.append(f"{verdict}: top-1 {', '.join(parts)} (clean {_pct(a['clean'])} vs {_pct(b['clean'])}).")
    looking = [(label, s["on_object"], s["object_area"]) for label, s in scores.items()
               if s["on_object"] is not None and s["object_area"]]
    if looking:
        area = float(np.mean([a for _, _, a in looking]))
        ranked = sorted(looking, key=lambda t: t[1], reverse=True)
        listing = ", ".join(f"{label} {share:.0f}%" for label, share, _ in ranked)
        top, low = ranked[0], ranked[-1]
        out.append(f"Where they look: the share of each model's attention on the object (which covers "
                   f"{area:.0f}% of the image) is {listing}; {top[0]} looks at the object most "
                   f"({top[1] / top[2]:.1f}x chance), {low[0]} least ({low[1] / low[2]:.1f}x chance).")
    steering = (by_label.get("AbSViT") or {}).get("results", {}).get("steering")
    if steering and steering.get("prompted_share") is not None:
        own, other = 100 * steering["prompted_share"], 100 * steering["other_share"]
        win, pairs = 100 * steering["win_rate"], steering.get("n_pairs")
        tol = _noise(pairs)
        works = own > other and win - 50.0 > tol
        lead = "Steering works" if works else "Steering does not work in this run"
        out.append(f"{lead}: with a class prior, AbSViT puts {own:.1f}% of its top-down attention on the "
                   f"prompted object and {other:.1f}% on the other one, and favours the prompted object "
                   f"in {win:.0f}% of {pairs} image-prompt pairs (50% is chance).")
    for label, r in by_label.items():
        glimpses = (r.get("results") or {}).get("glimpses") or {}
        per = glimpses.get("per_glimpse_top1")
        if not per or len(per) < 2 or label == "FF-CNN" or any(v is None for v in per):
            continue
        # the question is whether looking beyond the glimpses it was trained with helps
        trained = min(int(glimpses.get("trained_glimpses") or 1), len(per))
        at_trained, last, best = per[trained - 1], per[-1], max(per)
        if trained == len(per):
            continue
        change = _compare(last - at_trained, _noise(scores[label]["n_clean"]))
        lead = {1: "Looking longer helps", 0: "Looking longer does not help", -1: "Looking longer hurts"}[change]
        out.append(f"{lead} {label}: trained with {trained} glimpses, its clean top-1 is {at_trained:.1f}% "
                   f"after {trained} and {last:.1f}% after {len(per)} (best {best:.1f}%, after glimpse "
                   f"{per.index(best) + 1}).")
    counts = [s["n_clean"] for s in scores.values() if s["n_clean"]]
    if counts:
        out.append(f"Scale: {max(counts)} test images for clean accuracy, "
                   f"{max([s['n_corrupted'] or 0 for s in scores.values()])} per corruption and "
                   f"{max([s['n_attack'] or 0 for s in scores.values()])} under attack; a difference "
                   f"of {_noise(max(counts)):.1f} points or less on clean images is two images.")
    return out


def domain_findings(domains: dict[str, Any] | None) -> list[str]:
    """One sentence on the domain-generalisation table: which model transfers best and worst
    to a style it was not fine-tuned on, and which style is hardest."""
    if not domains or not domains.get("rows"):
        return []
    rows = sorted(domains["rows"], key=lambda r: r["mean_top1"], reverse=True)
    best, worst = rows[0], rows[-1]
    per_style = {d: float(np.mean([r["top1"][d] for r in rows])) for d in domains["test_domains"]}
    hardest = min(per_style, key=per_style.get)
    return [f"Across styles (fine-tuned on three of the embedded data's four styles, tested on the fourth; "
            f"chance 10%): {best['label']} transfers best (mean top-1 {_pct(best['mean_top1'])}), "
            f"{worst['label']} worst ({_pct(worst['mean_top1'])}); the hardest style to reach is "
            f"{hardest} (mean over models {_pct(per_style[hardest])})."]


def plot_corruption_heatmap(results_list: Sequence[dict], path: Path) -> bool:
    """Models x corruptions heat map of top-1 (clean first, for reference); False (nothing
    written) when no result has corruption figures."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    rows, labels, columns = [], [], None
    for r in results_list:
        corr = (r.get("results") or {}).get("corruptions") or {}
        per = corr.get("corruption_top1")
        if not per:
            continue
        columns = columns or list(per)
        clean = ((r.get("results") or {}).get("clean") or {}).get("top1")
        rows.append([clean] + [per.get(c) for c in columns])
        labels.append((r.get("model") or {}).get("name", "model"))
    if not rows:
        return False
    values = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    names = ["clean"] + [c.replace("_", " ") for c in columns]
    fig = Figure(figsize=(1.6 + 0.62 * len(names), 1.3 + 0.38 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.axvline(0.5, color="white", lw=2)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="black" if v > 60 else "white")
    fig.colorbar(image, ax=ax, label="top-1 (%)", fraction=0.03, pad=0.01)
    ax.set_title("top-1 (%) on clean and corrupted test images", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), what="figure")
    return True


def _compact_table(results_list: Sequence[dict]) -> str:
    head = ["model", "clean", "corrupted", "FGSM", "PGD", "attention on object"]
    body = []
    for r in results_list:
        s = _scores(r)
        body.append([(r.get("model") or {}).get("name", "model"), _pct(s["clean"]), _pct(s["corrupted"]),
                     _pct(s["fgsm"]), _pct(s["pgd"]), _pct(s["on_object"])])
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
            + "</tbody></table>")


def _write_html(out: Path, results_list: Sequence[dict], md: str, plots: list[str],
                gallery: list[tuple[str, str]], settings: DemoSettings, seconds: float,
                domains: dict[str, Any] | None = None, tasks_md: str = "",
                task_points: Sequence[str] = ()) -> None:
    heatmap = plot_corruption_heatmap(results_list, out / HEATMAP)
    points = "\n".join(f"<li>{html.escape(sentence)}</li>"
                       for sentence in [*findings(results_list), *domain_findings(domains), *task_points])
    tasks_html = f'<div class="scroll">{_markdown_table_to_html(tasks_md)}</div>' if tasks_md else ""
    figures = "\n".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(p)}"><figcaption>{html.escape(p)}</figcaption></figure>'
        for p in plots)
    if figures:
        figures = "<h2>Top-1 at every glimpse under attack</h2>\n" + figures

    eps = sorted({run.get("eps") for r in results_list for suite in ("fgsm", "pgd")
                  for run in ((r.get("results") or {}).get(suite) or {}).get("runs", [])} - {None})
    eps_text = ", ".join(format_eps(e) for e in eps) or "-"
    tiles = "\n".join(
        f'<figure><img src="figures/{html.escape(f)}" alt="{html.escape(c)}">'
        f'<figcaption>{html.escape(c)}</figcaption></figure>'
        for c, f in gallery)
    heat = (f'<figure class="wide"><img src="{HEATMAP}" alt="top-1 per model and corruption">'
            "<figcaption>Top-1 per model (rows) on clean images and under each corruption (severity "
            f"{', '.join(str(s) for s in settings.severities)}).</figcaption></figure>") if heatmap else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bioattn demo report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; line-height: 1.45; }}
ul.findings li {{ margin: 0.35em 0; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
details {{ margin: 0.8em 0; }}
summary {{ cursor: pointer; color: #1a4f8b; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; max-width: 100%; }}
figure img {{ max-width: 100%; }}
figure.wide {{ display: block; margin: 0.5em 0; }}
figcaption {{ font-size: 0.8em; color: #444; }}
p.about {{ color: #444; font-size: 0.9em; }}
</style></head><body>
<h1>bioattn demo</h1>
<h2>Findings</h2>
<ul class="findings">
{points}
</ul>
<h2>Robustness at a glance</h2>
{heat}
<div class="scroll">{_compact_table(results_list)}</div>
<p class="about">Top-1 in %. Corrupted: mean over the corruptions; FGSM and PGD at eps {eps_text} (glimpse
models: the prediction at glimpse {settings.attack_readout} is attacked). Attention on object: share of
the primary attention map's mass inside the object's mask.</p>
<details><summary>All results: the full table, top-1 per corruption, per-readout tables (also in report.md)</summary>
<div class="scroll">{_markdown_table_to_html(md)}</div>
</details>
{_domain_table(domains)}
{tasks_html}
{figures}
<h2>Attention gallery</h2>
{tiles}
<h2>About this run</h2>
<p class="about">Micro models trained on the embedded cluttered-shapes data ({html.escape(settings.data)},
{settings.epochs} epochs each) and evaluated side by side; the whole run took {seconds:.0f} s. Steering:
share of AbSViT's top-down attention on the prompted object vs the other one, on two-object images.</p>
</body></html>
"""
    atomic_write_text(out / "index.html", page)
