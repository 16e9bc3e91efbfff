"""The demo's findings: one sentence per finding, each derived from the numbers of the run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .settings import FROM_DEMO, FROM_ZOO

SYSTEMS = (("AbSViT", "ViT"), ("RVT VARS-D", "RVT"), ("GFNet VARS-S", "GFNet"), ("RS-RNN", "FF-CNN"))


def _attack_top1(results: dict, suite: str) -> float | None:
    runs = (results.get(suite) or {}).get("runs") or []
    if not runs:
        return None
    run = runs[0]
    return run.get("attacked_readout_top1") if run.get("attack_readout") else run.get("top1")


def headline_scores(result: dict) -> dict[str, Any]:
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


def _origin(result: dict) -> str:
    """Where a model's weights come from: the zoo, or a run of the demo."""
    return FROM_ZOO if (result.get("model") or {}).get("weights") == FROM_ZOO else FROM_DEMO


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _noise(n: int | None) -> float:
    """Differences up to two images' worth of top-1 (in points) are read as no difference."""
    return 200.0 / n if n else 5.0


def _compare(diff: float, tol: float) -> int:
    return 0 if abs(diff) <= tol else (1 if diff > 0 else -1)


def findings(results_list: Sequence[dict]) -> list[str]:
    """One sentence per finding, each derived from the numbers in ``results_list`` (the demo's
    per-model results): robustness of each system against its baseline, where the models look,
    whether a class prior steers the models that take one, and whether looking longer helps the
    glimpse models."""
    by_label = {(r.get("model") or {}).get("name"): r for r in results_list}
    scores = {label: headline_scores(r) for label, r in by_label.items()}
    out: list[str] = []
    for system, base in SYSTEMS:
        if system not in scores or base not in scores:
            continue
        a, b = scores[system], scores[base]
        parts, verdicts = [], []
        for key, what, n in (("corrupted", "under corruptions", "n_corrupted"), ("pgd", "under PGD", "n_attack")):
            if a[key] is None or b[key] is None:
                continue
            parts.append(f"{what} {percent(a[key])} vs {percent(b[key])}")
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
        caveat = ""
        origin_a, origin_b = _origin(by_label[system]), _origin(by_label[base])
        if origin_a != origin_b:
            caveat = (f" Not like for like: {system}'s weights come from the {origin_a}, {base}'s from the "
                      f"{origin_b}.")
        out.append(f"{verdict}: top-1 {', '.join(parts)} (clean {percent(a['clean'])} vs {percent(b['clean'])})."
                   + caveat)
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
    for label, r in by_label.items():
        steering = (r.get("results") or {}).get("steering")
        if steering and steering.get("ci_low") is not None:
            out.append(_steering_finding(label, steering))
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
    return [f"Across styles (trained on three of the embedded data's four styles, tested on the fourth; "
            f"chance 10%): {best['label']} transfers best (mean top-1 {percent(best['mean_top1'])}), "
            f"{worst['label']} worst ({percent(worst['mean_top1'])}); the hardest style to reach is "
            f"{hardest} (mean over models {percent(per_style[hardest])})."]


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


def _steering_finding(label: str, steering: dict) -> str:
    """The per-image steering benchmark in words: the mean image score with its interval (+1: a
    map that follows the prompt, 0: no steering), read as moving toward the prompted object only
    when the whole interval is above 0."""
    low, high = steering["ci_low"], steering["ci_high"]
    if low > 0:
        lead = f"Steering moves {label}'s top-down map toward the prompted object"
    elif high < 0:
        lead = f"Steering moves {label}'s top-down map away from the prompted object"
    else:
        lead = f"Steering of {label}'s top-down map is not detectable in this run"
    threshold = steering.get("threshold")
    read = "raw map" if threshold is None else f"map thresholded at {threshold:g}"
    chosen = (steering.get("protocol") or {}).get("chosen_on")
    how = f"class prior at scale {steering['prior_scale']:g}, {read}" + (f", chosen on {chosen}" if chosen else "")
    return (f"{lead}: image score {steering['mean']:+.3f} (95% interval {low:+.3f} to {high:+.3f}; +1 is a map "
            f"that follows the prompt, 0 none), above 0 for {100 * steering['fraction_positive']:.0f}% of "
            f"{steering['n_images']} images; the prompted object holds {100 * steering['prompted_share']:.1f}% of "
            f"the map, the other {100 * steering['other_share']:.1f}% ({how}).")
