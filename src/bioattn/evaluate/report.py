"""Evaluation reports: the results JSON, a Markdown report and its figures, for one model or
several side by side.

The summary table has a row per model and a column per figure measured for at least one of
them, each under a plain header of its own. A model with several readouts (glimpses, passes) is
read at one: a glimpse model after the number of glimpses it was trained with
(``model.trained_glimpses`` in the results), when it ran that many; its top-1 after every
readout stands beside. The notes under the table explain the suites that ran, and only those.
The figures: bars per model for each suite, a heat map of top-1 per corruption and severity,
and top-1 after every readout, clean and under each attack.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import BioattnError
from ..fileio import atomic_write, atomic_write_text, check_output_file, output_folder
from .summary import (
    ATTACK_SUITES,
    CURVE,
    attack_label,
    format_value,
    headline_readout,
    is_missing,
    measured_columns,
    summary_columns,
    summary_entries,
    unique_labels,
)

PLOT_CORRUPTIONS = "corruptions.png"
PLOT_READOUTS = "attack_readouts.png"


# ------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------

def nan_to_none(obj):
    """``obj`` with NaN/inf floats replaced by ``None`` (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj

def write_results(results: dict, path: str | Path) -> Path:
    """Write ``results`` as strict JSON (NaN -> null), atomically."""

    path = Path(path)
    atomic_write_text(path, json.dumps(nan_to_none(results), indent=2, allow_nan=False, default=str) + "\n",
                      what="results file")
    return path


def _is_demo_summary(data) -> bool:
    return (isinstance(data, dict) and not isinstance(data.get("results"), dict)
            and isinstance(data.get("models"), list) and bool(data["models"])
            and all(isinstance(m, dict) and isinstance(m.get("results"), dict) for m in data["models"]))


def load_results(path: str | Path) -> dict:
    """A results file written by ``bioattn eval`` (one model), or the ``results.json`` of
    ``bioattn demo`` (every demo model under ``models``; :func:`expand_results` lists them)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BioattnError(f"results file not found: {path}") from None
    except IsADirectoryError:
        raise BioattnError(f"results file {path} is a directory: give the JSON file in it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BioattnError(f"cannot read results file {path}: {exc}".splitlines()[0]) from None
    if _is_demo_summary(data):
        return data
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise BioattnError(f"{path} is not a bioattn evaluation results file (no 'results' entry)")
    return data


def expand_results(results_list: Sequence[dict]) -> list[dict]:
    """One results dict per model: a demo summary (``results.json`` of ``bioattn demo``) stands
    for each of its models."""
    out: list[dict] = []
    for r in results_list:
        out += list(r["models"]) if _is_demo_summary(r) else [r]
    return out


def image_counts(results: dict) -> dict[str, int]:
    """How many images each suite of one results dict used, ``{suite: n}`` (corruptions: per
    corruption and severity; attacks: per run; ImageNet-C: the smallest of its folders)."""
    counts: dict[str, int] = {}
    for suite, r in (results.get("results") or {}).items():
        if not isinstance(r, dict):
            continue
        n = r.get("n_images", r.get("n"))
        if isinstance(n, dict):  # ImageNet-C: {corruption: {severity: n}}
            leaves = [v for per in n.values() if isinstance(per, dict) for v in per.values()]
            n = min(leaves) if leaves else None
        if n is None and r.get("runs"):
            n = r["runs"][0].get("n")
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            counts[suite] = int(n)
    return counts


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{suite} {n}" for suite, n in counts.items())


def _image_notes(labels: Sequence[str], results_list: Sequence[dict]) -> list[str]:
    """Lines under the summary table: the images each suite used, and a warning when the models
    were scored on different numbers of images (runs with different --limit mixed)."""
    counts = [image_counts(r) for r in results_list]
    if not any(counts):
        return []
    suites: list[str] = []
    for c in counts:
        suites += [s for s in c if s not in suites]
    differ = [s for s in suites if len({c[s] for c in counts if s in c}) > 1]
    per_unit = [text for present, text in ((any(s in ("corruptions",) for s in suites),
                                            "corruptions: per corruption and severity"),
                                           (any(s in ATTACK_SUITES for s in suites),
                                            "attacks: per attack setting")) if present]
    unit = f" ({'; '.join(per_unit)})" if per_unit else ""
    if not differ:
        merged = {s: next(c[s] for c in counts if s in c) for s in suites}
        return ["", f"Images: {_counts_text(merged)}{unit}."]
    per_model = "; ".join(f"{lab}: {_counts_text(c)}" for lab, c in zip(labels, counts) if c)
    return ["", f"**Note: the models were scored on different numbers of images in {', '.join(differ)} "
            f"(runs with different --limit?); their figures are not directly comparable.** "
            f"Images: {per_model}."]


def _data_line(labels: Sequence[str], results_list: Sequence[dict]) -> list[str]:
    """``Data: embedded, test split.``: the data and split the models were scored on (from
    ``bioattn eval``'s results; nothing for results that do not say, or that read benchmark
    folders only)."""
    described = []
    for lab, r in zip(labels, results_list):
        info = r.get("model") or {}
        if info.get("data"):
            split = f", {info['split']} split" if info.get("split") else ""
            described.append((lab, f"{info['data']}{split}"))
    if not described:
        return []
    if len({text for _, text in described}) == 1 and len(described) == len(results_list):
        return [f"Data: {described[0][1]}.", ""]
    return ["Data: " + "; ".join(f"{lab}: {text}" for lab, text in described) + ".", ""]


def _glimpse_note(labels: Sequence[str], results_list: Sequence[dict]) -> str | None:
    """Where the multi-readout models' headline figures are read."""
    read, aimed = [], []
    for lab, r in zip(labels, results_list):
        per = ((r.get("results") or {}).get("clean") or {}).get("per_readout_top1") or []
        trained = (r.get("model") or {}).get("trained_glimpses")
        if len(per) > 1:
            at = headline_readout(r, per) + 1
            if trained == at:
                read.append(f"{lab} after glimpse {at} of the {len(per)} run, the number it was trained with")
            else:
                read.append(f"{lab} after the last of its {len(per)} readouts")
        for suite in ATTACK_SUITES:
            for run in ((r.get("results") or {}).get(suite) or {}).get("runs", []):
                if run.get("attack_readout") and f"{lab}: {run['attack_readout']}" not in aimed:
                    aimed.append(f"{lab}: {run['attack_readout']}")
    if not read and not aimed:
        return None
    text = []
    if read:
        text.append(f"Models with several readouts (glimpses or passes) are read at one: {'; '.join(read)}. "
                    f"'{CURVE}' lists top-1 after each readout, the one read in brackets.")
    if aimed:
        text.append(f"Attacks aimed at one readout are read there ({'; '.join(aimed)}).")
    return " ".join(text)


def _notes(labels: Sequence[str], results_list: Sequence[dict], columns: Sequence[str]) -> list[str]:
    """The notes under the summary table, one for each kind of figure it shows."""
    suites = {suite for r in results_list for suite, column, value in summary_entries(r)
              if column in columns}
    notes = []
    percent = [what for present, what in (
        (any(c in ("top-1", "top-5") or c.endswith(" top-1") for c in columns), "top-1"),
        ("mIoU" in columns or "corrupted mIoU" in columns, "mIoU and pixel accuracy"),
        ("mAP" in columns, "mAP and F1")) if present]
    if percent:
        notes.append(f"Figures in % ({', '.join(percent)}).")
    if "corruptions" in suites:
        notes.append("Corrupted: the mean over the corruptions and severities evaluated (tables below).")
    if "mCE" in columns or "relative mCE" in columns:
        notes.append("mCE x100: corruption errors normalised by the baseline model's; relative mCE: the drop "
                     "from clean top-1, normalised by the baseline's drop.")
    if "ImageNet-C mCE" in columns:
        notes.append("ImageNet-C mCE x100: corruption errors normalised by AlexNet's.")
    if suites & set(ATTACK_SUITES):
        eot = "; EOTn: each gradient averaged over n passes of a model that samples" \
            if any(" EOT" in c for c in columns) else ""
        notes.append(f"Attacks: top-1 on white-box adversarial images, eps on pixels in [0, 1]{eot}.")
    if "steering" in suites and any(c.endswith("(points)") for c in columns):
        notes.append("Steering, per two-object image: the share of the top-down map on the prompted object "
                     "minus that on the other, averaged over prompting either (image score, in percentage "
                     "points; 100 is a map that follows the prompt).")
    glimpses = _glimpse_note(labels, results_list)
    if glimpses:
        notes.append(glimpses)
    return ["", *notes] if notes else []


def markdown_report(results_list: Sequence[dict], figures: Sequence[tuple[str, str]] = ()) -> str:
    """Markdown: the data and split, a summary table (one row per model, one column per figure
    measured for at least one of them) with the images each suite used and notes on the suites
    that ran, the ``figures`` (``(title, file)`` pairs, linked), then per-corruption and
    per-readout tables. Demo summaries stand for each of their models."""
    results_list = expand_results(results_list)
    if not results_list:
        raise BioattnError("no results to report")
    labels = unique_labels(results_list)
    summaries = [summary_columns(r) for r in results_list]
    columns = measured_columns(summaries)
    lines = ["# Evaluation", ""]
    lines += _data_line(labels, results_list)
    lines += _table(["model"] + columns, [[lab] + [format_value(s.get(c)) for c in columns]
                                          for lab, s in zip(labels, summaries)])
    lines += _image_notes(labels, results_list)
    lines += _notes(labels, results_list, columns)
    if figures:
        lines += ["", "## Figures", ""]
        for title, name in figures:
            lines += [f"![{title}]({name})", ""]
        lines.pop()
    lines += _dense_tables(labels, results_list)
    for suite in ("imagenet-c", "corruptions"):
        rows, header = [], None
        for lab, r in zip(labels, results_list):
            sr = r.get("results", {}).get(suite)
            if not sr or not sr.get("top1"):
                continue
            names = list(sr["top1"])
            severities = [f"s{s}" for s in next(iter(sr["top1"].values()))]
            header = header or ["model", "corruption", *severities, "mean", "CE"]
            for c in names:
                ce = (sr.get("ce") or {}).get(c)
                rows.append([lab, c] + [format_value(v) for v in sr["top1"][c].values()]
                            + [format_value(sr["corruption_top1"][c]), format_value(ce)])
        if rows:
            if all(row[-1] == "-" for row in rows):  # no baseline: no corruption errors to show
                header, rows = header[:-1], [row[:-1] for row in rows]
            lines += ["", f"## {suite}: top-1 per corruption and severity", ""]
            lines += _table(header, rows)
    lines += _per_readout_table(
        "Clean top-1 at every readout",
        [(lab, (r.get("results", {}).get("clean") or {}).get("per_readout_top1"))
         for lab, r in zip(labels, results_list)])
    glimpses = [(lab, r.get("results", {}).get("glimpses")) for lab, r in zip(labels, results_list)]
    lines += _per_readout_table(
        "Fixations on the object's mask at every glimpse (%)",
        [(lab, g.get("per_glimpse")) for lab, g in glimpses if g],
        extra={lab: [format_value(g.get("learned")), format_value(g.get("random"))] for lab, g in glimpses if g},
        extra_header=["after the first", "uniform random"])
    step_rows = []
    for lab, r in zip(labels, results_list):
        for suite in ATTACK_SUITES:
            for run in (r.get("results", {}).get(suite) or {}).get("runs", []):
                if len(run.get("per_readout_top1") or []) > 1:
                    step_rows.append((lab, run))
    if step_rows:
        width = max(len(run["per_readout_top1"]) for _, run in step_rows)
        lines += ["", "## Top-1 at every readout under attack (clean in brackets)", ""]
        rows = []
        for lab, run in step_rows:
            cells = [f"{format_value(a)} ({format_value(c)})"
                     for a, c in zip(run["per_readout_top1"], run["per_readout_clean_top1"])]
            rows.append([lab, attack_label(run)] + cells + [""] * (width - len(cells)))
        lines += _table(["model", "attack"] + [str(t + 1) for t in range(width)], rows)
    return "\n".join(lines) + "\n"


def _dense_tables(labels: Sequence[str], results_list: Sequence[dict]) -> list[str]:
    """Per-class tables of segmentation (IoU) and multi-label (AP) results, and mIoU per
    corruption and severity."""
    lines: list[str] = []
    for lab, r in zip(labels, results_list):
        res = r.get("results", {})
        clean = res.get("clean") or {}
        if clean.get("per_class"):
            lines += ["", f"## {lab}: IoU and accuracy per class (%)", ""]
            lines += _table(["class", "IoU", "acc"], [[row["class"], format_value(row["iou"]), format_value(row["acc"])]
                                                     for row in clean["per_class"]])
        if clean.get("per_class_ap") and "map" in clean:
            names = r.get("model", {}).get("classes") or [str(i) for i in range(len(clean["per_class_ap"]))]
            lines += ["", f"## {lab}: average precision per class (%)", ""]
            lines += _table(["class", "AP"], [[n, format_value(v)] for n, v in zip(names, clean["per_class_ap"])])
        corr = res.get("corruptions") or {}
        if corr.get("miou"):
            severities = [f"s{s}" for s in next(iter(corr["miou"].values()))]
            clean_miou = format_value(corr.get("clean_miou"))
            lines += ["", f"## {lab}: mIoU per corruption and severity (clean {clean_miou})", ""]
            lines += _table(["corruption", *severities, "mean"],
                            [[c, *[format_value(v) for v in per.values()], format_value(corr["corruption_miou"][c])]
                             for c, per in corr["miou"].items()])
    return lines


def _per_readout_table(title: str, rows: Sequence[tuple[str, Sequence[float] | None]],
                       extra: dict[str, list[str]] | None = None,
                       extra_header: Sequence[str] = ()) -> list[str]:
    """A section with one row per model and one column per readout, for models with several."""
    rows = [(lab, values) for lab, values in rows if values and len(values) > 1]
    if not rows:
        return []
    width = max(len(values) for _, values in rows)
    extra = extra or {}
    header = ["model"] + [str(t + 1) for t in range(width)] + list(extra_header)
    body = [[lab] + [format_value(v) for v in values] + [""] * (width - len(values))
            + extra.get(lab, [""] * len(extra_header))
            for lab, values in rows]
    return ["", f"## {title}", ""] + _table(header, body)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


# ------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    """A matplotlib figure with Agg output and constrained layout (titles, labels and legends
    kept apart), built without pyplot (no global state, no GUI)."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _wrapped(text: str, width: int = 26) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def bars_figure(results_list: Sequence[dict], suite: str):
    """Bars per model for each of ``suite``'s summary figures (one panel each); None when no
    model has a number for it."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.ticker import MaxNLocator

    results_list = expand_results(results_list)
    labels = unique_labels(results_list)
    columns = list(dict.fromkeys(c for r in results_list for s, c, _ in summary_entries(r) if s == suite))
    values = {c: [summary_columns(r).get(c) for r in results_list] for c in columns}
    numeric = {c: [v if isinstance(v, (int, float)) and not is_missing(v) else math.nan for v in vs]
               for c, vs in values.items()}
    panels = [c for c in columns if any(math.isfinite(v) for v in numeric[c])]
    if not panels:
        return None
    keep = [k for k in range(len(labels)) if any(math.isfinite(numeric[c][k]) for c in panels)]
    labels = [labels[k] for k in keep]
    numeric = {c: [numeric[c][k] for k in keep] for c in panels}
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    label_width = max(len(lab) for lab in labels) * 0.07
    fig = _figure(label_width + 2.6 * ncols, 0.6 + nrows * (0.55 + 0.28 * len(labels)))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    ys = list(range(len(labels)))
    for ax, column in zip(axes.flat, panels):
        xs = numeric[column]
        ax.barh(ys, [0.0 if not math.isfinite(v) else v for v in xs], color=_colours(len(ys)), height=0.7)
        finite = [v for v in xs if math.isfinite(v)]
        high, low = max(finite + [0.0]), min(finite + [0.0])
        span = (high - low) or 1.0
        ax.set_xlim(low - (0.02 * span if low < 0 else 0), high + 0.25 * span)
        if low >= 0 and 10 < high <= 100:  # a percentage: ticks up to 100, room for the labels
            ax.set_xticks([t for t in (0, 25, 50, 75, 100) if t <= high + 0.25 * span])
        for y, v in zip(ys, xs):
            ax.text(max(v, 0) if math.isfinite(v) else 0, y, f" {v:.1f}" if math.isfinite(v) else " -",
                    va="center", ha="left", fontsize=7)
        ax.set_title(_wrapped(column.removeprefix(f"{suite}: ")), fontsize=8)
        if not (low >= 0 and 10 < high <= 100):
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(ys, labels)
    axes[0, 0].invert_yaxis()
    fig.suptitle(suite, fontsize=9)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    return fig


def corruption_figure(results_list: Sequence[dict]):
    """Heat maps of top-1 (mIoU for segmenters) under the corruptions, a group of panels per
    corruption suite: for one model, each corruption (rows) at each severity (columns) and their
    mean; for several, each model (rows) under each corruption (mean over severities), and at
    each severity (mean over corruptions) when there were several. None when no result has them."""
    results_list = expand_results(results_list)
    labels = unique_labels(results_list)
    groups: dict[str, list[tuple[str, dict]]] = {}
    for lab, r in zip(labels, results_list):
        for suite in ("imagenet-c", "corruptions"):
            sr = (r.get("results") or {}).get(suite) or {}
            table, metric = (sr.get("top1"), "top-1") if sr.get("top1") else (sr.get("miou"), "mIoU")
            if table:
                name = f"{metric} (%)" + (" on ImageNet-C" if suite == "imagenet-c" else " under corruptions")
                groups.setdefault(name, []).append((lab, table))
    if not groups:
        return None
    panels = []  # (title, row names, column names, grid)
    for name, tables in groups.items():
        if len(tables) == 1:
            lab, table = tables[0]
            severities = sorted({s for per in table.values() for s in per}, key=int)
            grid = [[_number(per.get(s)) for s in severities] for per in table.values()]
            columns = [f"severity {s}" for s in severities]
            if len(severities) > 1:
                grid, columns = [row + [_mean(row)] for row in grid], columns + ["mean"]
            panels.append((f"{lab}: {name}", [c.replace("_", " ") for c in table], columns, grid))
            continue
        corruptions = list(dict.fromkeys(c for _, table in tables for c in table))
        severities = sorted({s for _, table in tables for per in table.values() for s in per}, key=int)
        by_corruption = [[_mean([_number(v) for v in table.get(c, {}).values()]) for c in corruptions]
                         for _, table in tables]
        panels.append((f"{name}, mean over severities", [lab for lab, _ in tables],
                       [c.replace("_", " ") for c in corruptions] + ["mean"],
                       [row + [_mean(row)] for row in by_corruption]))
        if len(severities) > 1:
            panels.append((f"{name}, mean over corruptions", [lab for lab, _ in tables],
                           [f"severity {s}" for s in severities],
                           [[_mean([_number(table[c].get(s)) for c in table]) for s in severities]
                            for _, table in tables]))
    width = sum(0.42 * len(cols) + 0.6 for _, _, cols, _ in panels)
    label_width = max(len(name) for _, rows, _, _ in panels for name in rows) * 0.07
    label_height = max(len(name) for _, _, cols, _ in panels for name in cols) * 0.075
    height = max(len(rows) for _, rows, _, _ in panels) * 0.3 + 1.0 + label_height
    fig = _figure(width + label_width * len(panels) + 1.0, height)
    axes = fig.subplots(1, len(panels), squeeze=False,
                        width_ratios=[len(cols) for _, _, cols, _ in panels])[0]
    image = None
    for ax, (title, rows, cols, grid) in zip(axes, panels):
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if math.isfinite(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                            color="black" if v > 60 else "white")
        ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=90)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(_wrapped(title, max(24, int(6 * len(cols)))), fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="%")
    return fig


def _colours(n: int) -> list:
    """``n`` distinct colours: matplotlib's ten, or twenty paler ones beyond ten."""
    if n <= 10:
        return [f"C{k}" for k in range(n)]
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib import colormaps

    return [colormaps["tab20"](k % 20) for k in range(n)]


def _number(value) -> float:
    return math.nan if is_missing(value) else float(value)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def readouts_figure(results_list: Sequence[dict]):
    """Top-1 after every readout (glimpse or pass): a panel of clean top-1, then one per attack
    setting (solid: attacked, dashed: clean), a colour per model, a dot where the headline is
    read. None when no model has more than one readout."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    results_list = expand_results(results_list)
    labels = unique_labels(results_list)
    panels: dict[str, list[tuple[int, list, list | None, int]]] = {}
    for i, r in enumerate(results_list):
        per = ((r.get("results") or {}).get("clean") or {}).get("per_readout_top1") or []
        if len(per) > 1:
            panels.setdefault("clean", []).append((i, per, None, headline_readout(r, per)))
        for suite in ATTACK_SUITES:
            for run in ((r.get("results") or {}).get(suite) or {}).get("runs", []):
                attacked = run.get("per_readout_top1") or []
                if len(attacked) > 1:
                    at = run["attack_readout"] - 1 if run.get("attack_readout") else headline_readout(r, attacked)
                    panels.setdefault(attack_label(run), []).append(
                        (i, attacked, run.get("per_readout_clean_top1"), at))
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    used = list(dict.fromkeys(i for lines in panels.values() for i, *_ in lines))
    colours = _colours(len(used))
    fig = _figure(3.6 * ncols, 2.9 * nrows + 0.5 + 0.18 * math.ceil((len(used) + 3) / 4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for i, values, clean, at in lines:
            steps = list(range(1, len(values) + 1))
            colour = colours[used.index(i)]
            ax.plot(steps, [_number(v) for v in values], marker="o", markersize=3, color=colour)
            ax.plot([at + 1], [_number(values[at])], marker="o", markersize=7, color=colour, mfc="none")
            if clean:
                ax.plot(steps, [_number(v) for v in clean], linestyle="--", color=colour, alpha=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-3, 103)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("readout (glimpse or pass)", fontsize=8)
        ax.set_ylabel("top-1 (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    handles = [Line2D([], [], color=colour) for colour in colours]
    names = [labels[i] for i in used]
    if len(panels) > 1 or "clean" not in panels:
        handles += [Line2D([], [], color="black"), Line2D([], [], color="black", linestyle="--")]
        names += ["attacked", "clean"]
    handles.append(Line2D([], [], color="black", marker="o", mfc="none", linestyle="none"))
    names.append("read in the summary")
    fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)), fontsize=8, frameon=False)
    return fig


def report_figures(results_list: Sequence[dict]) -> list[tuple[str, str, Callable[[], Any]]]:
    """The figures a report of ``results_list`` has, as ``(file suffix, title, builder)``: bars
    per model for each suite with figures, a heat map for the corruption suites
    (:data:`PLOT_CORRUPTIONS`), and top-1 after every readout (:data:`PLOT_READOUTS`) for
    models with several. A builder returns the matplotlib figure (None when it has nothing to
    draw)."""
    results_list = expand_results(results_list)
    suites = list(dict.fromkeys(s for r in results_list for s, _, _ in summary_entries(r)))
    figures: list[tuple[str, str, Callable[[], Any]]] = []
    for suite in suites:
        if suite in ("corruptions", "imagenet-c"):
            continue
        values = [v for r in results_list for s, _, v in summary_entries(r) if s == suite]
        if any(isinstance(v, (int, float)) and not is_missing(v) for v in values):
            figures.append((f"{suite}.png", f"{suite}: per model",
                            lambda suite=suite: bars_figure(results_list, suite)))
    if any((r.get("results") or {}).get(s, {}).get(key) for r in results_list
           for s in ("corruptions", "imagenet-c") for key in ("top1", "miou")):
        figures.append((PLOT_CORRUPTIONS, "top-1 per corruption and severity",
                        lambda: corruption_figure(results_list)))
    if any(len(values) > 1 for r in results_list for values in _per_readout_lists(r)):
        figures.append((PLOT_READOUTS, "top-1 after every glimpse or pass", lambda: readouts_figure(results_list)))
    return figures


def _per_readout_lists(results: dict) -> list[list]:
    """The lists of one figure per readout in one results dict: clean top-1 and each attack
    run's top-1."""
    res = results.get("results") or {}
    lists = [(res.get("clean") or {}).get("per_readout_top1") or []]
    lists += [run.get("per_readout_top1") or [] for s in ATTACK_SUITES for run in (res.get(s) or {}).get("runs", [])]
    return lists


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), what="plot")
    return path


def plot_corruptions(results_list: Sequence[dict], path: str | Path) -> bool:
    """The corruption heat map (:func:`corruption_figure`) written to ``path``; False (and
    nothing written) when no result has corruption figures."""
    fig = corruption_figure(results_list)
    if fig is None:
        return False
    save_figure(fig, path)
    return True


def plot_attack_readouts(results_list: Sequence[dict], path: str | Path) -> bool:
    """Top-1 after every readout (:func:`readouts_figure`) written to ``path``; False when no
    result has more than one readout."""
    fig = readouts_figure(results_list)
    if fig is None:
        return False
    save_figure(fig, path)
    return True


def write_report(results_list: Sequence[dict], out_dir: str | Path, stem: str = "report") -> list[Path]:
    """``<stem>.md`` and its figures (:func:`report_figures`) as ``<stem>_<suffix>``, in
    ``out_dir``; returns the files written. Every target is checked
    (:func:`bioattn.fileio.check_output_file`) before anything is written."""
    results_list = expand_results(results_list)
    out_dir = Path(out_dir)
    markdown = out_dir / f"{stem}.md"
    planned = [(out_dir / f"{stem}_{suffix}", title, build) for suffix, title, build in report_figures(results_list)]
    if out_dir.is_dir():
        for target in [markdown, *(path for path, _, _ in planned)]:
            check_output_file(target, "report file")
    figures = [(path, title, fig) for path, title, build in planned if (fig := build()) is not None]
    text = markdown_report(results_list, figures=[(title, path.name) for path, title, _ in figures])
    output_folder(out_dir, "report folder")
    atomic_write_text(markdown, text, what="report file")
    return [markdown] + [save_figure(fig, path) for path, _, fig in figures]
