"""The summary of evaluation results: a label per model, and the headline figures of each suite
under plain, unique column names, as the report's summary table shows them.

A model with several readouts (glimpses, passes) is read at one: a glimpse model after the
number of glimpses it was trained with (``model.trained_glimpses`` in the results), when it ran
that many; its top-1 after every readout is a column of its own beside its top-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def model_label(results: dict) -> str:
    info = results.get("model") or {}
    name = info.get("label") or info.get("name") or "model"
    ckpt = info.get("checkpoint")
    if ckpt and not info.get("label"):
        name = f"{name} ({Path(str(ckpt)).name})"
    return str(name)


def unique_labels(results_list: Sequence[dict]) -> list[str]:
    labels = [model_label(r) for r in results_list]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if labels.count(lab) > 1:
            seen[lab] = seen.get(lab, 0) + 1
            lab = f"{lab} #{seen[lab]}"
        out.append(lab)
    return out


def format_eps(eps: float | None) -> str:
    """``k/255`` when eps is a multiple of 0.5/255, else 3 significant digits."""
    if eps is None:
        return "-"
    k = eps * 255
    if eps > 0 and abs(k - round(k * 2) / 2) < 1e-6:
        return f"{round(k * 2) / 2:g}/255"
    return f"{eps:.3g}"


def attack_label(run: dict, readout: bool = True) -> str:
    """``PGD L2 EOT10 eps=0.5``: the attack, its norm when not L-inf, its EOT samples and its
    budget; with ``readout``, the readout it was aimed at (``@readout4``)."""
    name = {"fgsm": "FGSM", "pgd": "PGD", "autoattack": "AutoAttack"}.get(run.get("attack"), run.get("attack"))
    parts = [name]
    if run.get("norm") and run.get("norm") != "Linf":
        parts.append(run["norm"])
    if (run.get("eot") or 1) > 1:
        parts.append(f"EOT{run['eot']}")
    parts.append(f"eps={format_eps(run.get('eps'))}")
    if readout and run.get("attack_readout"):
        parts.append(f"@readout{run['attack_readout']}")
    return " ".join(parts)


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def format_value(value) -> str:
    if is_missing(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


ATTACK_SUITES = ("fgsm", "pgd", "autoattack")
_FOLDER_SUITES = {"imagenet-a": "ImageNet-A", "imagenet-r": "ImageNet-R", "imagenet-sketch": "ImageNet-Sketch"}
CURVE = "top-1 per glimpse or pass"
# counts and settings among a suite's numbers: never a column of the summary
_NOT_FIGURES = ("n", "n_images", "n_pairs", "n_unmatched", "seed", "prior_scale", "glimpses", "readouts",
                "img_size", "classes", "threshold")


def headline_readout(results: dict, values: Sequence) -> int:
    """The index in ``values`` (one figure per readout) that a model's headline is read at: a
    glimpse model's trained number of glimpses (``model.trained_glimpses``) when it ran at least
    that many, else the last readout."""
    trained = (results.get("model") or {}).get("trained_glimpses")
    if isinstance(trained, int) and not isinstance(trained, bool) and 1 <= trained <= len(values):
        return trained - 1
    return len(values) - 1


def _curve(values: Sequence, headline: int) -> str:
    """``20 35 [50] 52``: a figure per readout, rounded, the headline one in brackets (plain text
    reads the same in a terminal, in Markdown and in HTML)."""
    cells = ["-" if is_missing(v) else f"{v:.0f}" for v in values]
    cells[headline] = f"[{cells[headline]}]"
    return " ".join(cells)


def _attack_headline(results: dict, run: dict):
    """Top-1 under one attack run: at the readout it was aimed at, else at the model's headline
    readout."""
    if run.get("attack_readout"):
        return run.get("attacked_readout_top1")
    per = run.get("per_readout_top1") or []
    return per[headline_readout(results, per)] if len(per) > 1 else run.get("top1")


def summary_entries(results: dict) -> list[tuple[str, str, float | str | None]]:
    """The headline figures of one results dict as ``(suite, column, value)`` in suite order.
    Columns are plain and unique: top-1, mIoU and mAP are named once, attacks by their setting,
    other suites after the suite. A multi-readout model's clean top-1 is read at its headline
    readout (:func:`headline_readout`), with every readout's in the ``CURVE`` column."""
    out: list[tuple[str, str, float | str | None]] = []
    for suite, r in (results.get("results") or {}).items():
        if not isinstance(r, dict):
            continue

        def add(column: str, value, suite=suite) -> None:
            out.append((suite, column, value))

        if suite == "clean" and "miou" in r:
            add("mIoU", r.get("miou"))
            add("pixel accuracy", r.get("pixel_acc"))
        elif suite == "clean" and "map" in r:
            add("mAP", r.get("map"))
            add("mAP of label frequencies", r.get("label_frequency_map"))
            add("F1 overall", r.get("f1_overall"))
            add("F1 per class", r.get("cf1"))
        elif suite == "clean":
            per = r.get("per_readout_top1") or []
            if len(per) > 1:
                at = headline_readout(results, per)
                add("top-1", per[at])
                add("top-5", r.get("top5") if at == len(per) - 1 else None)  # top-5 is the last readout's
                add(CURVE, _curve(per, at))
            else:
                add("top-1", r.get("top1"))
                add("top-5", r.get("top5"))
        elif suite == "corruptions" and "mean_miou" in r:
            add("corrupted mIoU", r.get("mean_miou"))
        elif suite == "corruptions":
            add("corrupted top-1", r.get("mean_top1"))
            if "mce" in r:
                add("mCE", r.get("mce"))
                add("relative mCE", r.get("relative_mce"))
        elif suite == "imagenet-c":
            add("ImageNet-C mCE", r.get("mce"))
            add("ImageNet-C top-1", r.get("mean_top1"))
        elif suite in _FOLDER_SUITES:
            add(f"{_FOLDER_SUITES[suite]} top-1", r.get("top1"))
        elif suite in ATTACK_SUITES:
            for run in r.get("runs", []):
                add(f"{attack_label(run, readout=False)} top-1", _attack_headline(results, run))
        elif suite == "steering" and "gain" in r:
            for key in ("first_with_prior", "first_without_prior", "second_with_prior", "second_without_prior",
                        "gain"):
                add(f"steering: {key.replace('_', ' ')} (IoU)", r.get(key))
        elif suite == "steering":
            # the per-image benchmark: shares are fractions in the results, the table shows them
            # in %; the image score (prompted object's share minus the other's) in points
            for key, column in (("prompted_share", "prompted share (%)"), ("other_share", "other share (%)"),
                                ("shift", "image score (points)"), ("shift_win_rate", "images above 0 (%)")):
                value = r.get(key)
                add(f"steering: {column}",
                    100.0 * value if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
        elif "per_glimpse" in r and "learned" in r:
            add("fixations on the object (%)", r.get("learned"))
            add("fixations by chance (%)", r.get("random"))
        elif "on_object" in r:
            on, small = r.get("on_object") or [], r.get("on_small_object") or []
            add("fixations on an object (%)", on[headline_readout(results, on)] if on else None)
            add("fixations on a small object (%)", small[headline_readout(results, small)] if small else None)
        elif suite == "attention":
            add("attention on the object (%)", r.get("mask_share"))
            add("object area (%)", r.get("mask_share_chance"))
            add("attention AUC", r.get("mask_auc"))
        elif suite == "fixations" and isinstance(r.get("model"), dict):
            for who, name in (("model", "saliency"), ("centre", "centre bias")):
                for key, value in (r.get(who) or {}).items():
                    add(f"{name} {key}", value)
        else:
            for key, value in _flat_numbers(r):
                add(f"{suite}: {key.replace('_', ' ')}", value)
    return out


def summary_columns(results: dict) -> dict[str, float | str | None]:
    """The headline figures of one results dict, as ``{column: value}`` in suite order."""
    return {column: value for _, column, value in summary_entries(results)}


def _flat_numbers(d: dict, prefix: str = "", depth: int = 0):
    """Numeric leaves of a nested dict (two levels), for suites with their own layout."""
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if key not in _NOT_FIGURES:
                yield name, value
        elif isinstance(value, dict) and depth < 1 and key not in ("settings",):
            yield from _flat_numbers(value, f"{name}.", depth + 1)


def measured_columns(summaries: Sequence[dict]) -> list[str]:
    """The columns that hold a figure for at least one model, each model's in its own order: a
    column one model adds goes right after the column before it in that model's row (a glimpse
    model's top-1 per glimpse stays beside its top-1)."""
    columns: list[str] = []
    for s in summaries:
        previous = None
        for c in s:
            if c not in columns:
                columns.insert(columns.index(previous) + 1 if previous is not None else len(columns), c)
            previous = c
    return [c for c in columns if any(not is_missing(s.get(c)) for s in summaries)]
