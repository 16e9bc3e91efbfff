"""The demo's segmentation and multi-label parts: models fine-tuned from the demo's classifiers
on the embedded label maps (``embedded:seg``) and multi-object images (``embedded:multi``),
scored, pictured and summed up for the report.

* Segmentation: the ViT and AbSViT classifiers become UperNet segmenters (their backbones start
  from the classification weights; AbSViT keeps its 10-class classifier, frozen, as the table of
  class priors) and are scored by mIoU (with the all-background floor), mIoU under corruptions,
  and, for AbSViT, how a class prior changes the segmentation of the prompted object on
  two-object images.
* Multi-label: the ViT classifier and the RS-RNN glimpse model are fine-tuned with binary
  cross-entropy on images with one to three objects and scored by mAP (against the
  label-frequency baseline); RS-RNN's fixations are counted on the objects, glimpse by glimpse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .attention.scanpaths import plot_glimpses
from .checkpoint import load_model, read_meta
from .config import TrainConfig
from .data.embedded import EmbeddedSpec
from .errors import BioattnError
from .evaluate.segmentation import constant_prediction_miou, plot_segmentation
from .evaluate.suites import run_suites
from .tasks import get_task
from .train import train

# (label, backbone or model, model arguments): each starts from the demo classifier of that label
SEGMENTATION_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ViT", "vit_micro_patch8_64", {}),
    ("AbSViT", "absvit_micro_patch8_64", {"prior_classes": 10}),
)
MULTILABEL_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ViT", "vit_micro_patch8_64", {}),
    ("RS-RNN", "rsrnn_micro", {}),
)


@dataclass(frozen=True)
class TaskDemoSettings:
    """Budget of the segmentation and multi-label parts of the demo."""

    seg_data: str = "embedded:seg,train=2000,val=200,test=300"
    multi_data: str = "embedded:multi,train=2000,val=200,test=300"
    epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-3
    eval_images: int = 300
    corruption_images: int = 100
    corruptions: tuple[str, ...] = ("gaussian_noise", "motion_blur", "fog", "jpeg_compression")
    severities: tuple[int, ...] = (3,)
    glimpses: int = 8
    gallery_images: int = 3

    @property
    def key(self) -> str:
        """Identifies the fine-tuned checkpoints: the settings they were trained with."""
        part = {k: getattr(self, k) for k in ("seg_data", "multi_data", "epochs", "batch_size", "lr")}
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:12]


QUICK_TASKS = TaskDemoSettings(
    seg_data="embedded:seg,train=64,val=16,test=16", multi_data="embedded:multi,train=64,val=16,test=16",
    epochs=1, batch_size=32, eval_images=16, corruption_images=4, corruptions=("gaussian_noise",),
    glimpses=4, gallery_images=1,
)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def train_or_load(config: TrainConfig, what: str, start: str, retrain: bool,
                  log: Callable[[str], None]) -> tuple[Any, dict, float]:
    """The best checkpoint of the run ``config`` writes: loaded from its run directory when a
    usable one is there (and ``retrain`` is off), else trained anew (``start`` is logged first).
    Returns the model, its metadata and the training seconds (0 when loaded)."""
    run_dir = Path(config.output)
    if not retrain and (run_dir / "best" / "model.safetensors").exists():
        try:
            model = load_model(run_dir / "best")
        except BioattnError as exc:  # written by another version of the model code
            log(f"{what}: the cached checkpoint cannot be used ({exc}); training again")
        else:
            log(f"{what}: using the cached checkpoint {run_dir / 'best'}")
            return model, read_meta(run_dir / "best"), 0.0
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log(start)
    t0 = time.perf_counter()
    train(config)
    return load_model(run_dir / "best"), read_meta(run_dir / "best"), time.perf_counter() - t0


def _fine_tune(task: str, label: str, name: str, args: dict, data: str, init: Path, settings: TaskDemoSettings,
               run_dir: Path, retrain: bool, progress: bool, log: Callable[[str], None]) -> tuple[Any, dict, float]:
    """Train (or load from ``run_dir``) ``name`` on ``data`` from the demo checkpoint ``init``."""
    config = TrainConfig(
        model=name, data=data, output=str(run_dir), recipe="small", model_args=dict(args), init=str(init),
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        warmup_epochs=min(1, settings.epochs - 1), progress=progress, tensorboard=False,
        device="cpu" if not torch.cuda.is_available() else "auto",
    )
    return train_or_load(config, f"{label} ({task})", f"[bold]fine-tuning {label} for {task}[/] from {init}",
                         retrain, log)


def _input(meta: dict) -> dict[str, Any]:
    return {"img_size": meta["img_size"], "mean": meta["mean"], "std": meta["std"], "crop_pct": None}


def _fine_tuned_models(task_name: str, models: tuple[tuple[str, str, dict[str, Any]], ...], data: str,
                       checkpoints: dict[str, Path], settings: TaskDemoSettings, ckpt_root: Path,
                       retrained: set[str], progress: bool, log: Callable[[str], None]) -> Iterator[tuple]:
    """For each of ``models`` whose demo classifier exists: the fine-tuned model, its metadata,
    its training seconds, the test set and the settings every suite run shares."""
    task = get_task(task_name)
    for label, name, args in models:
        if label not in checkpoints:
            continue
        run_dir = ckpt_root / f"{task_name}-{settings.key}" / _slug(label)
        model, meta, seconds = _fine_tune(task_name, label, name, args, data, checkpoints[label], settings, run_dir,
                                          label in retrained, progress, log)
        test_set = task.build_dataset(data, "test", _input(meta), train=False)
        common = dict(mean=meta["mean"], std=meta["std"], img_size=meta["img_size"], task=task_name,
                      progress=progress, device="auto", model_info={"name": label, "model": meta["model"]})
        yield label, args, model, meta, seconds, test_set, common


def segmentation_demo(checkpoints: dict[str, Path], settings: TaskDemoSettings, ckpt_root: Path,
                      retrained: set[str], progress: bool, log: Callable[[str], None],
                      fig_dir: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Fine-tune, score and picture the segmenters; returns the figures and the gallery."""
    task = get_task("segmentation")
    results: dict[str, Any] = {"data": settings.seg_data, "epochs": settings.epochs, "models": {}}
    gallery: list[tuple[str, str]] = []
    for label, args, model, meta, seconds, test_set, common in _fine_tuned_models(
            "segmentation", SEGMENTATION_MODELS, settings.seg_data, checkpoints, settings, ckpt_root, retrained,
            progress, log):
        t0 = time.perf_counter()
        if "all_background" not in results:
            results["all_background"] = constant_prediction_miou(test_set, len(meta["classes"]),
                                                                 limit=settings.eval_images)["miou"]
        scores = run_suites(model, test_set, ["clean"], limit=settings.eval_images, **common)["results"]
        scores.update(run_suites(model, test_set, ["corruptions"], limit=settings.corruption_images,
                                 corruptions=list(settings.corruptions), severities=list(settings.severities),
                                 **common)["results"])
        pair_set = None
        if args.get("prior_classes"):  # a backbone classifier to steer with
            spec = dataclasses.replace(EmbeddedSpec.parse(settings.seg_data), pair=True)
            pair_set = task.build_dataset(str(spec), "test", _input(meta), train=False)
            scores.update(run_suites(model, None, ["steering"], limit=settings.eval_images, steering_data=pair_set,
                                     **common)["results"])
        results["models"][label] = {"results": scores, "train_s": seconds, "eval_s": time.perf_counter() - t0}
        gallery += _segmentation_gallery(label, model, meta, test_set, pair_set, settings, fig_dir)
        log(f"{label} segmenter: mIoU {scores['clean']['miou']:.1f}% (all background "
            f"{results['all_background']:.1f}%), train {seconds:.0f} s")
    return results, gallery


@torch.no_grad()
def _segmentation_gallery(label: str, model, meta: dict, test_set, pair_set, settings: TaskDemoSettings,
                          fig_dir: Path) -> list[tuple[str, str]]:
    model.eval()
    n = min(settings.gallery_images, len(test_set))
    images = torch.stack([test_set[i][0] for i in range(n)])
    labels = torch.stack([torch.as_tensor(test_set[i][1]) for i in range(n)])
    name = f"seg-{_slug(label)}.png"
    plot_segmentation(images, labels, model(images), meta["classes"], fig_dir / name, meta["mean"], meta["std"],
                      title=f"{label} segmenter: image, ground truth, prediction")
    out = [(f"{label} segmenter on {n} test images: image, ground truth, prediction", name)]
    if pair_set is not None:
        x, y = pair_set[0]
        objects = [int(c) for c in pair_set.arrays.labels[0]]
        steered = torch.cat([model(x[None], prior=torch.tensor([c])) for c in objects])
        name = f"seg-{_slug(label)}-steered.png"
        classes = meta["classes"]
        plot_segmentation(x[None].expand(2, -1, -1, -1), torch.as_tensor(y)[None].expand(2, -1, -1), steered,
                          classes, fig_dir / name, meta["mean"], meta["std"],
                          title=f"{label} segmenter steered by the prior '{classes[objects[0] + 1]}' (top) "
                                f"and '{classes[objects[1] + 1]}' (bottom)")
        out.append((f"{label} segmenter on a two-object image, steered by each object's class in turn", name))
    return out


def multilabel_demo(checkpoints: dict[str, Path], settings: TaskDemoSettings, ckpt_root: Path,
                    retrained: set[str], progress: bool, log: Callable[[str], None],
                    fig_dir: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Fine-tune and score the multi-label models; returns the figures and the gallery."""
    results: dict[str, Any] = {"data": settings.multi_data, "epochs": settings.epochs, "models": {}}
    gallery: list[tuple[str, str]] = []
    for label, _, model, meta, seconds, test_set, common in _fine_tuned_models(
            "multilabel", MULTILABEL_MODELS, settings.multi_data, checkpoints, settings, ckpt_root, retrained,
            progress, log):
        t0 = time.perf_counter()
        common["limit"] = settings.eval_images
        suites = ["clean", "glimpses"] if hasattr(model, "forward_glimpses") else ["clean"]
        readouts = {"readouts": settings.glimpses} if "glimpses" in suites else {}
        scores = run_suites(model, test_set, suites, **readouts, **common)["results"]
        results["models"][label] = {"results": scores, "train_s": seconds, "eval_s": time.perf_counter() - t0}
        if "glimpses" in suites:
            for i in range(min(settings.gallery_images, len(test_set))):
                name = f"multi-{_slug(label)}-{i}.png"
                plot_glimpses(model, test_set[i][0], fig_dir / name, glimpses=settings.glimpses, mean=meta["mean"],
                              std=meta["std"], class_names=meta["classes"])
                present = [meta["classes"][int(c)] for c in test_set.arrays.labels[i] if c >= 0]
                gallery.append((f"{label}: fixation path over {settings.glimpses} glimpses on an image with "
                                f"{', '.join(present)}", name))
        clean = scores["clean"]
        log(f"{label} multi-label: mAP {clean['map']:.1f}% (label frequencies {clean['label_frequency_map']:.1f}%), "
            f"train {seconds:.0f} s")
    return results, gallery


def task_rows(segmentation: dict[str, Any] | None, multilabel: dict[str, Any] | None) -> list[str]:
    """Markdown tables of the two parts, for the report."""
    lines: list[str] = []
    if segmentation and segmentation.get("models"):
        lines += ["", f"## Segmentation ({segmentation['data']}, {segmentation['epochs']} epochs from the "
                  "demo classifiers)", "",
                  "| model | mIoU | pixel acc | corrupted mIoU | prompted object IoU: no prior -> its prior |",
                  "|---|---|---|---|---|"]
        for label, entry in segmentation["models"].items():
            r = entry["results"]
            steer = r.get("steering") or {}
            steer_text = "-"
            if steer:
                steer_text = (f"{steer['first_without_prior']:.1f} -> {steer['first_with_prior']:.1f} (first), "
                              f"{steer['second_without_prior']:.1f} -> {steer['second_with_prior']:.1f} (second)")
            lines.append(f"| {label} | {r['clean']['miou']:.1f} | {r['clean']['pixel_acc']:.1f} | "
                         f"{r['corruptions']['mean_miou']:.1f} | {steer_text} |")
        lines += ["", f"Predicting background everywhere gives {segmentation['all_background']:.1f}% mIoU."]
    if multilabel and multilabel.get("models"):
        lines += ["", f"## Multi-label recognition ({multilabel['data']}, {multilabel['epochs']} epochs from the "
                  "demo classifiers)", "",
                  "| model | mAP | mAP of label frequencies | F1 (overall) | fixations on an object, per glimpse |",
                  "|---|---|---|---|---|"]
        for label, entry in multilabel["models"].items():
            r = entry["results"]
            glimpses = r.get("glimpses") or {}
            per = ", ".join(f"{v:.0f}" for v in glimpses.get("on_object", [])) or "-"
            lines.append(f"| {label} | {r['clean']['map']:.1f} | {r['clean']['label_frequency_map']:.1f} | "
                         f"{r['clean']['f1_overall']:.1f} | {per} |")
    return lines


def task_findings(segmentation: dict[str, Any] | None, multilabel: dict[str, Any] | None) -> list[str]:
    """One sentence per finding of the two parts, from their numbers."""
    out: list[str] = []
    models = (segmentation or {}).get("models") or {}
    if models:
        floor = segmentation["all_background"]
        parts = [f"{label} {e['results']['clean']['miou']:.1f}%" for label, e in models.items()]
        out.append(f"Segmentation: mIoU {', '.join(parts)}, against {floor:.1f}% for predicting background "
                   "everywhere.")
        for label, e in models.items():
            steer = e["results"].get("steering")
            if steer:
                gain = steer["gain"]
                verb = "raises" if gain > 1.0 else "lowers" if gain < -1.0 else "hardly changes"
                out.append(f"{label}'s class prior {verb} the prompted object's IoU: first object "
                           f"{steer['first_without_prior']:.1f} -> {steer['first_with_prior']:.1f}, second "
                           f"{steer['second_without_prior']:.1f} -> {steer['second_with_prior']:.1f} "
                           f"(mean gain {steer['gain']:+.1f} points).")
    models = (multilabel or {}).get("models") or {}
    for label, e in models.items():
        clean = e["results"]["clean"]
        out.append(f"Multi-label: {label} reaches {clean['map']:.1f}% mAP, against {clean['label_frequency_map']:.1f}% "
                   "for scoring by label frequency.")
        on = (e["results"].get("glimpses") or {}).get("on_object")
        if on:
            chance = e["results"]["glimpses"].get("random_object")
            out.append(f"{label}'s fixations land on an object in {on[0]:.0f}% of images at glimpse 1 and "
                       f"{on[-1]:.0f}% at glimpse {len(on)} (a random point: {chance:.0f}%).")
    return out

