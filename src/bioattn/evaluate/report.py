"""Evaluation reports: the results JSON, a Markdown table, and plots (accuracy vs corruption
severity; accuracy vs glimpse under attack), for one model or several side by side."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from ..errors import BioattnError
from ..fileio import atomic_write, atomic_write_text, check_output_file, output_folder

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


# ------------------------------------------------------------------------------------------
# labels and numbers
# ------------------------------------------------------------------------------------------
def model_label(results: dict) -> str:
    info = results.get("model") or {}
    name = info.get("label") or info.get("name") or "model"
    ckpt = info.get("checkpoint")
    if ckpt and not info.get("label"):
        name = f"{name} ({Path(str(ckpt)).name})"
    return str(name)


def _labels(results_list: Sequence[dict]) -> list[str]:
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


def attack_label(run: dict) -> str:
    name = {"fgsm": "FGSM", "pgd": "PGD", "autoattack": "AutoAttack"}.get(run.get("attack"), run.get("attack"))
    parts = [name]
    if run.get("norm") and run.get("norm") != "Linf":
        parts.append(run["norm"])
    if (run.get("eot") or 1) > 1:
        parts.append(f"EOT{run['eot']}")
    parts.append(f"eps={format_eps(run.get('eps'))}")
    if run.get("attack_readout"):
        parts.append(f"@readout{run['attack_readout']}")
    return " ".join(parts)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def summary_columns(results: dict) -> dict[str, float | None]:
    """The headline figures of one results dict, as ``{column: value}`` in suite order."""
    cols: dict[str, float | None] = {}
    res = results.get("results", {})
    for suite, r in res.items():
        if not isinstance(r, dict):
            continue
        if suite == "clean" and "miou" in r:
            cols["mIoU"] = r.get("miou")
            cols["pixel acc"] = r.get("pixel_acc")
        elif suite == "clean" and "map" in r:
            cols["mAP"] = r.get("map")
            cols["mAP of label frequencies"] = r.get("label_frequency_map")
            cols["F1 (overall)"] = r.get("f1_overall")
            cols["F1 (per class)"] = r.get("cf1")
        elif suite == "clean":
            cols["clean top1"] = r.get("top1")
            cols["clean top5"] = r.get("top5")
        elif suite == "corruptions" and "mean_miou" in r:
            cols["corrupted mIoU"] = r.get("mean_miou")
        elif suite == "steering" and "gain" in r:
            for key in ("first_with_prior", "first_without_prior", "second_with_prior", "second_without_prior",
                        "gain"):
                cols[f"steering {key.replace('_', ' ')} (IoU)"] = r.get(key)
        elif suite == "glimpses" and "on_object" in r:
            on = r.get("on_object") or []
            small = r.get("on_small_object") or []
            cols["fixations on an object, last glimpse (%)"] = on[-1] if on else None
            cols["fixations on a small object, last glimpse (%)"] = small[-1] if small else None
        elif suite == "imagenet-c":
            cols["IN-C mCE"] = r.get("mce")
            cols["IN-C top1"] = r.get("mean_top1")
        elif suite == "corruptions":
            cols["corrupted top1"] = r.get("mean_top1")
            cols["corruption error"] = r.get("mean_error")
            if "mce" in r:
                cols["mCE vs baseline"] = r.get("mce")
                cols["relative mCE"] = r.get("relative_mce")
        elif suite in ("imagenet-a", "imagenet-r", "imagenet-sketch"):
            cols[f"{suite} top1"] = r.get("top1")
        elif suite in ("fgsm", "pgd", "autoattack"):
            for run in r.get("runs", []):
                # a run aimed at one step is summarised by that step's accuracy
                key = "attacked_readout_top1" if run.get("attack_readout") else "top1"
                cols[f"{attack_label(run)} top1"] = run.get(key)
        elif suite == "steering":
            # shares and win rates are fractions in the results; the table shows them in %
            for key in ("prompted_share", "other_share", "win_rate", "shift", "shift_win_rate"):
                value = r.get(key)
                unit = "(points)" if key == "shift" else "(%)"
                cols[f"steering {key} {unit}"] = 100.0 * value if isinstance(value, (int, float)) else None
        elif suite == "attention":
            cols["attention on object (%)"] = r.get("mask_share")
            cols["object area (%)"] = r.get("mask_share_chance")
            cols["attention AUC"] = r.get("mask_auc")
        else:
            for key, value in _flat_numbers(r):
                cols[f"{suite} {key}"] = value
    return cols


def _flat_numbers(d: dict, prefix: str = "", depth: int = 0):
    """Numeric leaves of a nested dict (two levels), for suites with their own layout."""
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if key not in ("n", "n_images", "n_pairs", "seed", "prior_scale"):
                yield name, value
        elif isinstance(value, dict) and depth < 1 and key not in ("settings",):
            yield from _flat_numbers(value, f"{name}.", depth + 1)


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
    if not differ:
        merged = {s: next(c[s] for c in counts if s in c) for s in suites}
        return ["", f"Images: {_counts_text(merged)} (corruptions: per corruption and severity; "
                "attacks: per attack setting)."]
    per_model = "; ".join(f"{lab}: {_counts_text(c)}" for lab, c in zip(labels, counts) if c)
    return ["", f"**Note: the models were scored on different numbers of images in {', '.join(differ)} "
            f"(runs with different --limit?); their figures are not directly comparable.** "
            f"Images: {per_model}."]


def markdown_report(results_list: Sequence[dict]) -> str:
    """Markdown: a summary table (one row per model) with the images each suite used, then
    per-corruption and per-readout tables. Demo summaries stand for each of their models."""
    results_list = expand_results(results_list)
    if not results_list:
        raise BioattnError("no results to report")
    labels = _labels(results_list)
    summaries = [summary_columns(r) for r in results_list]
    columns: list[str] = []
    for s in summaries:
        columns += [c for c in s if c not in columns]
    lines = ["# Evaluation", ""]
    lines += _table(["model"] + columns, [[lab] + [_fmt(s.get(c)) for c in columns]
                                          for lab, s in zip(labels, summaries)])
    lines += _image_notes(labels, results_list)
    lines += ["", "Top-1, errors, shares and win rates in %. Attacks: top-1 on adversarial images at the "
              "attacked readout (the final prediction unless @readoutN); eps on [0, 1] pixels. mCE x100 "
              "(ImageNet-C: normalised by AlexNet's errors; generated corruptions: by the baseline "
              "model's)."]
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
                rows.append([lab, c] + [_fmt(v) for v in sr["top1"][c].values()]
                            + [_fmt(sr["corruption_top1"][c]), _fmt(ce)])
        if rows:
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
        extra={lab: [_fmt(g.get("learned")), _fmt(g.get("random"))] for lab, g in glimpses if g},
        extra_header=["after the first", "uniform random"])
    step_rows = []
    for lab, r in zip(labels, results_list):
        for suite in ("fgsm", "pgd", "autoattack"):
            for run in (r.get("results", {}).get(suite) or {}).get("runs", []):
                if len(run.get("per_readout_top1") or []) > 1:
                    step_rows.append((lab, run))
    if step_rows:
        width = max(len(run["per_readout_top1"]) for _, run in step_rows)
        lines += ["", "## Top-1 at every readout under attack (clean in brackets)", ""]
        rows = []
        for lab, run in step_rows:
            cells = [f"{_fmt(a)} ({_fmt(c)})" for a, c in zip(run["per_readout_top1"], run["per_readout_clean_top1"])]
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
            lines += _table(["class", "IoU", "acc"], [[row["class"], _fmt(row["iou"]), _fmt(row["acc"])]
                                                     for row in clean["per_class"]])
        if clean.get("per_class_ap") and "map" in clean:
            names = r.get("model", {}).get("classes") or [str(i) for i in range(len(clean["per_class_ap"]))]
            lines += ["", f"## {lab}: average precision per class (%)", ""]
            lines += _table(["class", "AP"], [[n, _fmt(v)] for n, v in zip(names, clean["per_class_ap"])])
        corr = res.get("corruptions") or {}
        if corr.get("miou"):
            severities = [f"s{s}" for s in next(iter(corr["miou"].values()))]
            lines += ["", f"## {lab}: mIoU per corruption and severity (clean {_fmt(corr.get('clean_miou'))})", ""]
            lines += _table(["corruption", *severities, "mean"],
                            [[c, *[_fmt(v) for v in per.values()], _fmt(corr["corruption_miou"][c])]
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
    body = [[lab] + [_fmt(v) for v in values] + [""] * (width - len(values))
            + extra.get(lab, [""] * len(extra_header))
            for lab, values in rows]
    return ["", f"## {title}", ""] + _table(header, body)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------
def _figure(nrows: int, ncols: int, width: float, height: float, sharey: bool = False):
    """A matplotlib figure with Agg output, built without pyplot (no global state, no GUI)."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return fig, axes


def plot_corruptions(results_list: Sequence[dict], path: str | Path) -> bool:
    """Top-1 vs severity, one panel per corruption, one line per model (and suite). Returns
    False (and writes nothing) when no result has corruption figures."""
    results_list = expand_results(results_list)
    labels = _labels(results_list)
    series: dict[str, list[tuple[str, dict, list[int], list[float]]]] = {}
    for i, (lab, r) in enumerate(zip(labels, results_list)):
        for suite in ("imagenet-c", "corruptions"):
            sr = r.get("results", {}).get(suite)
            if not sr or not sr.get("top1"):
                continue
            name = lab if suite == "imagenet-c" else f"{lab} (generated)"
            style = {"color": f"C{i % 10}", "linestyle": "-" if suite == "imagenet-c" else "--"}
            for c, per_sev in sr["top1"].items():
                sev = sorted(per_sev, key=int)
                series.setdefault(c, []).append((name, style, [int(s) for s in sev],
                                                 [per_sev[s] if per_sev[s] is not None else math.nan for s in sev]))
    if not series:
        return False
    n = len(series)
    ncols = min(5, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(nrows, ncols, 3.2, 2.6, sharey=True)
    for ax, (c, lines) in zip(axes.flat, series.items()):
        for name, style, xs, ys in lines:
            ax.plot(xs, ys, marker="o", markersize=4, label=name, **style)
        ax.set_title(c.replace("_", " "), fontsize=9)
        ax.set_xticks(range(1, 6))
        ax.set_ylim(-3, 103)
        ax.set_xlabel("severity", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1 (%)")
    legend: dict[str, object] = {}
    for ax in axes.flat[:n]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    _legend_and_save(fig, list(legend.values()), list(legend), path, nrows, panel_height=2.6,
                     left=0.06, right=0.99, wspace=0.08, hspace=0.6, legend_base=0.65)
    return True


def _legend_and_save(fig, handles, names, path, nrows: int, panel_height: float, left: float,
                     right: float, wspace: float, hspace: float, legend_base: float) -> None:
    """One legend under the panels (four entries a row), room left for it, and the PNG written."""
    legend_rows = math.ceil(len(names) / 4)
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8)
    height = panel_height * nrows
    fig.subplots_adjust(left=left, right=right, top=1 - 0.3 / height, wspace=wspace, hspace=hspace,
                        bottom=min(0.45, (legend_base + 0.22 * legend_rows) / height))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), what="plot")


def plot_attack_readouts(results_list: Sequence[dict], path: str | Path) -> bool:
    """Top-1 at every readout (pass / glimpse) under attack, one panel per attack setting, one
    colour per model (solid: attacked, dashed: clean). Returns False when no result has more
    than one step."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    results_list = expand_results(results_list)
    labels = _labels(results_list)
    panels: dict[str, list[tuple[int, dict]]] = {}
    for i, r in enumerate(results_list):
        for suite in ("fgsm", "pgd", "autoattack"):
            for run in (r.get("results", {}).get(suite) or {}).get("runs", []):
                if len(run.get("per_readout_top1") or []) > 1:
                    panels.setdefault(attack_label(run), []).append((i, run))
    if not panels:
        return False
    n = len(panels)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(nrows, ncols, 4.2, 3.2)
    used: list[int] = []
    for ax, (title, runs) in zip(axes.flat, panels.items()):
        for i, run in runs:
            steps = list(range(1, len(run["per_readout_top1"]) + 1))
            color = f"C{i % 10}"
            ax.plot(steps, [v if v is not None else math.nan for v in run["per_readout_top1"]],
                    marker="o", markersize=3, color=color)
            ax.plot(steps, [v if v is not None else math.nan for v in run["per_readout_clean_top1"]],
                    linestyle="--", color=color, alpha=0.6)
            if i not in used:
                used.append(i)
            if run.get("attack_readout"):
                ax.axvline(run["attack_readout"], color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-3, 103)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("readout (pass or glimpse)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    handles = [Line2D([], [], color=f"C{i % 10}") for i in used]
    handles += [Line2D([], [], color="black"), Line2D([], [], color="black", linestyle="--")]
    names = [labels[i] for i in used] + ["attacked", "clean"]
    _legend_and_save(fig, handles, names, path, nrows, panel_height=3.2,
                     left=0.08, right=0.98, wspace=0.3, hspace=0.5, legend_base=0.7)
    return True


def write_report(results_list: Sequence[dict], out_dir: str | Path, stem: str = "report") -> list[Path]:
    """``<stem>.md`` and the plots that apply, in ``out_dir``; returns the files written. Every
    target is checked (:func:`bioattn.fileio.check_output_file`) before anything is written."""
    results_list = expand_results(results_list)
    out_dir = Path(out_dir)
    written = [out_dir / f"{stem}.md"]
    corr = out_dir / f"{stem}_{PLOT_CORRUPTIONS}"
    steps = out_dir / f"{stem}_{PLOT_READOUTS}"
    if out_dir.is_dir():
        for target in (written[0], corr, steps):
            check_output_file(target, "report file")
    text = markdown_report(results_list)
    output_folder(out_dir, "report folder")
    atomic_write_text(written[0], text, what="report file")
    if plot_corruptions(results_list, corr):
        written.append(corr)
    if plot_attack_readouts(results_list, steps):
        written.append(steps)
    return written
