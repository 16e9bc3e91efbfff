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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..attention.scanpaths import plot_glimpses
from ..checkpoint import load_model, read_meta
from ..data.embedded import EmbeddedSpec
from ..evaluate.segmentation import constant_prediction_miou, plot_segmentation
from ..evaluate.suites import run_suites
from ..models.inputs import InputConfig
from ..protocol import Glimpsing, capable
from ..tasks.registry import get_task
from .settings import DEMO_MODELS, FROM_DEMO, FROM_ZOO, TaskDemoSettings
from .training import fine_tune, slug, zoo_folder, zoo_task_folder

SEGMENTATION_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ViT", "vit_micro_patch8_64", {}),
    ("AbSViT", "absvit_micro_patch8_64", {"prior_classes": 10}),
)
MULTILABEL_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ViT", "vit_micro_patch8_64", {}),
    ("RS-RNN", "rsrnn_micro", {}),
)


def _fine_tuned_models(task_name: str, models: tuple[tuple[str, str, dict[str, Any]], ...], data: str,
                       checkpoints: dict[str, Path], settings: TaskDemoSettings, ckpt_root: Path,
                       retrained: set[str], progress: bool, log: Callable[[str], None],
                       use_zoo: bool) -> Iterator[tuple]:
    """For each of ``models`` whose demo classifier exists: the zoo's model for the task when
    ``use_zoo`` and the zoo has it (the classifier's weights from the zoo too), else the demo
    classifier (or, where the demo compares another backbone under the same label, the zoo's
    classifier of this one) fine-tuned on ``data``; with its metadata, its training seconds (0 for the zoo's),
    where its weights come from, the test set and the settings every suite run shares."""
    task = get_task(task_name)
    classifier_of = {label: name for label, name, _ in DEMO_MODELS}
    for label, name, args in models:
        if label not in checkpoints:
            continue
        # the demo classifier of the same label, or the zoo's classifier of this backbone where
        # the demo compares another one under that label
        start = checkpoints[label] if classifier_of.get(label) == name else zoo_folder(name, {})
        if start is None:
            continue
        folder = zoo_task_folder(task_name, name, args) if use_zoo and label not in retrained else None
        if folder is not None:
            log(f"{label} ({task_name}): using the zoo's weights {folder}")
            model, meta, seconds, source = load_model(folder), read_meta(folder), 0.0, FROM_ZOO
        else:
            run_dir = ckpt_root / f"{task_name}-{settings.key}" / slug(label)
            model, meta, seconds = fine_tune(task_name, label, name, args, data, start, settings,
                                             run_dir, label in retrained, progress, log)
            source = FROM_DEMO
        test_set = task.build_dataset(data, "test", InputConfig.resolve(model, meta), train=False)
        common = dict(mean=meta["mean"], std=meta["std"], img_size=meta["img_size"], task=task_name,
                      progress=progress, device="auto", model_info={"name": label, "model": meta["model"]})
        yield label, args, model, meta, seconds, source, test_set, common


def segmentation_demo(checkpoints: dict[str, Path], settings: TaskDemoSettings, ckpt_root: Path,
                      retrained: set[str], progress: bool, log: Callable[[str], None],
                      fig_dir: Path, use_zoo: bool = False) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Take the zoo's segmenters (``use_zoo``) or fine-tune the demo classifiers, score and
    picture them; returns the figures and the gallery."""
    task = get_task("segmentation")
    results: dict[str, Any] = {"data": settings.seg_data, "epochs": settings.epochs, "models": {}}
    gallery: list[tuple[str, str]] = []
    for label, args, model, meta, seconds, source, test_set, common in _fine_tuned_models(
            "segmentation", SEGMENTATION_MODELS, settings.seg_data, checkpoints, settings, ckpt_root, retrained,
            progress, log, use_zoo):
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
            pair_set = task.build_dataset(str(spec), "test", InputConfig.resolve(model, meta), train=False)
            scores.update(run_suites(model, None, ["steering"], limit=settings.eval_images, steering_data=pair_set,
                                     **common)["results"])
        results["models"][label] = {"results": scores, "train_s": seconds, "weights": source,
                                    "eval_s": time.perf_counter() - t0}
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
    name = f"seg-{slug(label)}.png"
    plot_segmentation(images, labels, model(images), meta["classes"], fig_dir / name, meta["mean"], meta["std"],
                      title=f"{label} segmenter: image, ground truth, prediction")
    out = [(f"{label} segmenter on {n} test images: image, ground truth, prediction", name)]
    if pair_set is not None:
        x, y = pair_set[0]
        objects = [int(c) for c in pair_set.arrays.labels[0]]
        steered = torch.cat([model(x[None], prior=torch.tensor([c])) for c in objects])
        name = f"seg-{slug(label)}-steered.png"
        classes = meta["classes"]
        plot_segmentation(x[None].expand(2, -1, -1, -1), torch.as_tensor(y)[None].expand(2, -1, -1), steered,
                          classes, fig_dir / name, meta["mean"], meta["std"],
                          title=f"{label} segmenter steered by the prior '{classes[objects[0] + 1]}' (top) "
                                f"and '{classes[objects[1] + 1]}' (bottom)")
        out.append((f"{label} segmenter on a two-object image, steered by each object's class in turn", name))
    return out


def multilabel_demo(checkpoints: dict[str, Path], settings: TaskDemoSettings, ckpt_root: Path,
                    retrained: set[str], progress: bool, log: Callable[[str], None],
                    fig_dir: Path, use_zoo: bool = False) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Take the zoo's multi-label models (``use_zoo``) or fine-tune the demo classifiers, score
    them and picture the fixations; returns the figures and the gallery."""
    results: dict[str, Any] = {"data": settings.multi_data, "epochs": settings.epochs, "models": {}}
    gallery: list[tuple[str, str]] = []
    for label, _, model, meta, seconds, source, test_set, common in _fine_tuned_models(
            "multilabel", MULTILABEL_MODELS, settings.multi_data, checkpoints, settings, ckpt_root, retrained,
            progress, log, use_zoo):
        t0 = time.perf_counter()
        common["limit"] = settings.eval_images
        suites = ["clean", "glimpses"] if capable(model, Glimpsing) else ["clean"]
        readouts = {"readouts": settings.glimpses} if "glimpses" in suites else {}
        scores = run_suites(model, test_set, suites, **readouts, **common)["results"]
        results["models"][label] = {"results": scores, "train_s": seconds, "weights": source,
                                    "eval_s": time.perf_counter() - t0}
        if "glimpses" in suites:
            for i in range(min(settings.gallery_images, len(test_set))):
                name = f"multi-{slug(label)}-{i}.png"
                plot_glimpses(model, test_set[i][0], fig_dir / name, glimpses=settings.glimpses, mean=meta["mean"],
                              std=meta["std"], class_names=meta["classes"])
                present = [meta["classes"][int(c)] for c in test_set.arrays.labels[i] if c >= 0]
                gallery.append((f"{label}: fixation path over {settings.glimpses} glimpses on an image with "
                                f"{', '.join(present)}", name))
        clean = scores["clean"]
        log(f"{label} multi-label: mAP {clean['map']:.1f}% (label frequencies {clean['label_frequency_map']:.1f}%), "
            f"train {seconds:.0f} s")
    return results, gallery
