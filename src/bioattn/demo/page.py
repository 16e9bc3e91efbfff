"""The demo's report page: ``index.html`` (findings, a heat map, compact tables, the full tables
behind a link, figures) and the Markdown tables of the task parts."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate.summary import format_eps
from ..fileio import atomic_write, atomic_write_text
from .findings import domain_findings, findings, headline_scores, percent
from .settings import FROM_DEMO, FROM_ZOO, DemoSettings

HEATMAP = "corruptions_heatmap.png"


def _domain_table(domains: dict[str, Any] | None) -> str:
    if not domains:
        return ""
    heads = [*domains["test_domains"], "mean"]
    body = "".join(
        f"<tr><td>{html.escape(row['label'])}</td>"
        + "".join(f"<td>{percent(row['top1'].get(d))}</td>" for d in domains["test_domains"])
        + f"<td>{percent(row['mean_top1'])}</td></tr>" for row in domains["rows"])
    images = ", ".join(f"{d} {n}" for d, n in domains["test_images"].items())
    return ("<h2>Domain generalisation</h2>\n<table><thead><tr><th>model \\ held-out style</th>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + f"</tr></thead><tbody>{body}</tbody></table>"
            f"\n<p class=\"about\">Top-1 in % on the held-out style (chance 10%; test images: {images}) "
            + (f"of the zoo's leave-one-style-out models: each trained for {domains['epochs']} epochs from the "
               f"zoo's classifier on the other three styles ({html.escape(domains['data'])} per style), "
               "keeping the epoch with the best validation top-1. "
               if domains.get("weights") == FROM_ZOO else
               f"after fine-tuning each demo checkpoint for {domains['epochs']} epoch(s) on the other three "
               f"styles ({html.escape(domains['data'])}), keeping the epoch with the best validation top-1. ")
            + "The classifiers they start from learned the shapes in the default look, closest to the photo "
            "style.</p>")


def markdown_to_html(md: str) -> str:
    """Markdown headings, paragraphs and pipe tables as HTML (what report.md holds)."""
    parts: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, body = rows[0], [r for r in rows[2:]]
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                         + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("## "):
            parts.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith("# "):
            continue
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


def plot_corruption_heatmap(results_list: Sequence[dict], path: Path) -> bool:
    """Models x corruptions heat map of top-1 (clean first, for reference); False (nothing
    written) when no result has corruption figures."""
    # deferred: matplotlib loads in about a second; only figure writers need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    rows, labels, columns = [], [], None
    for r in results_list:
        corr = (r.get("results") or {}).get("corruptions") or {}
        per = corr.get("corruption_top1")
        if not per:
            continue
        columns = columns or list(per)
        clean = ((r.get("results") or {}).get("clean") or {}).get("top1")
        rows.append([clean] + [per.get(c) for c in columns])
        labels.append((r.get("model") or {}).get("name", "model"))
    if not rows:
        return False
    values = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    names = ["clean"] + [c.replace("_", " ") for c in columns]
    fig = Figure(figsize=(1.6 + 0.62 * len(names), 1.3 + 0.38 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.axvline(0.5, color="white", lw=2)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="black" if v > 60 else "white")
    fig.colorbar(image, ax=ax, label="top-1 (%)", fraction=0.03, pad=0.01)
    ax.set_title("top-1 (%) on clean and corrupted test images", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), what="figure")
    return True


def _compact_table(results_list: Sequence[dict]) -> str:
    head = ["model", "clean", "corrupted", "FGSM", "PGD", "attention on object"]
    body = []
    for r in results_list:
        s = headline_scores(r)
        body.append([(r.get("model") or {}).get("name", "model"), percent(s["clean"]), percent(s["corrupted"]),
                     percent(s["fgsm"]), percent(s["pgd"]), percent(s["on_object"])])
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
            + "</tbody></table>")


def write_html(out: Path, results_list: Sequence[dict], md: str, plots: list[str],
               gallery: list[tuple[str, str]], settings: DemoSettings, seconds: float,
               domains: dict[str, Any] | None = None, tasks_md: str = "",
               task_points: Sequence[str] = (), sources: dict[str, str] | None = None,
               trainer: dict[str, Any] | None = None) -> None:
    heatmap = plot_corruption_heatmap(results_list, out / HEATMAP)
    points = "\n".join(f"<li>{html.escape(sentence)}</li>"
                       for sentence in [*findings(results_list), *domain_findings(domains), *task_points])
    tasks_html = f'<div class="scroll">{markdown_to_html(tasks_md)}</div>' if tasks_md else ""
    figures = "\n".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(p)}"><figcaption>{html.escape(p)}</figcaption></figure>'
        for p in plots)
    if figures:
        figures = "<h2>Top-1 at every glimpse under attack</h2>\n" + figures

    eps = sorted({run.get("eps") for r in results_list for suite in ("fgsm", "pgd")
                  for run in ((r.get("results") or {}).get(suite) or {}).get("runs", [])} - {None})
    eps_text = ", ".join(format_eps(e) for e in eps) or "-"
    tiles = "\n".join(
        f'<figure><img src="figures/{html.escape(f)}" alt="{html.escape(c)}">'
        f'<figcaption>{html.escape(c)}</figcaption></figure>'
        for c, f in gallery)
    heat = (f'<figure class="wide"><img src="{HEATMAP}" alt="top-1 per model and corruption">'
            "<figcaption>Top-1 per model (rows) on clean images and under each corruption (severity "
            f"{', '.join(str(s) for s in settings.severities)}).</figcaption></figure>") if heatmap else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bioattn demo report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; line-height: 1.45; }}
ul.findings li {{ margin: 0.35em 0; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
details {{ margin: 0.8em 0; }}
summary {{ cursor: pointer; color: #1a4f8b; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; max-width: 100%; }}
figure img {{ max-width: 100%; }}
figure.wide {{ display: block; margin: 0.5em 0; }}
figcaption {{ font-size: 0.8em; color: #444; }}
p.about {{ color: #444; font-size: 0.9em; }}
</style></head><body>
<h1>bioattn demo</h1>
<h2>Findings</h2>
<ul class="findings">
{points}
</ul>
<h2>Robustness at a glance</h2>
{heat}
<div class="scroll">{_compact_table(results_list)}</div>
<p class="about">Top-1 in %. Corrupted: mean over the corruptions; FGSM and PGD at eps {eps_text} (glimpse
models: the prediction at glimpse {settings.attack_readout} is attacked). Attention on object: share of
the primary attention map's mass inside the object's mask.</p>
<details><summary>All results: the full table, top-1 per corruption, per-readout tables (also in report.md)</summary>
<div class="scroll">{markdown_to_html(md)}</div>
</details>
{_domain_table(domains)}
{tasks_html}
{figures}
<h2>Attention gallery</h2>
{tiles}
<h2>About this run</h2>
<p class="about">{html.escape(_origin_text(sources or {}, settings))}{html.escape(_trainer_text(trainer))}
Evaluated side by side on the test
images of {html.escape(settings.data)}; the whole run took {seconds:.0f} s. Steering: per two-object
test image, the share of AbSViT's top-down map on the prompted object minus that on the other one,
averaged over prompting either object (the prior's scale and the map's threshold chosen on
validation pairs).</p>
</body></html>
"""
    atomic_write_text(out / "index.html", page)


def _origin_text(sources: dict[str, str], settings: DemoSettings) -> str:
    """Where the models' weights come from, in one or two sentences."""
    zoo = [label for label, origin in sources.items() if origin == FROM_ZOO]
    trained = [label for label, origin in sources.items() if origin != FROM_ZOO]
    parts = []
    if zoo:
        parts.append(f"From the model zoo ({', '.join(zoo)}): micro models trained by bioattn zoo on the "
                     "embedded benchmark (20,000 images; recipe, log and test figures in each entry's "
                     "train.json).")
    if trained:
        parts.append(f"Trained by this demo ({', '.join(trained)}): {settings.data}, {settings.epochs} "
                     "epochs each.")
    return " ".join(parts)


def _trainer_text(trainer: dict[str, Any] | None) -> str:
    """The from-scratch run of the trainer, in one sentence."""
    if not trainer:
        return ""
    zoo = f" (the zoo's: {trainer['zoo_top1']:.1f}%)" if trainer.get("zoo_top1") is not None else ""
    return (f" The trainer at work: {trainer['label']} trained here from scratch on {trainer['data']} for "
            f"{trainer['epochs']} epochs in {trainer['train_s']:.0f} s reaches {trainer['top1']:.1f}% clean top-1 "
            f"on {trainer['n']} test images{zoo}.")


def _task_origin(part: dict[str, Any]) -> str:
    """Where a task part's models come from: the zoo, the demo, or both (model by model)."""
    sources = {label: entry.get("weights", FROM_DEMO) for label, entry in part["models"].items()}
    demo = f"{part['epochs']} epochs from the demo classifiers"
    if all(s == FROM_ZOO for s in sources.values()):
        return "the zoo's models, fine-tuned from the zoo's classifiers on the full training split"
    if all(s == FROM_DEMO for s in sources.values()):
        return demo
    return "; ".join(f"{label}: {'the zoo' if s == FROM_ZOO else demo}" for label, s in sources.items())


def task_rows(segmentation: dict[str, Any] | None, multilabel: dict[str, Any] | None) -> list[str]:
    """Markdown tables of the two parts, for the report."""
    lines: list[str] = []
    if segmentation and segmentation.get("models"):
        lines += ["", f"## Segmentation ({segmentation['data']}; {_task_origin(segmentation)})", "",
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
        lines += ["", f"## Multi-label recognition ({multilabel['data']}; {_task_origin(multilabel)})", "",
                  "| model | mAP | mAP of label frequencies | F1 (overall) | fixations on an object, per glimpse |",
                  "|---|---|---|---|---|"]
        for label, entry in multilabel["models"].items():
            r = entry["results"]
            glimpses = r.get("glimpses") or {}
            per = ", ".join(f"{v:.0f}" for v in glimpses.get("on_object", [])) or "-"
            lines.append(f"| {label} | {r['clean']['map']:.1f} | {r['clean']['label_frequency_map']:.1f} | "
                         f"{r['clean']['f1_overall']:.1f} | {per} |")
    return lines
