"""Run several evaluation suites on one model and collect every figure in one dict.

Suites: ``clean``; ``imagenet-c`` (folder), ``corruptions`` (generated on the fly);
``imagenet-a``, ``imagenet-r``, ``imagenet-sketch`` (folders); ``fgsm``, ``pgd``,
``autoattack``; ``steering`` (AbSViT on two-object images) and ``fixations`` (saliency
against human fixations); ``glimpses`` (where glimpse models look). A named ``preset``
(:data:`bioattn.config.PRESETS`) adds its suite and fills the settings left at their defaults.
The glimpse suites can write every fixation they see as CSV (``fixations_csv``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..config import PRESETS, SUITE_NAMES, SuiteSettings, suite_settings
from ..data.human_fixations import load_fixation_dataset
from ..data.pixels import Pixels
from ..data.subsets import base_dataset, spread_indices, spread_subset
from ..distributed import resolve_device
from ..errors import BioattnError
from ..models import data_config
from ..models.inputs import InputConfig
from ..progress import progress_bar
from ..protocol import Glimpsing, has_readouts, unwrap
from ..tasks.base import Task
from ..tasks.registry import task_of_model
from . import glimpses, human_fixations, multilabel, segmentation, steering
from .attacks import AttackRun, check_attack_args, evaluate_attack, gradient_passes
from .clean import evaluate_clean
from .corruptions import evaluate_corruptions
from .glimpses import ScanPaths
from .imagenet import (
    eval_transform,
    evaluate_classes,
    imagenet_c_datasets,
    imagenet_subset_indices,
    require_imagenet_model,
    summarise_imagenet_c,
    wnid_folder,
)
from .mce import CORRUPTIONS, SEVERITIES, check_corruption_names, check_severities
from .runtime import as_dataset, is_stochastic, make_loader
from .summary import format_eps

DATA_SUITES = ("clean", "corruptions", "fgsm", "pgd", "autoattack", "glimpses")
DEFAULT_EOT = 10


def task_suites(task: Task) -> tuple[str, ...]:
    """The suites that score ``task``'s models (:attr:`bioattn.tasks.TaskSpec.suites`)."""
    return task.spec.suites if task.spec.suites is not None else SUITE_NAMES


def parse_suites(suites: str | Sequence[str]) -> list[str]:
    """``"clean,pgd"`` or a list -> a checked list of suite names (order kept, no repeats)."""
    if isinstance(suites, str):
        suites = [s.strip() for s in suites.split(",")]
    out: list[str] = []
    for s in suites:
        if not s:
            continue
        if s not in SUITE_NAMES:
            raise BioattnError(f"unknown suite '{s}' (known: {', '.join(SUITE_NAMES)})")
        if s not in out:
            out.append(s)
    if not out:
        raise BioattnError("no suite selected")
    return out


def _pretrained(model: nn.Module, key: str):
    """``key`` of the model's timm data configuration (None for a model without a
    ``pretrained_cfg``)."""
    inner = unwrap(model)
    if not getattr(inner, "pretrained_cfg", None):
        return None
    return data_config(inner).get(key)


def _resolve_norm_stats(model: nn.Module, data, mean, std, need: str) -> tuple[list[float], list[float]]:
    """mean/std given, else the data set's, else (for folder benchmarks only) the model's."""
    def stats(value):
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            return [float(v) for v in value.flatten().tolist()]
        return [float(v) for v in value]

    mean, std = stats(mean), stats(std)
    if mean is None and data is not None:
        mean = stats(getattr(data, "mean", None))
    if std is None and data is not None:
        std = stats(getattr(data, "std", None))
    if (mean is None or std is None) and need == "model":
        mean = mean or stats(_pretrained(model, "mean"))
        std = std or stats(_pretrained(model, "std"))
    if mean is None or std is None:
        raise BioattnError(
            "the normalisation (mean and std) of the data is needed for this suite: pass mean= and std="
        )
    return mean, std


def _img_size(model: nn.Module, img_size: int | None) -> int:
    """``img_size`` if given, else the model's own input size (:meth:`InputConfig.resolve`)."""
    return InputConfig.resolve(unwrap(model), img_size=img_size).img_size


def _model_info(model: nn.Module) -> dict:
    """What the report says of a model; a glimpse model's ``trained_glimpses`` is its own number
    of glimpses (from its configuration or checkpoint), the one its headline figures are read at."""
    inner = unwrap(model)
    cfg = getattr(inner, "pretrained_cfg", None) or {}
    info = {
        "name": cfg.get("architecture") or type(inner).__name__,
        "class": type(inner).__name__,
        "num_params": sum(p.numel() for p in inner.parameters()),
        "num_classes": getattr(inner, "num_classes", None),
        "multi_readout": has_readouts(model),
        "stochastic": is_stochastic(model),
    }
    glimpses = getattr(inner, "num_glimpses", None)
    if isinstance(inner, Glimpsing) and isinstance(glimpses, int):
        info["trained_glimpses"] = glimpses
        if getattr(inner, "train_glimpses", None):
            info["train_glimpses_range"] = list(inner.train_glimpses)
    return info


def run_suites(
    model: nn.Module,
    data=None,
    suites: str | Sequence[str] = ("clean",),
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    img_size: int | None = None,
    classes: Sequence[str] | None = None,
    baseline: nn.Module | None = None,
    model_info: dict | None = None,
    settings: SuiteSettings | None = None,
    task: str | None = None,
    fixations_csv: str | Path | None = None,
    **overrides: Any,
) -> dict:
    """Evaluate ``model`` on each suite; returns ``{"suites", "settings", "model",
    "bioattn_version", "results": {suite: figures}, "seconds": {suite: wall time}}``.

    ``data`` (a data set of normalised images, or a loader over one) feeds ``clean``,
    ``corruptions`` and the attacks; ``mean``/``std`` are its normalisation (taken from the data
    set's ``mean``/``std`` attributes when not given). Folder benchmarks read their own folders
    (settings ``imagenet_c``, ``imagenet_a``...) at ``img_size`` (default: the model's).
    ``classes``: the model's class names, checked against ImageNet's for the ImageNet suites.
    ``baseline``: a second model for the ``corruptions`` suite's normalised errors.
    ``task``: what the data's labels are (``classification``, ``segmentation``, ``multilabel``;
    a segmenter is always scored on segmentation); each task has its own suites
    (:attr:`bioattn.tasks.TaskSpec.suites`). ``settings`` (a :class:`SuiteSettings`) and keyword ``overrides``
    naming its fields, which replace its values, are the suites' settings (:func:`bioattn.config.suite_settings`);
    a ``preset`` among them adds its suites. ``fixations_csv``: where the glimpse suites (``glimpses`` and the
    attacks) of a glimpse model write every fixation (:class:`~bioattn.evaluate.glimpses.ScanPaths`;
    the path is reported as ``fixations_csv``).
    """

    # parsed once, when the settings are made: eps, severities and corruptions are lists here
    settings = suite_settings(settings, **overrides).with_preset()
    suites = parse_suites(list(suites if not isinstance(suites, str) else suites.split(","))
                          + list(PRESETS[settings.preset]["suites"] if settings.preset else ()))
    scored = task_of_model(model, task)
    unavailable = [s for s in suites if s not in task_suites(scored)]
    if unavailable:
        raise BioattnError(f"suite(s) {', '.join(unavailable)} score classifiers; a {scored.name} model has "
                           f"{', '.join(task_suites(scored))}")
    if not scored.spec.per_pixel and settings.inference != "whole":
        raise BioattnError(f"--inference {settings.inference} sets how a segmentation model sees its images; "
                           f"{type(unwrap(model)).__name__} is a {scored.name} model")
    _check_settings(settings)
    if settings.preset and not has_readouts(model):
        raise BioattnError(f"--preset {settings.preset} reads the prediction after every glimpse: it needs a "
                           f"glimpse model; {type(unwrap(model)).__name__} gives a single readout")
    settings.check_readouts(has_readouts(model), type(unwrap(model)).__name__)
    _check_attack_readout(model, settings, suites)
    device = resolve_device(settings.device)
    model = model.to(device).eval()
    if baseline is not None:
        baseline = baseline.to(device).eval()

    dataset = as_dataset(data) if data is not None else None
    needs_data = [s for s in suites if s in DATA_SUITES]
    if needs_data and dataset is None:
        raise BioattnError(f"suite(s) {', '.join(needs_data)} need a data set (--data)")
    if dataset is not None and len(dataset) == 0:
        raise BioattnError("the data set is empty")

    info = _model_info(model)
    info.update(model_info or {})
    out: dict[str, Any] = {
        "bioattn_version": __version__,
        "task": scored.name,
        "suites": suites,
        "settings": _jsonable_settings(settings),
        "model": info,
        "device": str(device),
        "results": {},
        "seconds": {},
    }
    if baseline is not None:
        out["baseline_model"] = _model_info(baseline)
    runners = RUNNERS[scored.name]
    scan_paths = ScanPaths(dataset) if fixations_csv is not None and isinstance(unwrap(model), Glimpsing) else None
    ctx = _Context(model=model, dataset=dataset, settings=settings, device=device, mean=mean, std=std,
                   img_size=img_size, classes=classes, baseline=baseline, task=scored, scan_paths=scan_paths)
    for suite in suites:
        start = time.perf_counter()
        torch.manual_seed(settings.seed)
        out["results"][suite] = runners[suite](ctx, suite)
        out["seconds"][suite] = round(time.perf_counter() - start, 3)
    if scan_paths is not None and len(scan_paths):
        out["fixations_csv"] = str(scan_paths.write(fixations_csv))
    return out


def _check_attack_readout(model: nn.Module, s: SuiteSettings, suites: Sequence[str]) -> None:
    """A glimpse model run for its own number of glimpses cannot be attacked at a later one."""
    glimpses = s.readouts or getattr(unwrap(model), "num_glimpses", None)
    attacks = [x for x in suites if x in ("fgsm", "pgd", "autoattack")]
    if attacks and s.attack_readout is not None and isinstance(glimpses, int) and s.attack_readout > glimpses:
        raise BioattnError(f"--attack-readout {s.attack_readout} is beyond the {glimpses} glimpses the model "
                           "runs: raise --readouts")


@dataclass
class _Context:
    model: nn.Module
    dataset: Any
    settings: SuiteSettings
    device: torch.device
    mean: Any
    std: Any
    img_size: int | None
    classes: Any
    baseline: nn.Module | None
    task: Task
    scan_paths: ScanPaths | None = None

    def loader(self, dataset=None):
        s = self.settings
        ds = spread_subset(dataset if dataset is not None else self.dataset, s.limit)
        # label maps evaluated at their own sizes do not stack into batches
        batch = 1 if getattr(base_dataset(ds), "sizes_vary", False) else s.batch_size
        return make_loader(ds, batch, s.workers, self.device), len(ds)

    @property
    def num_classes(self) -> int:
        n = getattr(unwrap(self.model), "num_classes", None) or getattr(base_dataset(self.dataset), "num_classes", None)
        if not isinstance(n, int):
            raise BioattnError("the number of classes is unknown: the model has no num_classes")
        return n

    def segmentation_window(self) -> dict:
        s = self.settings
        crop = s.slide_crop or _img_size(self.model, self.img_size)
        return {"mode": s.inference, "crop": crop, "stride": s.slide_stride}

    def pixels(self, need: str = "data") -> Pixels:
        mean, std = _resolve_norm_stats(self.model, self.dataset if need == "data" else None,
                                        self.mean, self.std, need)
        return Pixels(mean, std)


def _check_settings(s: SuiteSettings) -> None:
    """What the settings cannot check alone: the attack budgets against the attack's own limits
    (:class:`SuiteSettings` validates each value when it is made)."""
    if not s.eps:
        raise BioattnError("no eps given for the attacks")
    for eps in s.eps:
        check_attack_args(float(eps), _step_size(s, float(eps)), s.attack_iters, s.norm, s.restarts, s.eot or 1)


def _step_size(s: SuiteSettings, eps: float) -> float | None:
    """The PGD step for budget ``eps``: ``step_size``, else ``step_ratio * eps``, else the
    attack's default (None)."""
    if s.step_size is not None:
        return s.step_size
    return s.step_ratio * eps if s.step_ratio is not None else None


def _jsonable_settings(s: SuiteSettings) -> dict:
    d = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
    d = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()}
    for key in ("steering_data", "steering_validation_data"):
        if d[key] is not None and not isinstance(d[key], (str, int, float)):
            d[key] = type(d[key]).__name__
    return d


# ------------------------------------------------------------------------------------------
# suite runners
# ------------------------------------------------------------------------------------------
LIMIT_HINT = "--limit N for fewer images"


def _images_bar(ctx: _Context, suite: str, n: int):
    """The progress of a suite that goes once over ``n`` images."""
    return progress_bar(suite, n, ctx.settings.progress, unit="images", size=f"{n} images", hint=LIMIT_HINT)


def _run_clean(ctx: _Context, suite: str) -> dict:
    loader, n = ctx.loader()
    with _images_bar(ctx, suite, n) as advance:
        return evaluate_clean(ctx.model, loader, ctx.device, progress=advance, readouts=ctx.settings.readouts)


def _run_segmentation_clean(ctx: _Context, suite: str) -> dict:
    loader, n = ctx.loader()
    with _images_bar(ctx, suite, n) as advance:
        return segmentation.evaluate_segmentation(ctx.model, loader, ctx.num_classes, device=ctx.device,
                                                  progress=advance, **ctx.segmentation_window())


def _run_multilabel_clean(ctx: _Context, suite: str) -> dict:
    loader, n = ctx.loader()
    with _images_bar(ctx, suite, n) as advance:
        return multilabel.evaluate_multilabel(ctx.model, loader, ctx.num_classes, ctx.device, progress=advance)


def _corruptions_chosen(s: SuiteSettings) -> tuple[list[str], list[int]]:
    return check_corruption_names(s.corruptions or CORRUPTIONS), check_severities(s.severities or SEVERITIES)


def _corruptions_bar(ctx: _Context, suite: str, corruptions: Sequence[str], severities: Sequence[int], n: int):
    """The progress of a corruption suite, in corrupted images, with its size in words and the
    settings that shorten it (``--severities``, ``--corruptions``, ``--limit``)."""
    hints = []
    if len(severities) > 1:
        hints.append(f"--severities {severities[len(severities) // 2]} for one severity")
    if len(corruptions) > 1:
        hints.append("--corruptions for fewer corruptions")
    hints.append(LIMIT_HINT)
    size = (f"{len(corruptions)} corruption{'s' if len(corruptions) > 1 else ''} x {len(severities)} "
            f"severit{'ies' if len(severities) > 1 else 'y'} x {n} images")
    if ctx.baseline is not None:
        size += ", each seen by the model and its baseline"
    return progress_bar(suite, n * len(corruptions) * len(severities), ctx.settings.progress, unit="images",
                        size=size, hint=", ".join(hints))


def _run_segmentation_corruptions(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    corruptions, severities = _corruptions_chosen(s)
    n = len(spread_indices(len(ctx.dataset), s.limit))
    with _corruptions_bar(ctx, suite, corruptions, severities, n) as advance:
        return segmentation.segmentation_corruptions(
            ctx.model, ctx.dataset, corruptions, severities, num_classes=ctx.num_classes, pixels=ctx.pixels(),
            batch_size=s.batch_size, limit=s.limit, workers=s.workers, seed=s.seed, device=ctx.device,
            progress=advance, **ctx.segmentation_window())


def _run_corruptions(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    corruptions, severities = _corruptions_chosen(s)
    pixels = ctx.pixels()
    loader, n = ctx.loader()
    with _corruptions_bar(ctx, suite, corruptions, severities, n) as advance:
        return evaluate_corruptions(ctx.model, loader, pixels, corruptions, severities,
                                    baseline=ctx.baseline, workers=s.workers, device=ctx.device,
                                    seed=s.seed, readouts=s.readouts, progress=advance)


def _run_imagenet_c(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    if not s.imagenet_c:
        raise BioattnError("the imagenet-c suite needs the ImageNet-C folder (--imagenet-c DIR)")
    require_imagenet_model(ctx.model, suite, ctx.classes)
    pixels = ctx.pixels(need="model")
    size = _img_size(ctx.model, ctx.img_size)
    sets = imagenet_c_datasets(s.imagenet_c, size, pixels.mean_list, pixels.std_list,
                               s.corruptions or CORRUPTIONS, s.severities or SEVERITIES,
                               skip_bad_images=s.skip_bad_images)
    loaders = {key: ctx.loader(ds) for key, ds in sets.items()}
    top1: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    total = sum(n for _, n in loaders.values())
    with progress_bar(suite, total, s.progress, unit="images",
                      size=f"{len(loaders)} corruption and severity folders, {total} images",
                      hint=f"--severities, --corruptions or {LIMIT_HINT}") as advance:
        for (c, sev), (loader, _) in loaders.items():
            r = evaluate_classes(ctx.model, loader, None, ctx.device, s.readouts, suite, advance)
            top1.setdefault(c, {})[str(sev)] = r["top1"]
            counts.setdefault(c, {})[str(sev)] = r["n"]
    return {"root": str(s.imagenet_c), "img_size": size, "n": counts, **summarise_imagenet_c(top1)}


def _run_imagenet_folder(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    root = {"imagenet-a": s.imagenet_a, "imagenet-r": s.imagenet_r,
            "imagenet-sketch": s.imagenet_sketch}[suite]
    if not root:
        raise BioattnError(f"the {suite} suite needs its folder (--{suite} DIR)")
    require_imagenet_model(ctx.model, suite, ctx.classes)
    pixels = ctx.pixels(need="model")
    size = _img_size(ctx.model, ctx.img_size)
    dataset = wnid_folder(root, eval_transform(size, pixels.mean_list, pixels.std_list, resize=True),
                          skip_bad_images=s.skip_bad_images)
    indices = imagenet_subset_indices(suite)
    loader, n = ctx.loader(dataset)
    with _images_bar(ctx, suite, n) as advance:
        r = evaluate_classes(ctx.model, loader, indices, ctx.device, s.readouts, suite, advance)
    return {"root": str(root), "img_size": size,
            "classes": 1000 if indices is None else len(indices), **r}


def _run_attack(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    pixels = ctx.pixels()
    loader, n = ctx.loader()
    indices = spread_indices(len(ctx.dataset), s.limit)
    stochastic = is_stochastic(ctx.model)
    eots = [1]
    if suite != "autoattack" and (stochastic or (s.eot or 1) > 1):
        eots.append(s.eot if s.eot and s.eot > 1 else DEFAULT_EOT)
    runs = []
    with _attack_bar(ctx, suite, n, len(loader), eots) as advance:
        for eps in s.eps:
            for eot in eots:
                torch.manual_seed(s.seed)
                run = AttackRun(suite, float(eps), step_size=_step_size(s, float(eps)), iters=s.attack_iters,
                                norm=s.norm, restarts=s.restarts, eot=eot, attack_readout=s.attack_readout,
                                readouts=s.readouts, autoattack_version=s.autoattack_version, seed=s.seed)
                runs.append(evaluate_attack(ctx.model, loader, pixels, run, device=ctx.device, progress=advance,
                                            scan_paths=ctx.scan_paths, image_indices=indices))
    return {"stochastic": stochastic, "runs": runs}


def _attack_bar(ctx: _Context, suite: str, n: int, batches: int, eots: Sequence[int]):
    """The progress of an attack suite: FGSM and PGD count forward and backward passes (one per
    iteration and EOT sample), so a long attack moves at every iteration; AutoAttack counts
    images."""
    s = ctx.settings
    budgets = f"{len(s.eps)} eps" if len(s.eps) > 1 else f"eps {format_eps(float(s.eps[0]))}"
    if suite == "autoattack":
        return progress_bar(suite, n * len(s.eps), s.progress, unit="images",
                            size=f"{n} images x {budgets}", hint=LIMIT_HINT)
    passes = [gradient_passes(suite, s.attack_iters, s.restarts, eot) for eot in eots]
    steps = "1 step" if suite == "fgsm" else f"{s.attack_iters} iterations"
    if suite != "fgsm" and s.restarts > 1:
        steps += f" x {s.restarts} restarts"
    runs = " and ".join(steps if eot == 1 else f"{steps} x EOT{eot}" for eot in eots)
    return progress_bar(suite, batches * len(s.eps) * sum(passes), s.progress, unit="passes",
                        size=f"{n} images x {budgets}, {runs}", hint=LIMIT_HINT)


def _steering_data(ctx: _Context) -> Any:
    data = ctx.settings.steering_data if ctx.settings.steering_data is not None else ctx.dataset
    if data is None:
        raise BioattnError(f"the steering suite needs two-object images (data '{ctx.task.spec.steering_data}')")
    return data


def _run_steering(ctx: _Context, suite: str) -> dict:
    """The per-image steering benchmark (:func:`bioattn.evaluate.steering.steering_benchmark`)
    under a protocol fixed before the scored pairs are seen: the given ``prior_scale`` (and
    ``map_threshold``), else the one chosen on the validation pairs
    (``steering_validation_data``), else the authors' demo (scale 40, raw map)."""
    s = ctx.settings
    pairs = _steering_data(ctx)
    steering.check_pairs(pairs)
    steering.check_steerable(ctx.model)
    if s.prior_scale is not None:
        protocol = steering.fixed_protocol(s.prior_scale, s.map_threshold)
    elif s.steering_validation_data is not None:
        thresholds = steering.MAP_THRESHOLDS if s.map_threshold is None else (s.map_threshold,)
        protocol = steering.choose_prior_scale(ctx.model, s.steering_validation_data, thresholds=thresholds,
                                               limit=s.steering_validation, batch_size=s.batch_size,
                                               device=ctx.device)
        if s.steering_validation_data is pairs:
            protocol["chosen_on"] = "validation pairs (the scored pairs themselves)"
    else:
        protocol = steering.fixed_protocol(threshold=s.map_threshold)
    result = steering.steering_benchmark(ctx.model, pairs, protocol=protocol, limit=s.limit,
                                         batch_size=s.batch_size, device=ctx.device)
    return steering.jsonable(result)


def _run_segmentation_steering(ctx: _Context, suite: str) -> dict:
    return segmentation.steering_score(ctx.model, _steering_data(ctx), batch_size=ctx.settings.batch_size,
                                       limit=ctx.settings.limit, device=ctx.device)


def _run_fixations(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    if not s.fixations:
        raise BioattnError("the fixations suite needs a fixation data set folder (--fixations DIR)")

    pixels = ctx.pixels(need="model")
    size = _img_size(ctx.model, ctx.img_size)
    n = len(load_fixation_dataset(s.fixations))
    n = n if s.limit is None else min(n, s.limit)
    with _images_bar(ctx, suite, n) as advance:
        return human_fixations.evaluate_fixations(ctx.model, s.fixations, size, pixels.mean_list,
                                                  pixels.std_list, device=ctx.device, limit=s.limit,
                                                  seed=s.seed, progress=advance)


def _run_glimpses(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    n = len(ctx.dataset) if s.limit is None else min(len(ctx.dataset), s.limit)
    with _images_bar(ctx, suite, n) as advance:
        return glimpses.fixations_on_mask_dataset(ctx.model, ctx.dataset, glimpses=s.readouts, limit=s.limit,
                                                  batch_size=s.batch_size, device=ctx.device,
                                                  progress=advance, scan_paths=ctx.scan_paths)


def _run_multilabel_glimpses(ctx: _Context, suite: str) -> dict:
    s = ctx.settings
    n = len(ctx.dataset) if s.limit is None else min(len(ctx.dataset), s.limit)
    with _images_bar(ctx, suite, n) as advance:
        return multilabel.object_fixations_dataset(ctx.model, base_dataset(ctx.dataset), glimpses=s.readouts,
                                                   limit=s.limit, batch_size=s.batch_size, device=ctx.device,
                                                   progress=advance)


# The runner of each suite a task has (bioattn.tasks.TaskSpec.suites): a classifier is scored by
# top-1; a segmenter by mIoU (clean, corrupted, steered by a prior); a multi-label model by mAP
# and F1, and a glimpse model by where it fixates among the objects.
_IMAGENET_FOLDERS = {suite: _run_imagenet_folder for suite in ("imagenet-a", "imagenet-r", "imagenet-sketch")}
_ATTACKS = {suite: _run_attack for suite in ("fgsm", "pgd", "autoattack")}
RUNNERS: dict[str, dict[str, Any]] = {
    "classification": {"clean": _run_clean, "imagenet-c": _run_imagenet_c, "corruptions": _run_corruptions,
                       **_IMAGENET_FOLDERS, **_ATTACKS, "steering": _run_steering, "fixations": _run_fixations,
                       "glimpses": _run_glimpses},
    "segmentation": {"clean": _run_segmentation_clean, "corruptions": _run_segmentation_corruptions,
                     "steering": _run_segmentation_steering},
    "multilabel": {"clean": _run_multilabel_clean, "glimpses": _run_multilabel_glimpses},
}
