"""Evaluate a saved model: load a checkpoint (or a model by name), build the data set it is
scored on at its own input size and normalisation, run :func:`~bioattn.evaluate.suites.run_suites`
and write the results JSON, the Markdown report and its figures. This is what ``bioattn eval``
calls.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import WEIGHTS, checkpoint_path, load_model, read_meta, resolve_checkpoint_dir
from ..config import PRESETS, SuiteSettings, suite_settings, task_of_data
from ..data import is_embedded
from ..data.embedded import EmbeddedSpec
from ..errors import BioattnError
from ..fileio import check_output_file, file_sha256, refuse_input_as_output, refuse_output_inside
from ..models.inputs import InputConfig
from ..specs import data_folders
from ..tasks.registry import task_of_model
from .glimpses import scan_paths_path
from .report import write_report, write_results
from .suites import DATA_SUITES, parse_suites, run_suites


def checkpoint_sha256(checkpoint: str | Path | None) -> str | None:
    """sha256 of a checkpoint's weights file (a checkpoint directory's ``model.safetensors``)."""
    if checkpoint is None:
        return None

    path = checkpoint_path(checkpoint)
    if path.is_dir():
        path = resolve_checkpoint_dir(path) / WEIGHTS
    return file_sha256(path) if path.is_file() else None


def evaluate_checkpoint(
    checkpoint: str | Path | None,
    suites: str | Sequence[str] = ("clean",),
    *,
    model_name: str | None = None,
    model_args: dict | None = None,
    data: str | None = None,
    split: str = "test",
    img_size: int | None = None,
    baseline_checkpoint: str | Path | None = None,
    baseline_model: str | None = None,
    out: str | Path | None = None,
    settings: SuiteSettings | None = None,
    **overrides: Any,
) -> dict:
    """Load a checkpoint (model name and arguments from its metadata unless given), build the
    data set ``data`` (``embedded``, ``embedded:pair`` or an ImageNet-style folder) at the
    checkpoint's input size and normalisation, and run :func:`run_suites` on its ``split`` (the
    test split unless told otherwise; sets whose test labels are not public give their val
    split). With ``out``, write
    the results JSON there, and the Markdown table and plots next to it (same stem), and a glimpse
    model's fixations as ``<stem>.fixations.csv``. ``settings`` and keyword ``overrides`` are the
    suites' settings, as for :func:`run_suites`. A ``preset`` setting adds its suites and, for
    an image folder evaluated without ``img_size``, resizes and centre-crops its images as the
    preset says."""

    settings = suite_settings(settings, **overrides)
    preset = settings.preset
    suites = parse_suites(list(suites if not isinstance(suites, str) else suites.split(","))
                          + list(PRESETS[preset]["suites"] if preset else ()))
    if checkpoint is None and model_name is None:
        raise BioattnError("give a checkpoint (--checkpoint) or at least a model name (--model)")
    if out is not None:  # refuse a bad results path before the evaluation, not after it
        _check_results_path(out, checkpoint, baseline_checkpoint)
    meta = read_meta(checkpoint) if checkpoint is not None else None
    seed = settings.seed
    if checkpoint is None:
        # reproducible random weights, and said so: the figures measure an untrained model
        torch.manual_seed(seed)
        print(f"warning: no checkpoint: {model_name} is evaluated with random weights (seed {seed})",
              file=sys.stderr)
    model = load_model(checkpoint, model_name, **(model_args or {}))
    meta = meta or {}
    if data is None and meta.get("data") and any(s in DATA_SUITES for s in suites):
        data = meta["data"]
        print(f"note: evaluating on '{data}', the data set the checkpoint was trained on "
              "(--data chooses another)", file=sys.stderr)
    if out is not None and data is not None:  # nor go into the data set, whose next reading would take them in
        refuse_output_inside(out, data_folders(data), "--out")
    crop_pct = None
    if preset is not None and img_size is None and data is not None and not is_embedded(data):
        img_size = PRESETS[preset]["folder_crop"]
        crop_pct = PRESETS[preset]["folder_crop"] / PRESETS[preset]["folder_resize"]
    inputs = InputConfig.resolve(model, meta, img_size=img_size, crop_pct=crop_pct)
    classes = meta.get("classes")
    task = task_of_model(model, task_of_data(data) if data is not None else meta.get("task"))

    dataset = None
    if data is not None and any(s in DATA_SUITES for s in suites):
        dataset = _scored_dataset(model, task, data, split, inputs, classes, settings.skip_bad_images)
    if "steering" in suites and settings.steering_data is None and task.spec.steering_data is not None:
        settings = _with_steering_pairs(settings, task, data, split,
                                        dataclasses.replace(inputs, crop_pct=None))

    baseline = None
    if baseline_checkpoint is not None or baseline_model is not None:
        if "corruptions" not in suites:
            raise BioattnError("a baseline model is only used by the corruptions suite")
        baseline = load_model(baseline_checkpoint, baseline_model)

    info = {
        "name": meta.get("model") or model_name,
        "model_args": meta.get("model_args") if meta else (model_args or {}),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "weights": "checkpoint" if checkpoint is not None else f"random (seed {seed})",
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "data": data,
        "split": split,
        "img_size": inputs.img_size,
        **({"crop_pct": crop_pct} if crop_pct is not None else {}),
        "mean": list(inputs.mean),
        "std": list(inputs.std),
    }
    results = run_suites(model, dataset, suites, mean=inputs.mean, std=inputs.std, img_size=inputs.img_size,
                         classes=classes, baseline=baseline, model_info=info, task=task.name,
                         fixations_csv=scan_paths_path(out) if out is not None else None, settings=settings)
    if baseline is not None:
        results["baseline_model"].update(checkpoint=str(baseline_checkpoint) if baseline_checkpoint else None,
                                         checkpoint_sha256=checkpoint_sha256(baseline_checkpoint))
    if out is not None:
        out = Path(out)
        write_results(results, out)
        results["files"] = ([str(out)] + [str(p) for p in write_report([results], out.parent, stem=out.stem)]
                            + ([results["fixations_csv"]] if results.get("fixations_csv") else []))
    return results


def _scored_dataset(model: torch.nn.Module, task, data: str, split: str, inputs: InputConfig,
                    classes: Sequence[str] | None, skip_bad_images: bool):
    """The data set the model is scored on; an image folder is read with the model's own class
    list, and a model and data set with different numbers of classes are refused."""
    dataset = task.build_dataset(data, split, inputs, train=False, classes=None if is_embedded(data) else classes,
                                 skip_bad_images=skip_bad_images)
    n_model = getattr(model, "num_classes", None)
    n_data = getattr(dataset, "num_classes", None)
    if isinstance(n_model, int) and isinstance(n_data, int) and n_model != n_data:
        raise BioattnError(f"the model has {n_model} classes but data set '{data}' has {n_data}")
    return dataset


def _check_results_path(out: str | Path, checkpoint: str | Path | None,
                        baseline_checkpoint: str | Path | None) -> None:
    """Refuse a results path that cannot be written, or that would replace a checkpoint's own
    files."""
    check_output_file(out, "results file")
    inputs = [Path(p) for p in (checkpoint, baseline_checkpoint) if p is not None]
    refuse_input_as_output(out, inputs + [f for p in inputs if p.is_dir() for f in p.iterdir()], "results file")


def _with_steering_pairs(settings: SuiteSettings, task, data: str | None, split: str,
                         inputs: InputConfig) -> SuiteSettings:
    """The settings with the steering suite's two-object images: the two-object variant of the
    evaluated embedded data (default: the task's steering data), on the evaluated split; a
    classifier's steering protocol is chosen on the validation pairs, never on the scored ones."""
    spec = EmbeddedSpec.parse(data) if data is not None and is_embedded(data) else EmbeddedSpec()
    steering_spec = EmbeddedSpec.parse(task.spec.steering_data)
    spec = dataclasses.replace(spec, pair=steering_spec.pair, task=steering_spec.task)
    steering_data = task.build_dataset(str(spec), split, inputs, train=False)
    settings = dataclasses.replace(settings, steering_data=steering_data)
    if task.name == "classification" and settings.prior_scale is None and settings.steering_validation_data is None:
        validation = steering_data if split == "val" else task.build_dataset(str(spec), "val", inputs, train=False)
        settings = dataclasses.replace(settings, steering_validation_data=validation)
    return settings
