"""Running the zoo's models to produce the per-image records the claims are decided on.

:func:`measure_entry` loads one built zoo entry and records, image by image
(:class:`~bioattn.results.records.Record`), everything a claim can read:

* a benchmark classifier: clean correctness (a glimpse model's at every glimpse); correctness
  under each of the 15 corruptions at each severity (with the clean correctness of the same
  images); under FGSM and PGD at every eps of the settings (a glimpse model's at every glimpse,
  the attack aimed at ``attack_readout``; a glimpse model also under PGD aimed at each of glimpses
  1, 2, 4, 8 and 16, over an eps sweep to 8/255, and through its clean scan path held fixed);
  where it has maps, the share of its attention map on
  the object, the object's area and the map's AUC-Judd against the object mask; a glimpse
  model's share of fixations on the object; a steerable model's steering shift and win share on
  two-object images;
* a segmenter: per image and class, the intersection and union of its prediction with the labels
  (so mIoU can be resampled by image), and the all-background baseline;
* a multi-label glimpse model: per image holding a small object, the share of its fixations on
  one and the small objects' area; its mAP and the label-frequency baseline;
* a leave-one-style-out model: clean correctness on every test image of its held-out style.

Every suite chooses its images spread evenly over the test split
(:func:`bioattn.data.subsets.spread_indices`) and stores their indices, so two models' records
pair image by image. Corruptions are seeded per image (:func:`~bioattn.evaluate.corruptions.image_seed`),
attacks per eps; the records of the same weights and settings are the same.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..attention.maps import has_maps, saliency
from ..attention.metrics import auc_judd
from ..attention.plots import plot_steering
from ..checkpoint import load_model, read_meta
from ..config import ResultsSettings
from ..data import build_dataset
from ..data.pixels import Pixels
from ..data.subsets import spread_indices
from ..distributed import resolve_device
from ..errors import BioattnError
from ..evaluate.attacks import DEFAULT_PGD_ITERS, fgsm, pgd
from ..evaluate.corruptions import Corrupter, image_seed
from ..evaluate.glimpses import fixation_pixels, fixations_on_mask
from ..evaluate.mce import CORRUPTIONS
from ..evaluate.multilabel import SMALL_OBJECT_AREA
from ..evaluate.runtime import PixelModel
from ..evaluate.segmentation import constant_prediction_miou
from ..evaluate.steering import choose_prior_scale, steered_maps, steering_benchmark
from ..evaluate.suites import run_suites
from ..fileio import file_sha256
from ..metrics.segmentation import SegmentationMeter
from ..models.inputs import InputConfig
from ..progress import format_duration, progress_bar
from ..protocol import Glimpsing, TopDownSteerable, capable, forward_readouts, unwrap
from ..tasks.registry import get_task
from ..tasks.spec import task_of_data
from ..zoo import BENCHMARK, MULTILABEL_BENCHMARK, SEGMENTATION_BENCHMARK, STYLES, ZOO, ZooEntry, find_entry
from .claims import OFFICIAL_EPS
from .judge import eps_key
from .records import Record

PAIR_BENCHMARK = "embedded:pair"
# a glimpse model's attacks: aimed at each of these glimpses at the judged eps, and at its attack
# glimpse over this sweep of eps
AIMED_GLIMPSES = (1, 2, 4, 8, 16)
GLIMPSE_EPS_SWEEP = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
# a segmenter's test images are cut into this many folds by fold_mious
SEGMENTATION_FOLDS = 10
# the two-object test pairs a steerable entry's figure shows
STEERING_PAIRS = 4


def base_name(entry: ZooEntry) -> str:
    """The name of an entry's seed-0 version, under which the records of all its seeds are kept
    (``rvt_micro`` for ``rvt_micro_seed1``)."""
    return entry.name.removesuffix(f"_seed{entry.seed}") if entry.seed else entry.name


def _model_info(entry: ZooEntry) -> dict[str, Any]:
    return {"name": entry.label, "model": entry.model, "model_args": entry.model_args, "entry": entry.name}


# the settings a record of a benchmark classifier (or a leave-one-style-out model) depends on;
# a segmenter's or a multi-label model's depends on the first and the glimpses only
CLASSIFIER_SETTINGS = ("images", "corruption_images", "severities", "attack_images", "eps", "attention_images",
                       "steering_images", "glimpses", "attack_readout", "seed")
TASK_SETTINGS = ("images", "glimpses")


def recorded_settings(entry: ZooEntry, settings: ResultsSettings) -> dict[str, Any]:
    """The settings an entry's record is measured with, as its meta data keeps them."""
    names = TASK_SETTINGS if entry.data in (SEGMENTATION_BENCHMARK, MULTILABEL_BENCHMARK) else CLASSIFIER_SETTINGS
    return {k: getattr(settings, k) for k in names}


def weights_digest(entry: ZooEntry) -> str:
    """sha256 of the weights file an entry's record is measured on."""
    return file_sha256(entry.folder / "model.safetensors")


def is_current(record: Record | None, entry: ZooEntry, settings: ResultsSettings) -> bool:
    """Whether ``record`` was measured on ``entry``'s present weights with these settings (the
    settings compared as JSON stores them), so measuring again would give the same record."""
    if record is None or record.meta.get("weights_sha256") != weights_digest(entry):
        return False
    wanted = json.loads(json.dumps(recorded_settings(entry, settings)))
    return record.meta.get("settings") == wanted


def _batches(indices: Sequence[int], size: int):
    for start in range(0, len(indices), size):
        yield list(indices[start:start + size])


def _stack(dataset, chunk: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in chunk]
    return torch.stack([x for x, _ in items]), torch.as_tensor(np.asarray([y for _, y in items]))


def _masks(dataset, chunk: Sequence[int]) -> torch.Tensor:
    masks = torch.as_tensor(np.asarray(dataset.arrays.masks)[list(chunk)])
    return masks[:, 0] if masks.ndim == 4 else masks  # two-object images: the labelled object's


@torch.no_grad()
def _correct(model, x: torch.Tensor, y: torch.Tensor, readouts: int | None) -> torch.Tensor:
    """Correctness at every readout, ``(T, B)`` bool."""
    every = forward_readouts(model, x, readouts=readouts).all_readouts()
    return (every.argmax(-1) == y[None]).cpu()


def takes_fixations(model: torch.nn.Module) -> bool:
    """Whether a glimpse model can be told where to look (``forward_glimpses(x, fixations=...)``)."""
    forward = getattr(unwrap(model), "forward_glimpses", None)
    return forward is not None and "fixations" in inspect.signature(forward).parameters


class _OnFixedPath(torch.nn.Module):
    """A glimpse model on pixels in [0, 1] held to the scan path ``fixations`` ``(T, B, 2)``: the
    logits after glimpse ``readout`` (1-based)."""

    def __init__(self, model: torch.nn.Module, pixels: Pixels, fixations: torch.Tensor, readout: int) -> None:
        super().__init__()
        self.model, self.pixels, self.fixations, self.readout = model, pixels, fixations, readout

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        return self.model.forward_glimpses(self.pixels.from_unit(unit), fixations=self.fixations).logits[
            self.readout - 1]


class _Measuring:
    """One classifier, its test split and the settings of the measurements."""

    def __init__(self, entry: ZooEntry, settings: ResultsSettings, progress: bool) -> None:
        self.entry, self.settings, self.progress = entry, settings, progress
        self.model, self.meta = load_model(entry.folder), read_meta(entry.folder)
        self.device = resolve_device("auto")
        self.model.to(self.device).eval()
        size, mean, std = self.meta["img_size"], self.meta["mean"], self.meta["std"]
        self.test = build_dataset(entry.data, "test", size, mean, std, classes=self.meta.get("classes"))
        self.pixels = Pixels(mean, std)
        self.glimpse = capable(self.model, Glimpsing)
        self.readouts = settings.glimpses if self.glimpse else None
        self.record = Record(base_name(entry), entry.seed, meta={
            "model": _model_info(entry), "data": entry.data, "weights_sha256": weights_digest(entry),
            "settings": recorded_settings(entry, settings),
        })
        if self.glimpse:
            self.record.meta["trained_glimpses"] = int(getattr(unwrap(self.model), "num_glimpses", 0)) or None
            self.record.meta["attack_readout"] = settings.attack_readout
        self.batch = settings.batch_size

    def clean(self, limit: int | None) -> None:
        chosen = spread_indices(len(self.test), limit)
        rows = []
        with progress_bar(f"{self.entry.name}: clean", len(chosen), self.progress) as advance:
            for chunk in _batches(chosen, self.batch):
                x, y = _stack(self.test, chunk)
                rows.append(_correct(self.model, x.to(self.device), y.to(self.device), self.readouts))
                advance(len(chunk))
        correct = torch.cat(rows, dim=1).numpy()
        self.record.add("clean", correct[-1], chosen)
        if self.glimpse:
            self.record.add("clean/glimpse", correct)

    def corruptions(self) -> None:
        s = self.settings
        chosen = spread_indices(len(self.test), s.corruption_images)
        units = [(c, sev) for c in CORRUPTIONS for sev in s.severities]
        clean, hits = [], {u: [] for u in units}
        with Corrupter(s.workers, CORRUPTIONS) as corrupter, \
                progress_bar(f"{self.entry.name}: corruptions", len(chosen) * len(units), self.progress) as advance:
            for chunk in _batches(chosen, self.batch):
                x, y = _stack(self.test, chunk)
                y = y.to(self.device)
                clean.append(_correct(self.model, x.to(self.device), y, self.readouts)[-1])
                raw = self.pixels.to_uint8(x)
                for c, sev in units:
                    seeds = [image_seed(s.seed, c, sev, i) for i in chunk]
                    corrupted = self.pixels.from_uint8(corrupter.corrupt(raw, c, sev, seeds)).to(self.device)
                    hits[(c, sev)].append(_correct(self.model, corrupted, y, self.readouts)[-1])
                    advance(len(chunk))
        self.record.add("corruption/clean", torch.cat(clean).numpy(), chosen)
        for (c, sev), parts in hits.items():
            self.record.add(f"corruption/{c}/{sev}", torch.cat(parts).numpy())

    def attacks(self) -> None:
        """FGSM and PGD at every eps of the settings, aimed at the attack glimpse of a glimpse model."""
        s = self.settings
        chosen = spread_indices(len(self.test), s.attack_images)
        at = s.attack_readout if self.glimpse else None
        with progress_bar(f"{self.entry.name}: FGSM, PGD", len(chosen) * len(s.eps) * 2, self.progress) as advance:
            for eps in s.eps:
                for attack in ("fgsm", "pgd"):
                    self._attack(f"{attack}/{eps_key(eps)}", attack, eps, at, chosen, advance)

    def glimpse_attacks(self) -> None:
        """A glimpse model's PGD aimed at each of :data:`AIMED_GLIMPSES` (at the judged eps), at its
        attack glimpse over :data:`GLIMPSE_EPS_SWEEP` (the eps the settings have not run), and
        through its clean scan path: on each image it looks where it looked on the clean image,
        so the attack changes what each glimpse sees and not where it lands (models that take
        given fixations). Every glimpse's correctness is recorded."""
        s = self.settings
        chosen = spread_indices(len(self.test), s.attack_images)
        aimed = [g for g in AIMED_GLIMPSES if g <= self.readouts]
        sweep = [e for e in GLIMPSE_EPS_SWEEP if all(abs(e - done) > 1e-12 for done in s.eps)]
        frozen = takes_fixations(self.model)
        total = len(chosen) * (len(aimed) + len(sweep) + int(frozen))
        with progress_bar(f"{self.entry.name}: PGD per glimpse", total, self.progress) as advance:
            for g in aimed:
                self._attack(f"pgd_aimed/{g}/{eps_key(OFFICIAL_EPS)}", "pgd", OFFICIAL_EPS, g, chosen, advance)
            for eps in sweep:
                self._attack(f"pgd/{eps_key(eps)}", "pgd", eps, s.attack_readout, chosen, advance)
            if frozen:
                self._frozen_path_attack(chosen, advance)

    def _attack(self, key: str, attack: str, eps: float, readout: int | None, chosen: Sequence[int],
                advance: Callable[[int], None]) -> None:
        """Correctness under ``attack`` at ``eps`` aimed at ``readout`` (None: the final
        prediction), at that readout under ``key`` with the clean one beside it, and a glimpse
        model's at every glimpse."""
        target = PixelModel(self.model, self.pixels, readout=readout, readouts=self.readouts).to(self.device)
        pick = (readout - 1) if readout else -1
        torch.manual_seed(self.settings.seed)
        clean, adversarial = [], []
        for chunk in _batches(chosen, self.batch):
            x, y = _stack(self.test, chunk)
            x, y = x.to(self.device), y.to(self.device)
            unit = self.pixels.to_unit(x.float())
            adv = (fgsm(target, unit, y, eps=eps) if attack == "fgsm" else
                   pgd(target, unit, y, eps=eps, iters=DEFAULT_PGD_ITERS))
            clean.append(_correct(self.model, x, y, self.readouts))
            adversarial.append(_correct(self.model, self.pixels.from_unit(adv), y, self.readouts))
            advance(len(chunk))
        every = torch.cat(adversarial, dim=1).numpy()
        self.record.add(key, every[pick], chosen)
        self.record.add(f"{key}/clean", torch.cat(clean, dim=1).numpy()[pick])
        if self.glimpse:
            self.record.add(f"{key}/glimpse", every)

    def _frozen_path_attack(self, chosen: Sequence[int], advance: Callable[[int], None]) -> None:
        """PGD at the judged eps aimed at the attack glimpse of the model held to its clean scan
        path: ``pgd_frozen/<eps>`` at that glimpse and ``.../glimpse`` at every glimpse."""
        s = self.settings
        inner = unwrap(self.model)
        torch.manual_seed(s.seed)
        rows = []
        for chunk in _batches(chosen, self.batch):
            x, y = _stack(self.test, chunk)
            x, y = x.to(self.device), y.to(self.device)
            with torch.no_grad():
                path = inner.forward_glimpses(x, glimpses=self.readouts).fixations
            target = _OnFixedPath(inner, self.pixels, path, s.attack_readout)
            adv = pgd(target, self.pixels.to_unit(x.float()), y, eps=OFFICIAL_EPS, iters=DEFAULT_PGD_ITERS)
            with torch.no_grad():
                logits = inner.forward_glimpses(self.pixels.from_unit(adv), fixations=path).logits
            rows.append((logits.argmax(-1) == y[None]).cpu())
            advance(len(chunk))
        every = torch.cat(rows, dim=1).numpy()
        key = f"pgd_frozen/{eps_key(OFFICIAL_EPS)}"
        self.record.add(key, every[s.attack_readout - 1], chosen)
        self.record.add(f"{key}/glimpse", every)

    @torch.no_grad()
    def attention(self) -> None:
        chosen = spread_indices(len(self.test), self.settings.attention_images)
        shares, areas, aucs = [], [], []
        for chunk in _batches(chosen, self.batch):
            x, _ = _stack(self.test, chunk)
            masks = _masks(self.test, chunk)
            maps = saliency(self.model, x.to(self.device), size=tuple(masks.shape[-2:])).float().clamp_min(0).cpu()
            for amap, mask in zip(maps, masks.bool()):
                total = amap.sum().item()
                shares.append(amap[mask].sum().item() / total if total > 0 else float("nan"))
                areas.append(mask.float().mean().item())
                aucs.append(auc_judd(amap.numpy(), mask.numpy()))
        self.record.add("attention/share", np.asarray(shares, np.float32), chosen)
        self.record.add("attention/area", np.asarray(areas, np.float32))
        self.record.add("attention/auc", np.asarray(aucs, np.float32))

    @torch.no_grad()
    def fixations(self) -> None:
        chosen = spread_indices(len(self.test), self.settings.attention_images)
        inner = unwrap(self.model)
        hits, areas = [], []
        for chunk in _batches(chosen, self.batch):
            x, _ = _stack(self.test, chunk)
            masks = _masks(self.test, chunk)
            scan = inner.forward_glimpses(x.to(self.device), glimpses=self.settings.glimpses)
            hits.append(fixations_on_mask(scan.fixations.cpu(), masks))
            areas.append(masks.float().mean(dim=(-2, -1)))
        on = torch.cat(hits, dim=1)                                  # (T, n)
        self.record.add("fixations/glimpse", on.numpy(), chosen)
        self.record.add("fixations/on_object", on[1:].float().mean(dim=0).numpy().astype(np.float32))
        self.record.add("fixations/area", torch.cat(areas).numpy().astype(np.float32))

    @torch.no_grad()
    def steering(self) -> None:
        """The steering benchmark (:func:`bioattn.evaluate.steering.steering_benchmark`) on the
        test pairs, its prior scale and map threshold chosen on validation pairs first: per image,
        the score (the prompted object's share of the map minus the other's, averaged over the
        two prompts) and the share of the two prompts under which the prompted object holds more."""
        size, mean, std = self.meta["img_size"], self.meta["mean"], self.meta["std"]
        validation = build_dataset(PAIR_BENCHMARK, "val", size, mean, std)
        pairs = build_dataset(PAIR_BENCHMARK, "test", size, mean, std)
        protocol = choose_prior_scale(self.model, validation, limit=self.settings.steering_images,
                                      batch_size=self.batch, device=self.device)
        result = steering_benchmark(self.model, pairs, protocol=protocol, limit=self.settings.steering_images,
                                    batch_size=self.batch, device=self.device)
        chosen = [int(i) for i in result["indices"]]
        self.record.add("steering/shift", np.asarray(result["score"], np.float32), chosen)
        wins = (np.asarray(result["prompted_minus_other"]) > 0).mean(axis=1)
        self.record.add("steering/win", wins.astype(np.float32), chosen)
        self.record.meta["steering_protocol"] = {"prior_scale": result["prior_scale"],
                                                 "threshold": result["threshold"], "chosen_on": "validation pairs"}


def measure_classifier(entry: ZooEntry, settings: ResultsSettings, progress: bool = False) -> Record:
    """The record of a benchmark classifier (see the module's description)."""
    m = _Measuring(entry, settings, progress)
    m.clean(settings.images)
    m.corruptions()
    m.attacks()
    if m.glimpse:
        m.glimpse_attacks()
    if has_maps(m.model):
        m.attention()
    if m.glimpse:
        m.fixations()
    if capable(m.model, TopDownSteerable):
        m.steering()
    return m.record


def measure_style_entry(entry: ZooEntry, settings: ResultsSettings, progress: bool = False) -> Record:
    """The record of a leave-one-style-out model: clean correctness on every test image of the
    style it never saw."""
    m = _Measuring(entry, settings, progress)
    m.clean(None)
    m.record.meta["held_out"] = held_out(entry)
    return m.record


@torch.no_grad()
def _segmentation_counts(model, dataset, chosen: Sequence[int], num_classes: int, batch: int,
                         device) -> tuple[np.ndarray, np.ndarray]:
    """Per class and image, the pixels of the intersection and of the union of prediction and labels."""
    inter, union = [], []
    classes = torch.arange(num_classes)[:, None, None, None]
    for chunk in _batches(chosen, batch):
        x, target = _stack(dataset, chunk)
        logits = model(x.to(device)).float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
        pred, target = logits.argmax(1).cpu(), target.long()
        valid = (target >= 0) & (target < num_classes)
        p, t = (pred[None] == classes) & valid[None], (target[None] == classes) & valid[None]
        inter.append((p & t).flatten(2).sum(-1))
        union.append((p | t).flatten(2).sum(-1))
    return torch.cat(inter, dim=1).numpy(), torch.cat(union, dim=1).numpy()


@torch.no_grad()
def _small_object_fixations(model, dataset, chosen: Sequence[int], glimpses: int, batch: int,
                            device) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The images holding a small object, each with the share of its fixations 2 to the last on
    a small object and the share of the image the small objects cover."""
    inner = unwrap(model)
    arrays = dataset.arrays
    kept, shares, areas = [], [], []
    for chunk in _batches(chosen, batch):
        x = torch.stack([dataset[i][0] for i in chunk]).to(device)
        fixations = inner.forward_glimpses(x, glimpses=glimpses).fixations.cpu().float()
        masks = torch.as_tensor(np.asarray(arrays.masks)[chunk]).bool()             # (B, M, H, W)
        valid = torch.as_tensor(np.asarray(arrays.labels)[chunk]) >= 0
        small = valid & (masks.float().mean(dim=(-2, -1)) < SMALL_OBJECT_AREA)
        rows, cols = fixation_pixels(fixations, masks.shape[-2], masks.shape[-1])
        index = torch.arange(len(chunk)).expand_as(rows)
        on_small = (masks[index, :, rows, cols] & small[None]).any(dim=-1)          # (T, B)
        union = (masks & small[..., None, None]).any(dim=1).float().mean(dim=(-2, -1))
        for j, i in enumerate(chunk):
            if small[j].any():
                kept.append(i)
                shares.append(on_small[1:, j].float().mean().item())
                areas.append(union[j].item())
    return kept, np.asarray(shares, np.float32), np.asarray(areas, np.float32)


def measure_task_entry(entry: ZooEntry, settings: ResultsSettings, progress: bool = False) -> Record:
    """The record of a segmenter or a multi-label model (see the module's description)."""
    model, meta = load_model(entry.folder), read_meta(entry.folder)
    device = resolve_device("auto")
    model.to(device).eval()
    task = get_task(task_of_data(entry.data))
    test = task.build_dataset(entry.data, "test", InputConfig.resolve(model, meta), train=False)
    chosen = spread_indices(len(test), settings.images)
    record = Record(base_name(entry), entry.seed, meta={"model": _model_info(entry), "data": entry.data,
                                                  "weights_sha256": weights_digest(entry),
                                                  "settings": recorded_settings(entry, settings)})
    if task.name == "segmentation":
        k = int(model.num_classes)
        inter, union = _segmentation_counts(model, test, chosen, k, settings.batch_size, device)
        record.add("segmentation/intersection", inter.astype(np.uint32), chosen)
        record.add("segmentation/union", union.astype(np.uint32))
        record.meta["all_background"] = constant_prediction_miou(test, k, limit=settings.images)["miou"]
        return record
    clean = run_suites(model, test, ["clean"], limit=settings.images, task=task.name, mean=meta["mean"],
                       std=meta["std"], img_size=meta["img_size"], classes=meta.get("classes"), progress=progress,
                       seed=settings.seed, device="auto", model_info=_model_info(entry))["results"]["clean"]
    record.meta.update(map=clean.get("map"), label_frequency_map=clean.get("label_frequency_map"),
                       f1_overall=clean.get("f1_overall"))
    if capable(model, Glimpsing):
        kept, shares, areas = _small_object_fixations(model, test, chosen, settings.glimpses, settings.batch_size,
                                                      device)
        if kept:
            record.add("small_objects/on_small", shares, kept)
            record.add("small_objects/area", areas)
    return record


def draw_steering(entry: ZooEntry, record: Record, out_path: str | Path, pairs: int = STEERING_PAIRS) -> Path:
    """The figure of a steerable entry's top-down maps on the first ``pairs`` test pairs its
    ``record`` scored, under each object's class, with the protocol the record names (prior scale
    and threshold chosen on validation pairs)."""
    if "steering" not in record.images or "steering_protocol" not in record.meta:
        raise BioattnError(f"record {record.name} holds no steering measurement")
    model, meta = load_model(entry.folder), read_meta(entry.folder)
    size, mean, std = meta["img_size"], meta["mean"], meta["std"]
    test = build_dataset(PAIR_BENCHMARK, "test", size, mean, std)
    protocol = record.meta["steering_protocol"]
    got = steered_maps(model, test, [int(i) for i in record.images["steering"][:pairs]], protocol)
    pixels = Pixels(mean, std)
    pictures = np.stack([pixels.to_picture(x) for x in got["images"]])
    threshold = protocol["threshold"]
    return plot_steering(pictures, got["labels"], got["masks"], got["maps"], got["shares"], out_path,
                         class_names=meta.get("classes"),
                         title=f"{entry.label}: prior scale {protocol['prior_scale']:g}, map "
                               f"{'raw' if threshold is None else f'above {threshold:g} of its range'}")


def held_out(entry: ZooEntry) -> str | None:
    """The style a leave-one-style-out entry is tested on (None for other entries)."""
    if not entry.data.startswith("domains:"):
        return None
    return next(s for s in STYLES if f"test={s}," in entry.data)


def measure_entry(entry: ZooEntry, settings: ResultsSettings, progress: bool = False) -> Record:
    """The record of any built zoo entry (by the kind of data it was trained on)."""
    if entry.data == BENCHMARK:
        return measure_classifier(entry, settings, progress)
    if held_out(entry):
        return measure_style_entry(entry, settings, progress)
    if entry.data in (SEGMENTATION_BENCHMARK, MULTILABEL_BENCHMARK):
        return measure_task_entry(entry, settings, progress)
    raise BioattnError(f"zoo entry {entry.name} is trained on {entry.data}, which no claim measures")


def measure_zoo(settings: ResultsSettings, names: Sequence[str] | None = None, progress: bool = False,
                log: Callable[[str], None] | None = None, existing: dict[tuple[str, int], Record] | None = None,
                store: Callable[[Record], None] | None = None) -> list[Record]:
    """The records of every built entry of the zoo (or of ``names``: an entry's name measures
    every seed of it, a seed's own name that seed). Without ``names``, an entry whose record in
    ``existing`` is current (:func:`is_current`) is not measured again, so an interrupted run
    resumes with the first entry it had not finished; ``store`` receives each record as soon as
    it is measured. ``log`` hears each entry's start and time, and the total."""
    if names:
        named = {find_entry(n).name for n in names}
        entries = [e for e in ZOO if e.name in named or base_name(e) in named]
    else:
        entries = list(ZOO)
    built = [e for e in entries if e.is_built()]
    todo = [e for e in built if names or not is_current((existing or {}).get((base_name(e), e.seed)), e, settings)]
    say = log or (lambda message: None)
    if names and len(built) < len(entries):
        say(f"not built, so not measured: {', '.join(e.name for e in entries if not e.is_built())}")
    if len(todo) < len(built):
        say(f"{len(built) - len(todo)} of {len(built)} built entries have current records (same weights and "
            "settings): kept")
    records, started = [], time.monotonic()
    for i, entry in enumerate(todo, 1):
        say(f"measuring {entry.name} ({i} of {len(todo)})")
        t0 = time.monotonic()
        record = measure_entry(entry, settings, progress)
        say(f"{entry.name}: measured in {format_duration(time.monotonic() - t0)}")
        if store is not None:
            store(record)
        records.append(record)
    if todo:
        what = "entry" if len(todo) == 1 else "entries"
        say(f"measured {len(todo)} {what} in {format_duration(time.monotonic() - started)}")
    return records


# --------------------------------------------------------------------------------------------
# figures of whole test sets (the demo's domain table; the zoo's tests)
# --------------------------------------------------------------------------------------------
def held_out_figures(entry: ZooEntry, limit: int | None = None, seed: int = 0,
                     progress: bool = False) -> dict[str, Any]:
    """Clean figures of a leave-one-style-out entry on the test images (at most ``limit``, spread
    over the split) of the style it never saw."""
    model, meta = load_model(entry.folder), read_meta(entry.folder)
    test_set = build_dataset(entry.data, "test", meta["img_size"], meta["mean"], meta["std"], classes=meta["classes"])
    return run_suites(model, test_set, ["clean"], limit=limit, mean=meta["mean"], std=meta["std"],
                      img_size=meta["img_size"], classes=meta.get("classes"), progress=progress, seed=seed,
                      device="auto", model_info=_model_info(entry))


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
