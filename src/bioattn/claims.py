"""The sources' claims, measured on the model zoo.

``bioattn results`` (``make results``; Python: :func:`write_results`) loads every built zoo
entry (:mod:`bioattn.zoo`), evaluates it on the test split of the embedded benchmark and writes
``docs/results.md``: one row per claim of the sources (AbSViT, VARS, RS-RNN) with the source's
figure, ours, the number of images it rests on and a verdict, then the figures of every model;
``docs/results/`` holds the full tables, the plots and ``results.json``.

A verdict compares two accuracies (or shares) by their difference against twice its standard
error (the two figures' binomial or per-image errors combined):

* ``holds``: the difference has the claimed sign and exceeds twice its standard error;
* ``does not hold``: it has the opposite sign and exceeds twice its standard error;
* ``not resolved``: within twice its standard error (more images would be needed);
* ``not measured``: a zoo entry the claim needs is not built (the row says which and how).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .attention.maps import has_maps
from .checkpoint import load_model, read_meta
from .config import ResultsSettings
from .data import build_dataset
from .errors import BioattnError
from .evaluate.glimpses import fixations_on_mask_dataset
from .evaluate.object_attention import mask_attention_scores
from .evaluate.report import nan_to_none, write_report
from .evaluate.segmentation import constant_prediction_miou
from .evaluate.suites import run_suites
from .fileio import atomic_write_text, check_output_file, output_folder
from .metrics.segmentation import SegmentationMeter
from .models.inputs import InputConfig
from .protocol import Glimpsing, TopDownSteerable, capable
from .tasks.registry import get_task
from .tasks.spec import task_of_data
from .zoo import BENCHMARK, MULTILABEL_BENCHMARK, SEGMENTATION_BENCHMARK, STYLES, ZOO, ZooEntry, find_entry

PAIR_BENCHMARK = "embedded:pair"
HOLDS, FAILS, UNRESOLVED, UNMEASURED = "holds", "does not hold", "not resolved", "not measured"
# a segmenter's test images are cut into this many folds: the spread of the per-fold mIoU
# differences gives the standard error of a difference in mIoU
SEGMENTATION_FOLDS = 10


# --------------------------------------------------------------------------------------------
# measuring one zoo entry
# --------------------------------------------------------------------------------------------
def _model_info(entry: ZooEntry) -> dict[str, Any]:
    return {"name": entry.label, "model": entry.model, "model_args": entry.model_args, "entry": entry.name}


def measure_entry(entry: ZooEntry, settings: ResultsSettings, progress: bool = False) -> dict[str, Any]:
    """Every figure the claims use, for one built classifier of the zoo: clean top-1, top-1
    under the 15 corruptions, FGSM and PGD (glimpse models: at every glimpse, the attack aimed at
    ``attack_readout``), the attention on the object and, for a steerable model, steering on
    two-object images. Returns :func:`~bioattn.evaluate.suites.run_suites`' layout."""
    model, meta = load_model(entry.folder), read_meta(entry.folder)
    size, mean, std = meta["img_size"], meta["mean"], meta["std"]
    test_set = build_dataset(BENCHMARK, "test", size, mean, std)
    glimpse = capable(model, Glimpsing)
    common = dict(mean=mean, std=std, img_size=size, classes=meta.get("classes"), progress=progress,
                  seed=settings.seed, device="auto",
                  model_info=_model_info(entry))
    readouts = {"readouts": settings.glimpses} if glimpse else {}
    result = run_suites(model, test_set, ["clean"], limit=settings.images, **readouts, **common)
    more = run_suites(model, test_set, ["corruptions"], limit=settings.corruption_images,
                      severities=[settings.severity], **common)
    result["results"].update(more["results"])
    attack = dict(readouts, attack_readout=settings.attack_readout) if glimpse else {}
    more = run_suites(model, test_set, ["fgsm", "pgd"], limit=settings.attack_images, **attack, **common)
    result["results"].update(more["results"])
    if has_maps(model):
        result["results"]["attention"] = mask_attention_scores(model, test_set, settings.attention_images)
    if glimpse:
        result["results"]["trained_glimpses"] = int(getattr(model, "num_glimpses", 0)) or None
        result["results"]["fixations"] = fixations_on_mask_dataset(model, test_set, settings.glimpses,
                                                                   limit=settings.attention_images)
    if capable(model, TopDownSteerable):
        pairs = build_dataset(PAIR_BENCHMARK, "test", size, mean, std)
        result["results"]["steering"] = run_suites(model, pairs, ["steering"], limit=settings.steering_images,
                                                   **common)["results"]["steering"]
    return result


@torch.no_grad()
def fold_mious(model: torch.nn.Module, dataset, images: int, folds: int = SEGMENTATION_FOLDS,
               batch_size: int = 100) -> list[float]:
    """mIoU (%) of a segmenter on each of ``folds`` consecutive folds of the first ``images``
    images of ``dataset``."""
    model.eval()
    n = min(images, len(dataset))
    edges = [round(i * n / folds) for i in range(folds + 1)]
    scores = []
    for lo, hi in zip(edges, edges[1:]):
        meter = SegmentationMeter(int(model.num_classes))
        for start in range(lo, hi, batch_size):
            batch = [dataset[i] for i in range(start, min(start + batch_size, hi))]
            meter.update(model(torch.stack([b[0] for b in batch])),
                         torch.stack([torch.as_tensor(b[1]) for b in batch]))
        scores.append(meter.compute()["miou"])
    return scores


def measure_task_entry(entry: ZooEntry, settings: ResultsSettings, progress: bool = False) -> dict[str, Any]:
    """The figures of a zoo segmenter (mIoU, per-class IoU, the all-background baseline and the
    per-fold mIoU) or multi-label model (mAP, the label-frequency baseline; a glimpse model's
    fixations on the objects, glimpse by glimpse) on the test split of its data."""
    model, meta = load_model(entry.folder), read_meta(entry.folder)
    task = get_task(task_of_data(entry.data))
    test_set = task.build_dataset(entry.data, "test", InputConfig.of_meta(meta), train=False)
    suites = ["clean", "glimpses"] if task.name == "multilabel" and capable(model, Glimpsing) else ["clean"]
    readouts = {"readouts": settings.glimpses} if "glimpses" in suites else {}
    result = run_suites(model, test_set, suites, limit=settings.images, task=task.name, mean=meta["mean"],
                        std=meta["std"], img_size=meta["img_size"], classes=meta.get("classes"), progress=progress,
                        seed=settings.seed, device="auto", **readouts,
                        model_info=_model_info(entry))
    if task.name == "segmentation":
        result["results"]["folds"] = fold_mious(model, test_set, settings.images)
        result["results"]["all_background"] = constant_prediction_miou(test_set, int(model.num_classes),
                                                                       limit=settings.images)["miou"]
    return result


def held_out_figures(entry: ZooEntry, limit: int | None = None, seed: int = 0,
                     progress: bool = False) -> dict[str, Any]:
    """Clean figures of a leave-one-style-out entry on the test images (at most ``limit``, spread
    over the split) of the style it never saw."""
    model, meta = load_model(entry.folder), read_meta(entry.folder)
    test_set = build_dataset(entry.data, "test", meta["img_size"], meta["mean"], meta["std"], classes=meta["classes"])
    return run_suites(model, test_set, ["clean"], limit=limit, mean=meta["mean"], std=meta["std"],
                      img_size=meta["img_size"], classes=meta.get("classes"), progress=progress, seed=seed,
                      device="auto", model_info=_model_info(entry))


def measure_style_entry(entry: ZooEntry, settings: ResultsSettings, progress: bool = False) -> dict[str, Any]:
    """Top-1 of a leave-one-style-out model on every test image of the style it never saw."""
    return held_out_figures(entry, seed=settings.seed, progress=progress)


def held_out(entry: ZooEntry) -> str | None:
    """The style a leave-one-style-out entry is tested on (None for other entries)."""
    if not entry.data.startswith("domains:"):
        return None
    return next(s for s in STYLES if f"test={s}," in entry.data)


def style_models(measured: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The measured leave-one-style-out entries, by the entry they start from, then by held-out style."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, result in measured.items():
        entry = find_entry(name)
        style = held_out(entry)
        if style is not None:
            start = entry.settings["init"].removeprefix("zoo:")
            out.setdefault(start, {})[style] = result
    return out


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one measured entry the claims read (None where not measured)."""
    r = result.get("results", {})

    def attack(suite: str) -> dict[str, Any]:
        runs = (r.get(suite) or {}).get("runs") or [{}]
        return runs[0]

    def attacked_top1(run: dict[str, Any]) -> float | None:
        # a multi-readout model is scored at the readout the attack aims at
        return run.get("attacked_readout_top1") if run.get("attack_readout") else run.get("top1")

    pgd = attack("pgd")
    clean = r.get("clean") or {}
    glimpses = r.get("glimpses") or {}
    small = glimpses.get("on_small_object") or []
    return {
        "miou": clean.get("miou"),
        "miou_folds": r.get("folds"),
        "shape_ious": (clean.get("per_class_iou") or [None])[1:],
        "all_background": r.get("all_background"),
        "map": clean.get("map"),
        "label_frequency_map": clean.get("label_frequency_map"),
        # fixations from the second glimpse on (the first is the image centre) on small objects
        "small_object_fixations": sum(small[1:]) / len(small[1:]) if len(small) > 1 else None,
        "small_object_random": glimpses.get("random_small_object"),
        "n_small": glimpses.get("n_images_with_small"),
        "clean": (r.get("clean") or {}).get("top1"),
        "n_clean": (r.get("clean") or {}).get("n"),
        "clean_per_glimpse": (r.get("clean") or {}).get("per_readout_top1"),
        "trained_glimpses": r.get("trained_glimpses"),
        "corrupted": (r.get("corruptions") or {}).get("mean_top1"),
        "n_corrupted": (r.get("corruptions") or {}).get("n"),
        "fgsm": attacked_top1(attack("fgsm")),
        "pgd": attacked_top1(pgd),
        "pgd_per_glimpse": pgd.get("per_readout_top1"),
        "n_attack": pgd.get("n"),
        "on_object": (r.get("attention") or {}).get("mask_share"),
        "on_object_std": (r.get("attention") or {}).get("mask_share_std"),
        "object_area": (r.get("attention") or {}).get("mask_share_chance"),
        "object_auc": (r.get("attention") or {}).get("mask_auc"),
        "object_auc_std": (r.get("attention") or {}).get("mask_auc_std"),
        "n_attention": (r.get("attention") or {}).get("n_images"),
        "fixations_on_object": (r.get("fixations") or {}).get("learned"),
        "fixations_random": (r.get("fixations") or {}).get("random"),
        "n_fixated": (r.get("fixations") or {}).get("n_images"),
        "steering_win_rate": (r.get("steering") or {}).get("win_rate"),
        "n_pairs": (r.get("steering") or {}).get("n_pairs"),
    }


# --------------------------------------------------------------------------------------------
# verdicts
# --------------------------------------------------------------------------------------------
def binomial_se(percent: float, n: int) -> float:
    """Standard error, in points, of an accuracy of ``percent`` on ``n`` images."""
    p = min(max(percent / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1 - p) / n) if n else math.inf


def verdict(diff: float, se: float) -> str:
    """:data:`HOLDS` when ``diff`` (claimed positive) exceeds twice its standard error ``se``,
    :data:`FAILS` when it is below minus twice, else :data:`UNRESOLVED`."""
    if diff > 2 * se:
        return HOLDS
    if diff < -2 * se:
        return FAILS
    return UNRESOLVED


@dataclass
class ClaimRow:
    """One row of the claims table."""

    claim: str
    source: str
    source_figure: str
    ours: str
    images: str
    verdict: str


@dataclass(frozen=True)
class Claim:
    """A claim of a source, measured on the zoo entries ``entries`` by ``measure`` (which gets
    their headline figures, in order, and returns the figure text, the images and the verdict)."""

    claim: str
    source: str
    source_figure: str
    entries: tuple[str, ...]
    measure: Callable[[list[dict[str, Any]]], tuple[str, str, str]] | None = None
    missing: str = ""  # why the claim cannot be measured on the zoo at all


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}%"


def more_robust(key: str, n_key: str) -> Callable[[list[dict[str, Any]]], tuple[str, str, str]]:
    """System (first entry) above its baseline (second) in figure ``key`` (top-1 in %)."""

    def measure(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
        a, b = scores
        if a[key] is None or b[key] is None:
            return "-", "-", UNMEASURED
        n = a[n_key] or 0
        se = math.hypot(binomial_se(a[key], n), binomial_se(b[key], b[n_key] or 0))
        text = f"{_pct(a[key])} vs {_pct(b[key])} (clean {_pct(a['clean'])} vs {_pct(b['clean'])})"
        return text, f"{n} per model", verdict(a[key] - b[key], se)

    return measure


def closer_to_object(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
    """The system's attention map ranks the object's pixels above the rest better than the
    baseline's: AUC-Judd against the object mask, as saliency benchmarks score maps against
    fixations (the share of the map's mass on the object is shown too; it also depends on how
    peaked a map is)."""
    a, b = scores
    if a["object_auc"] is None or b["object_auc"] is None:
        return "-", "-", UNMEASURED
    n = a["n_attention"] or 0
    se = math.hypot(a["object_auc_std"], b["object_auc_std"]) / math.sqrt(n) if n else math.inf
    text = (f"AUC against the object mask {a['object_auc']:.3f} vs {b['object_auc']:.3f} (random map 0.5); "
            f"share of the map on the object {_pct(a['on_object'])} vs {_pct(b['on_object'])} (object area "
            f"{_pct(a['object_area'])})")
    return text, f"{n} per model", verdict(a["object_auc"] - b["object_auc"], se)


def steers(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
    """The prompted object wins more often than chance (a win rate above one half)."""
    (a,) = scores
    if a["steering_win_rate"] is None:
        return "-", "-", UNMEASURED
    n = a["n_pairs"] or 0
    se = 100.0 * math.sqrt(0.25 / n) if n else math.inf
    win = 100.0 * a["steering_win_rate"]
    return (f"prompted object gets more top-down attention in {win:.1f}% of pairs (chance 50%)",
            f"{n} pairs", verdict(win - 50.0, se))


def fixations_above_random(on: str, random: str, n_key: str, target: str, images: str = "{n}",
                           with_map: bool = False) -> Callable[[list[dict[str, Any]]], tuple[str, str, str]]:
    """Fixations (glimpses 2 on) on ``target`` (figure ``on``) more often than uniformly random
    points (figure ``random``, the target's area), over ``n_key`` images."""

    def measure(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
        (a,) = scores
        if a[on] is None:
            return "-", "-", UNMEASURED
        n = a[n_key] or 0
        # the fixations of one image are not independent: the error counts images, not fixations
        se = binomial_se(a[on], n)
        text = f"{_pct(a[on])} of fixations on {target} (random points: {_pct(a[random])})"
        return (text + (f"; mAP {_pct(a['map'])}" if with_map else ""), images.format(n=n),
                verdict(a[on] - a[random], se))

    return measure


# one object among distractors; the small objects of multi-object images
fixates_object = fixations_above_random("fixations_on_object", "fixations_random", "n_fixated", "the object")
fixates_small_objects = fixations_above_random("small_object_fixations", "small_object_random", "n_small",
                                               "a small object", "{n} images with a small object", with_map=True)


def segments_better(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
    """The system's segmenter above the baseline's in mIoU; the standard error of the difference
    comes from its spread over the folds of the test images (the same images for both)."""
    a, b = scores
    if a["miou"] is None or b["miou"] is None or not a["miou_folds"] or not b["miou_folds"]:
        return "-", "-", UNMEASURED
    diffs = [x - y for x, y in zip(a["miou_folds"], b["miou_folds"])]
    k = len(diffs)
    mean = sum(diffs) / k
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (k - 1) / k) if k > 1 else math.inf
    text = (f"mIoU {a['miou']:.1f}% vs {b['miou']:.1f}% (all background {a['all_background']:.1f}%); weakest "
            f"shape class {min(a['shape_ious']):.1f}% vs {min(b['shape_ious']):.1f}% IoU")
    return text, f"{k} folds of the test images", verdict(a["miou"] - b["miou"], se)


def generalises_better(styles: Sequence[str]) -> Callable[[list[dict[str, Any]]], tuple[str, str, str]]:
    """The system's mean top-1 over held-out ``styles`` above the baseline's: the scores are the
    system's models (one per held-out style, in order), then the baseline's."""

    def measure(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
        k = len(styles)
        system, base = scores[:k], scores[k:]

        def mean_and_se(models: list[dict[str, Any]]) -> tuple[float, float]:
            mean = sum(m["clean"] for m in models) / k
            return mean, math.sqrt(sum(binomial_se(m["clean"], m["n_clean"] or 0) ** 2 for m in models)) / k

        if any(m["clean"] is None for m in scores):
            return "-", "-", UNMEASURED
        (a, se_a), (b, se_b) = mean_and_se(system), mean_and_se(base)
        per = ", ".join(f"{s} {x['clean']:.1f} vs {y['clean']:.1f}" for s, x, y in zip(styles, system, base))
        n = sum(m["n_clean"] or 0 for m in system)
        return (f"mean held-out top-1 {_pct(a)} vs {_pct(b)} (chance 10%; per style: {per})",
                f"{n} per model ({k} styles)", verdict(a - b, math.hypot(se_a, se_b)))

    return measure


def keeps_accuracy(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
    """Clean top-1 at the last glimpse not below the top-1 at the trained number of glimpses
    (more than twice the standard error below counts as lower)."""
    (a,) = scores
    per, trained = a["clean_per_glimpse"], a["trained_glimpses"]
    if not per or not trained or len(per) < trained:
        return "-", "-", UNMEASURED
    n = a["n_clean"] or 0
    at, last = per[trained - 1], per[-1]
    se = math.hypot(binomial_se(at, n), binomial_se(last, n))
    return (f"{_pct(at)} at glimpse {trained} (trained) -> {_pct(last)} at glimpse {len(per)}", f"{n}",
            FAILS if last - at < -2 * se else HOLDS)


def _glimpse_recovery(a: dict[str, Any], attack_readout: int) -> tuple[float, float, float, int] | None:
    per = a["pgd_per_glimpse"]
    if not per or len(per) < attack_readout:
        return None
    n = a["n_attack"] or 0
    at, last = per[attack_readout - 1], per[-1]
    return at, last, math.hypot(binomial_se(at, n), binomial_se(last, n)), n


def recovers(attack_readout: int, expected: bool) -> Callable[[list[dict[str, Any]]], tuple[str, str, str]]:
    """Top-1 under PGD aimed at glimpse ``attack_readout`` higher at the last glimpse than at the
    attacked one (``expected``), or not higher (a baseline)."""

    def measure(scores: list[dict[str, Any]]) -> tuple[str, str, str]:
        found = _glimpse_recovery(scores[0], attack_readout)
        if found is None:
            return "-", "-", UNMEASURED
        at, last, se, n = found
        text = f"{_pct(at)} at glimpse {attack_readout} -> {_pct(last)} at glimpse {len(scores[0]['pgd_per_glimpse'])}"
        outcome = verdict(last - at, se)
        if not expected:  # the claim is that the baseline does not recover
            outcome = {HOLDS: FAILS, FAILS: HOLDS, UNRESOLVED: HOLDS}[outcome]
        return text, f"{n}", outcome

    return measure


def claims(settings: ResultsSettings) -> list[Claim]:
    """Every claim of the sources, in the order of the results page."""
    k = settings.attack_readout
    absvit_c = "ImageNet-C mCE (lower is better) ViT -> AbSViT: Ti 71.1 -> 66.7, S 54.6 -> 51.6, B 49.3 -> 48.3"
    vars_rob = "VARS improves robustness (ImageNet-C, -R, -Sketch, -A, PGD) of each backbone"
    rows = [
        Claim("AbSViT is more robust than ViT to corruptions", "AbSViT", absvit_c,
              ("absvit_micro_patch8_64", "vit_micro_patch8_64"), more_robust("corrupted", "n_corrupted")),
        Claim("AbSViT is more robust than ViT to adversarial attack (PGD)", "AbSViT",
              "more robust to adversarial attack", ("absvit_micro_patch8_64", "vit_micro_patch8_64"),
              more_robust("pgd", "n_attack")),
        Claim("AbSViT's attention is steered by a class prior", "AbSViT",
              "top-down attention follows the prompted class (official demo)", ("absvit_micro_patch8_64",), steers),
        Claim("AbSViT's attention is on the object more than ViT's", "AbSViT",
              "top-down attention focuses on the object", ("absvit_micro_patch8_64", "vit_micro_patch8_64"),
              closer_to_object),
    ]
    for system, base, where in (("rvt_micro_vars_d", "rvt_micro", "RVT VARS-D vs self-attention"),
                                ("rvt_micro_vars_s", "rvt_micro", "RVT VARS-S vs self-attention"),
                                ("rvt_micro_vars_sd", "rvt_micro", "RVT VARS-SD vs self-attention"),
                                ("deit_micro_patch8_64_vars_d", "vit_micro_patch8_64", "DeiT-style ViT VARS-D vs ViT"),
                                ("gfnet_micro_vars_s", "gfnet_micro", "GFNet VARS-S vs global filter")):
        rows.append(Claim(f"VARS is more robust to corruptions: {where}", "VARS", vars_rob, (system, base),
                          more_robust("corrupted", "n_corrupted")))
        rows.append(Claim(f"VARS is more robust to PGD: {where}", "VARS", vars_rob, (system, base),
                          more_robust("pgd", "n_attack")))
    rows += [
        Claim("VARS-D's attention is closer to the object than self-attention's (RVT)", "VARS",
              "VARS-D maps agree better with human fixations (MIT1003) than self-attention's",
              ("rvt_micro_vars_d", "rvt_micro"), closer_to_object),
        Claim("VARS-D's attention is closer to the object than self-attention's (DeiT-style ViT)", "VARS",
              "VARS-D maps agree better with human fixations (MIT1003) than self-attention's",
              ("deit_micro_patch8_64_vars_d", "vit_micro_patch8_64"), closer_to_object),
        Claim("VARS generalises better across domains: RVT VARS-D vs self-attention, leave one style out", "VARS",
              "better PACS domain generalisation",
              tuple(f"{start}_without_{s}" for start in ("rvt_micro_vars_d", "rvt_micro") for s in STYLES),
              generalises_better(STYLES)),
        Claim("VARS segments better: UperNet on RVT VARS-D vs self-attention", "VARS",
              "better PASCAL VOC segmentation", ("upernet_rvt_micro_vars_d", "upernet_rvt_micro"), segments_better),
        Claim("AbSViT segments better than ViT (UperNet)", "AbSViT",
              "mIoU ViT-B -> AbSViT-B: VOC 80.1 -> 81.3, Cityscapes 75.3 -> 76.8, ADE20K 45.2 -> 47.2",
              ("upernet_absvit_micro_patch8_64", "upernet_vit_micro_patch8_64"), segments_better),
        Claim("RS-RNN: clean top-1 does not fall when it looks longer than it was trained to", "RS-RNN",
              "trained with 4-8 glimpses, tested up to 16", ("rsrnn_micro",), keeps_accuracy),
        Claim(f"RS-RNN: top-1 under PGD aimed at glimpse {k} recovers with more glimpses", "RS-RNN",
              "accuracy under attack grows with more glimpses", ("rsrnn_micro",), recovers(k, True)),
    ]
    for entry, label in (("crop_s_micro", "Crop-S"), ("crop_d_micro", "Crop-D"),
                         ("retina_gru_micro", "Retina-GRU"), ("s3ta_micro", "S3TA")):
        rows.append(Claim(f"{label} (baseline): top-1 under PGD aimed at glimpse {k} does not recover", "RS-RNN",
                          "the baselines' accuracy under attack does not recover", (entry,), recovers(k, False)))
    rows.append(Claim("RS-RNN's fixations land on the object (one object among distractors)", "RS-RNN",
                      "fixations land on small objects in cluttered scenes", ("rsrnn_micro",), fixates_object))
    rows.append(Claim("RS-RNN fixates the small objects of multi-object scenes (multi-label)", "RS-RNN",
                      "fixations land on small objects in cluttered scenes", ("multilabel_rsrnn_micro",),
                      fixates_small_objects))
    return rows


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
def measure_zoo(settings: ResultsSettings, names: Sequence[str] | None = None, progress: bool = False,
                log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """The measured figures of every built entry of the zoo (or of ``names``), by entry name:
    :func:`measure_entry` for the benchmark's classifiers, :func:`measure_task_entry` for the
    segmenters and multi-label models."""
    entries = [find_entry(n) for n in names] if names else list(ZOO)
    measured = {}
    for entry in entries:
        if not entry.is_built():
            continue
        if log:
            log(f"measuring {entry.name}")
        measure = (measure_entry if entry.data == BENCHMARK else
                   measure_style_entry if held_out(entry) else measure_task_entry)
        result = measure(entry, settings, progress)
        result["model"] = dict(result.get("model") or {}, name=entry.label, entry=entry.name)
        measured[entry.name] = result
    return measured


def claim_rows(settings: ResultsSettings, measured: dict[str, dict[str, Any]]) -> list[ClaimRow]:
    """The claims table from the measured entries."""
    rows = []
    for c in claims(settings):
        if c.missing or c.measure is None:
            rows.append(ClaimRow(c.claim, c.source, c.source_figure, f"not measured: {c.missing}", "-",
                                 UNMEASURED))
            continue
        absent = [e for e in c.entries if e not in measured]
        if absent:
            how = ", ".join(absent)
            rows.append(ClaimRow(c.claim, c.source, c.source_figure,
                                 f"not measured: zoo entry {how} not built (bioattn zoo --only {how})", "-",
                                 UNMEASURED))
            continue
        ours, images, outcome = c.measure([headline(measured[e]) for e in c.entries])
        rows.append(ClaimRow(c.claim, c.source, c.source_figure, ours, images, outcome))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def results_markdown(settings: ResultsSettings, measured: dict[str, dict[str, Any]], rows: list[ClaimRow],
                     details: str) -> str:
    """The text of ``docs/results.md``."""
    counts = {v: sum(r.verdict == v for r in rows) for v in (HOLDS, FAILS, UNRESOLVED, UNMEASURED)}
    lines = [
        "# Results: the sources' claims on the embedded benchmark", "",
        "Written by `make results` (`bioattn results`; Python: `bioattn.claims.write_results`) from the "
        "model zoo alone (`src/bioattn/zoo/`, trained by `make zoo`), on the test split of the embedded "
        f"benchmark (`{BENCHMARK}`; steering on `{PAIR_BENCHMARK}`). A verdict compares the two figures' "
        "difference with twice its standard error: **holds** (the claimed sign, beyond it), **does not "
        "hold** (the opposite sign, beyond it), **not resolved** (within it), **not measured** (a model it "
        "needs is not in the zoo, or the page does not score it yet).", "",
        f"Verdicts: {counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[UNRESOLVED]} not resolved, "
        f"{counts[UNMEASURED]} not measured.", "",
        "## Claims", "",
        "| claim | source | the source's figure | ours (embedded benchmark) | images | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {_cell(r.claim)} | {r.source} | {_cell(r.source_figure)} | {_cell(r.ours)} | {r.images} | "
              f"{r.verdict} |" for r in rows]
    lines += ["", "## The models", "",
              f"Top-1 in % on the benchmark's test images: clean ({settings.images}), mean over the 15 "
              f"corruptions at severity {settings.severity} ({settings.corruption_images}), FGSM and PGD at the "
              f"official settings ({settings.attack_images}; glimpse models: {settings.glimpses} glimpses, the "
              f"attack aimed at glimpse {settings.attack_readout}, top-1 at that glimpse); share of the attention "
              f"map on the object ({settings.attention_images}).", "",
              "| zoo entry | model | clean | corrupted | FGSM | PGD | attention on object (object area) | "
              "attention AUC |",
              "|---|---|---|---|---|---|---|---|"]
    for name, result in measured.items():
        if find_entry(name).data != BENCHMARK:
            continue
        h = headline(result)
        on = f"{_pct(h['on_object'])} ({_pct(h['object_area'])})" if h["on_object"] is not None else "-"
        auc = f"{h['object_auc']:.3f}" if h["object_auc"] is not None else "-"
        lines.append(f"| `{name}` | {result['model']['name']} | {_pct(h['clean'])} | {_pct(h['corrupted'])} | "
                     f"{_pct(h['fgsm'])} | {_pct(h['pgd'])} | {on} | {auc} |")
    lines += task_lines(settings, measured)
    lines += ["", "## Training", "",
              "Each entry as `make zoo` trained it (`train.json` beside its weights holds the command and the "
              "log): epochs and learning rate, wall-clock training time on the machine that built it, the "
              "validation score after every epoch (the learning curve: top-1, mIoU for segmenters, mAP for "
              "multi-label models) and the test score of the weights shipped (the best validation epoch) on "
              "the 2000 test images. Segmenters and multi-label models start from the zoo's classifier of "
              "their backbone (`--init zoo:ENTRY`).", "",
              "| zoo entry | epochs | learning rate | training time | validation score by epoch | test score |",
              "|---|---|---|---|---|---|"]
    lines += training_rows(measured)
    missing = [e.name for e in ZOO if e.name not in measured]
    if missing:
        lines += ["", f"Not built yet (so not measured): {', '.join(f'`{m}`' for m in missing)}."]
    lines += ["", details, ""]
    return "\n".join(lines)


def task_lines(settings: ResultsSettings, measured: dict[str, dict[str, Any]]) -> list[str]:
    """The segmenters', multi-label models' and leave-one-style-out models' tables."""
    seg = [(n, r) for n, r in measured.items() if find_entry(n).data == SEGMENTATION_BENCHMARK]
    multi = [(n, r) for n, r in measured.items() if find_entry(n).data == MULTILABEL_BENCHMARK]
    lines: list[str] = []
    if seg:
        classes = (seg[0][1].get("results", {}).get("clean") or {}).get("per_class") or []
        names = [c["class"] for c in classes][1:]
        lines += ["", "## Segmenters", "",
                  f"UperNet on `{SEGMENTATION_BENCHMARK}` ({settings.images} test images): mIoU over the 11 classes "
                  "(background and the 10 shapes), the mIoU of predicting background everywhere, and the IoU "
                  "of every shape class, in %.", "",
                  "| zoo entry | model | mIoU | all background | pixel accuracy | " + " | ".join(names) + " |",
                  "|---|---|---|---|---|" + "---|" * len(names)]
        for name, result in seg:
            h, clean = headline(result), result["results"]["clean"]
            lines.append(f"| `{name}` | {result['model']['name']} | {_pct(h['miou'])} | {_pct(h['all_background'])} "
                         f"| {_pct(clean.get('pixel_acc'))} | " + " | ".join(f"{v:.0f}" for v in h["shape_ious"])
                         + " |")
    if multi:
        lines += ["", "## Multi-label models", "",
                  f"On `{MULTILABEL_BENCHMARK}` (one to three objects per image; {settings.images} test images): mAP "
                  "and the mAP of ranking every image's labels by their training frequency, overall F1, and for a "
                  f"glimpse model the share of fixations (glimpses 2 to {settings.glimpses}) on a small object "
                  "against uniformly random points, in %.", "",
                  "| zoo entry | model | mAP | label frequencies | overall F1 | fixations on a small object "
                  "(random points) |", "|---|---|---|---|---|---|"]
        for name, result in multi:
            h, clean = headline(result), result["results"]["clean"]
            fix = (f"{_pct(h['small_object_fixations'])} ({_pct(h['small_object_random'])})"
                   if h["small_object_fixations"] is not None else "-")
            lines.append(f"| `{name}` | {result['model']['name']} | {_pct(h['map'])} | "
                         f"{_pct(h['label_frequency_map'])} | {_pct(clean.get('f1_overall'))} | {fix} |")
    by_start = style_models(measured)
    if by_start:
        lines += ["", "## Leave one style out", "",
                  "Each model is fine-tuned from the zoo's classifier (trained on the original look) on three of "
                  "the four styles and tested on every test image of the fourth (chance 10%); top-1 in %.", "",
                  "| fine-tuned from | " + " | ".join(f"{s} held out" for s in STYLES) + " | mean | test images |",
                  "|---|" + "---|" * (len(STYLES) + 2)]
        for start, runs in by_start.items():
            tops = [headline(runs[s])["clean"] if s in runs else None for s in STYLES]
            mean = sum(tops) / len(tops) if None not in tops else None
            n = next((headline(r)["n_clean"] for r in runs.values()), "-")
            lines.append(f"| `{start}` | " + " | ".join(_pct(t) for t in tops) + f" | {_pct(mean)} | {n} per style |")
    return lines


def training_rows(measured: dict[str, dict[str, Any]]) -> list[str]:
    """One table row per measured entry from its ``train.json``."""
    rows = []
    for name in measured:
        entry = find_entry(name)
        try:
            record = json.loads((entry.folder / "train.json").read_text())
        except (OSError, ValueError):
            continue
        key = {SEGMENTATION_BENCHMARK: "miou", MULTILABEL_BENCHMARK: "map"}.get(entry.data, "top1")
        curve = " ".join(f"{e[f'val_{key}']:.0f}" for e in record.get("log", []) if e.get(f"val_{key}") is not None)
        minutes = record.get("train_seconds", math.nan) / 60
        words = shlex.split(record.get("command", ""))
        flags = dict(zip(words, words[1:]))
        lr = f"{flags['--base-lr']} per 512 images" if "--base-lr" in flags else flags.get("--lr", "-")
        test = f"{_pct((record.get('test') or {}).get(key))} {dict(top1='top-1', miou='mIoU', map='mAP')[key]}"
        rows.append(f"| `{name}` | {flags.get('--epochs', '-')} | {lr} | {minutes:.1f} min | {curve} | {test} |")
    return rows


def write_results(settings: ResultsSettings | None = None, log: Callable[[str], None] | None = None,
                  **overrides: Any) -> list[ClaimRow]:
    """Measure the zoo and write ``settings.out`` (the claims page) and, beside it, the folder
    of the same name (the full tables and plots, ``results.json``); returns the claims table.
    Keyword ``overrides`` name fields of :class:`~bioattn.config.ResultsSettings`."""
    settings = ResultsSettings(**{**(asdict(settings) if settings else {}), **overrides})
    out = Path(settings.out)
    check_output_file(out, "results page")
    folder = out.parent / out.stem
    measured = measure_zoo(settings, settings.only, settings.progress, log)
    if not measured:
        raise BioattnError("no zoo classifier is built: run bioattn zoo first")
    rows = claim_rows(settings, measured)
    output_folder(folder, "results folder")
    files: list[Path] = []
    for data, stem in ((BENCHMARK, "zoo"), (SEGMENTATION_BENCHMARK, "segmenters"),
                       (MULTILABEL_BENCHMARK, "multilabel")):
        of_task = [r for n, r in measured.items() if find_entry(n).data == data]
        if of_task:
            files += write_report(of_task, folder, stem=stem)
    links = ", ".join(f"[{p.name}]({folder.name}/{p.name})" for p in files)
    atomic_write_text(folder / "results.json", json.dumps(
        nan_to_none({"settings": asdict(settings), "claims": [asdict(r) for r in rows], "models": measured}),
        indent=2, default=str) + "\n", what="results file")
    details = f"Every table of every model, and the plots: {links}; the figures as JSON: " \
              f"[results.json]({folder.name}/results.json)."
    atomic_write_text(out, results_markdown(settings, measured, rows, details), what="results page")
    return rows
