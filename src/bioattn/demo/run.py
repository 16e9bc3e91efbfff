"""The demo's run: train (or load) every demo model, evaluate it, fine-tune across the embedded
styles and for the two other tasks, and write the report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ..attention.maps import has_maps
from ..data import build_dataset
from ..data.embedded import EmbeddedSpec, cache_root, load_embedded
from ..errors import BioattnError
from ..evaluate.object_attention import mask_attention_scores
from ..evaluate.report import PLOT_CORRUPTIONS, markdown_report, nan_to_none, write_report
from ..evaluate.suites import run_suites
from ..fileio import atomic_write_text, check_output_file, file_sha256, output_folder
from ..generalisation import leave_one_domain_out
from ..protocol import Glimpsing, TopDownSteerable, capable
from ..results.measure import held_out_figures
from ..zoo import STYLE_SETTINGS, STYLES, STYLES_ROOT
from .findings import task_findings
from .gallery import attention_gallery
from .page import task_rows, write_html
from .settings import CORRUPTION_BASELINE, DEMO_MODELS, DOMAIN_MODELS, FROM_DEMO, FROM_ZOO, QUICK, DemoSettings
from .tasks import multilabel_demo, segmentation_demo
from .training import slug, train_classifier, train_here, zoo_folder, zoo_style_entries

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
    # the fine-tuned runs (domains, segmentation, multi-label) start from the classifiers: they
    # are kept apart for every set of zoo weights the classifiers come from
    tune_root = ckpt_root / f"from-{_sources_key(chosen, settings, retrain)}"
    torch.manual_seed(settings.seed)

    all_results: list[dict] = []
    gallery: list[tuple[str, str]] = []
    timings: dict[str, dict[str, float]] = {}
    baseline_model = None
    retrained: set[str] = set()
    checkpoints: dict[str, Path] = {}
    sources: dict[str, str] = {}
    for label, name, args in chosen:
        model, meta, train_seconds, checkpoints[label], sources[label] = train_classifier(
            label, name, args, settings, ckpt_root, retrain, progress, log)
        if train_seconds > 0:
            retrained.add(label)
        mean, std, size = meta["mean"], meta["std"], meta["img_size"]
        test_set = build_dataset(settings.data, "test", size, mean, std)
        pairs = {split: build_dataset(settings.pair_data, split, size, mean, std) for split in ("val", "test")}
        t0 = time.perf_counter()
        results = evaluate_demo_model(label, name, args, model, meta, test_set, pairs, settings, baseline_model,
                                      progress)
        eval_seconds = time.perf_counter() - t0
        timings[label] = {"train_s": train_seconds, "eval_s": eval_seconds}
        results["model"] = dict(results.get("model") or {}, name=label, weights=sources[label])
        all_results.append(results)
        steering = results["results"].get("steering") or {}
        gallery += attention_gallery(label, model, meta, test_set, pairs["test"], settings, fig_dir,
                                     prior_scale=steering.get("prior_scale", 40.0))
        if label == CORRUPTION_BASELINE:
            baseline_model = model
        top1 = results["results"]["clean"]["top1"]
        log(f"{label}: clean top-1 {top1:.1f}% (train {train_seconds:.0f} s, eval {eval_seconds:.0f} s)")

    trainer = trainer_showcase(settings, sources, all_results, ckpt_root, retrain, progress, log)
    task_zoo = settings.use_zoo and not retrain
    domain_models = [m for m in chosen if m[0] in DOMAIN_MODELS]
    domains = (zoo_domain_table(domain_models, settings, progress, log) if task_zoo else None) \
        or domain_generalisation(domain_models, checkpoints, settings, tune_root / "domains", retrained, progress, log)
    segmentation, seg_gallery = segmentation_demo(checkpoints, settings.tasks, tune_root, retrained, progress,
                                                  log, fig_dir, task_zoo)
    multilabel, multi_gallery = multilabel_demo(checkpoints, settings.tasks, tune_root, retrained, progress,
                                                log, fig_dir, task_zoo)
    gallery += seg_gallery + multi_gallery
    total = time.perf_counter() - t_start
    summary = {
        "settings": dataclasses.asdict(settings),
        "quick": quick,
        "data_seconds": data_seconds,
        "total_seconds": total,
        "timings": timings,
        "weights": sources,
        "trainer": trainer,
        "models": nan_to_none(all_results),
        "domains": nan_to_none(domains),
        "segmentation": nan_to_none(segmentation),
        "multilabel": nan_to_none(multilabel),
    }
    write_demo_files(out, summary, all_results, gallery, settings, domains, segmentation, multilabel)
    log(f"report written to {out / 'index.html'} in {total:.0f} s")
    return summary


def write_demo_files(out: Path, summary: dict[str, Any], all_results: list[dict], gallery: list[tuple[str, str]],
                     settings: DemoSettings, domains, segmentation, multilabel) -> None:
    """The report's files: the per-model report and plots, ``results.json`` (``summary``), the
    task rows appended to ``report.md``, and ``index.html``."""
    files = write_report(all_results, out, stem="report")
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n",
                      what="results file")
    plots = [p.name for p in files if p.suffix == ".png"]
    if len(settings.severities) < 2:  # one point per panel: the heat map shows the same numbers
        plots = [p for p in plots if not p.endswith(PLOT_CORRUPTIONS)]
    tasks_md = "\n".join(task_rows(segmentation, multilabel))
    if tasks_md:
        report_md = out / "report.md"
        atomic_write_text(report_md, report_md.read_text(encoding="utf-8") + tasks_md + "\n", what="report file")
    write_html(out, all_results, markdown_report(all_results), plots, gallery, settings, summary["total_seconds"],
               domains, tasks_md, task_findings(segmentation, multilabel), summary["weights"],
               summary["trainer"])


def evaluate_demo_model(label: str, name: str, args: dict, model, meta: dict, test_set, pairs: dict,
                        settings: DemoSettings, baseline_model, progress: bool) -> dict[str, Any]:
    """The demo's suites on one model: clean, corruptions (mCE against ``baseline_model``), FGSM
    and PGD (a glimpse model attacked through ``settings.attack_readout``), the attention on the
    object where the model draws maps, steering where a prior steers it (the per-image benchmark
    on the test ``pairs``, its protocol chosen on the validation ``pairs``), and a glimpse
    model's top-1 when it looks longer than it trained."""
    glimpse = capable(model, Glimpsing)
    common = dict(mean=meta["mean"], std=meta["std"], img_size=meta["img_size"], classes=meta.get("classes"),
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
    attacks = run_suites(model, test_set, ["fgsm", "pgd"], limit=settings.attack_images, **attack_kw, **common)
    results["results"].update(corr["results"])
    results["results"].update(attacks["results"])
    if has_maps(model):
        results["results"]["attention"] = mask_attention_scores(model, test_set, settings.attention_images)
    if capable(model, TopDownSteerable):
        results["results"]["steering"] = run_suites(
            model, pairs["test"], ["steering"], limit=settings.steering_images, steering_validation_data=pairs["val"],
            **common)["results"]["steering"]
    if glimpse:
        longer = run_suites(model, test_set, ["clean"], limit=settings.eval_images,
                            readouts=max(16, settings.glimpses), **common)["results"]["clean"]
        results["results"]["glimpses"] = {
            "per_glimpse_top1": longer.get("per_readout_top1"),
            "trained_glimpses": int(getattr(model, "num_glimpses", settings.glimpses)),
        }
    return results


def trainer_showcase(settings: DemoSettings, sources: dict[str, str], results: list[dict], ckpt_root: Path,
                     retrain: bool, progress: bool, log) -> dict[str, Any] | None:
    """When the compared models come from the zoo, the trainer still runs once: the demo's
    ``trainer_model`` trained from scratch on ``settings.data``, its clean top-1 set beside the
    zoo's (None when the demo trained its models itself)."""
    label, name, args = settings.trainer_model
    if FROM_ZOO not in sources.values():
        return None
    model, meta, seconds = train_here(f"{label} (trained here)", name, args, settings,
                                      ckpt_root / f"trainer-{slug(label)}", retrain, progress, log)
    test_set = build_dataset(settings.data, "test", meta["img_size"], meta["mean"], meta["std"])
    clean = run_suites(model, test_set, ["clean"], limit=settings.eval_images, mean=meta["mean"], std=meta["std"],
                       img_size=meta["img_size"], progress=progress, seed=settings.seed,
                       device="auto")["results"]["clean"]
    zoo_top1 = next((r["results"]["clean"]["top1"] for r in results
                     if r["model"]["name"] == label and sources.get(label) == FROM_ZOO), None)
    log(f"{label} trained here: clean top-1 {clean['top1']:.1f}% after {settings.epochs} epochs ({seconds:.0f} s)")
    return {"label": label, "model": name, "model_args": args, "epochs": settings.epochs, "data": settings.data,
            "train_s": seconds, "top1": clean["top1"], "n": clean["n"], "zoo_top1": zoo_top1}


def _sources_key(chosen: Sequence[tuple[str, str, dict[str, Any]]], settings: DemoSettings, retrain: bool) -> str:
    """Names the classifiers' origins: the digest of each zoo weight file used (``demo`` for a
    model the demo trains)."""
    origin = {}
    for label, name, args in chosen:
        folder = zoo_folder(name, args) if settings.use_zoo and not retrain else None
        origin[label] = file_sha256(folder / "model.safetensors") if folder is not None else "demo"
    return hashlib.sha256(json.dumps(origin, sort_keys=True).encode()).hexdigest()[:12]


def zoo_domain_table(models: Sequence[tuple[str, str, dict[str, Any]]], settings: DemoSettings, progress: bool,
                     log) -> dict[str, Any] | None:
    """The domain-generalisation table of the zoo's leave-one-style-out models: for every demo
    model with such an entry for each of the four styles, each entry's top-1 on the test images
    (at most ``settings.eval_images``) of the style it never saw. None when no model has them."""
    rows: list[dict[str, Any]] = []
    test_images: dict[str, int] = {}
    for label, name, args in models:
        entries = zoo_style_entries(name, args)
        if entries is None:
            continue
        log(f"[bold]domain generalisation[/]: {label}, the zoo's leave-one-style-out models")
        top1 = {}
        for style, entry in entries.items():
            clean = held_out_figures(entry, settings.eval_images, settings.seed, progress)["results"]["clean"]
            top1[style], test_images[style] = clean["top1"], clean["n"]
        mean = sum(top1.values()) / len(top1)
        rows.append({"label": label, "model": name, "model_args": dict(args), "top1": top1, "mean_top1": mean,
                     "entries": {style: e.name for style, e in entries.items()}, "weights": FROM_ZOO})
        log(f"{label}: mean top-1 on held-out styles {mean:.1f}% (zoo)")
    if not rows:
        return None
    return {"data": STYLES_ROOT, "epochs": STYLE_SETTINGS["epochs"], "weights": FROM_ZOO, "test_domains": list(STYLES),
            "test_images": test_images, "rows": rows}


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
        folder = root / slug(label)
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
    return {"data": settings.domain_data, "epochs": settings.domain_epochs, "weights": FROM_DEMO,
            "test_domains": result["test_domains"], "test_images": result["test_images"], "rows": rows}
