"""The results page: the claims' verdicts written from the stored records, and their check.

``bioattn results`` (``make results``; Python: :func:`write_results`) measures every built zoo
entry image by image (:mod:`bioattn.results.measure`), stores the records beside the page
(``docs/results/records/``, :mod:`bioattn.results.records`), decides every claim from them
(:mod:`bioattn.results.judge`) and writes ``docs/results.md``: how the verdicts are reached, one
row per claim (primary metric, difference with its 95% interval, Holm-corrected p, images,
seeds, verdict), each claim's other metrics and where they disagree, the smallest difference
each test detects at 80% power, every model's figures and how each was trained.

``bioattn results --check`` (Python: :func:`check_results`) measures nothing: it checks every
record against the manifest's digest, recomputes every verdict from the records and compares it
with the page; an altered record or a verdict that differs is a one-line error.

The page starts with its own title, by which a later call knows the file is one it wrote: a
file of that name that does not start so is refused rather than replaced. Records and page are
each written atomically (:mod:`bioattn.fileio`).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ResultsSettings
from ..errors import BioattnError
from ..fileio import atomic_write_text, check_output_file
from ..zoo import BENCHMARK, MULTILABEL_BENCHMARK, SEGMENTATION_BENCHMARK, STYLES, ZOO, find_entry
from . import stats
from .claims import AT_MOST, EQUIVALENT, GREATER, METRICS, OFFICIAL_EPS, claims
from .judge import (
    FAILS,
    HOLDS,
    OTHER_RESAMPLES,
    RULES,
    SEEDS,
    UNMEASURED,
    UNRESOLVED,
    VERDICTS,
    Judgement,
    eps_key,
    judge,
)
from .measure import PAIR_BENCHMARK, STEERING_PAIRS, base_name, draw_steering, held_out, measure_zoo
from .records import MANIFEST, Record, read_records, write_records

# the first line of the page, by which a later call knows the page is its own
TITLE = "# Results: the sources' claims on the embedded benchmark"
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|.*\|\s*([^|]+?)\s*\|\s*$")


def records_folder(out: str | Path) -> Path:
    """Where the records of page ``out`` live: ``<folder of the page's name>/records``."""
    out = Path(out)
    return out.parent / out.stem / "records"


def steering_figure(out: str | Path, entry: str) -> Path:
    """The figure of steerable entry ``entry``'s prompted maps beside page ``out``:
    ``<folder of the page's name>/figures/<entry>.steering.png``."""
    out = Path(out)
    return out.parent / out.stem / "figures" / f"{entry}.steering.png"


def written_here(path: str | Path) -> bool:
    """Whether ``path`` is a results page this module wrote (it starts with :data:`TITLE`)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, ValueError):
        return False
    return first.rstrip("\n") == TITLE and not path.is_symlink()


def check_page_target(out: str | Path) -> Path:
    """``out`` if the page can be written there: a file this module did not write is refused."""
    out = check_output_file(out, "results page")
    if out.exists() and not written_here(out):
        raise BioattnError(f"results page {out} was not written by bioattn results (it does not start with "
                           f"'{TITLE}'): move it, or give another --out")
    return out


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------
def _unit(metric: str) -> tuple[str, int]:
    return ("", 3) if RULES[metric].scale == 1.0 else (" pt", 1)


def _num(value: float | None, metric: str, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    unit, digits = _unit(metric)
    return f"{value:{'+' if signed else ''}.{digits}f}{unit}"


def _p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _expected(judgement: Judgement) -> str:
    c = judgement.claim
    if c.direction == EQUIVALENT:
        return f"within ±{c.margin:g} pt"
    if c.direction == AT_MOST:
        return f"below +{c.margin:g} pt"
    return "above 0" if c.direction == GREATER else "below 0"


def _difference(judgement: Judgement) -> str:
    f = judgement.primary
    if f is None:
        return "-"
    return f"{_num(f.estimate, f.metric)} [{_num(f.low, f.metric)}, {_num(f.high, f.metric)}]"


def _sides(judgement: Judgement, figure) -> str:
    c = judgement.claim
    if figure.system is None:
        return ""
    if figure.metric in ("fixations_on_object", "small_object_fixations"):
        return f"{figure.system:.1f}% of fixations vs {figure.baseline:.1f}% for random points"
    if figure.metric == "steering_win":
        return f"{figure.system:.1f}% of prompts (chance 50%)"
    def own(value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "-"
        return f"{value:.3f}" if RULES[figure.metric].scale == 1.0 else f"{value:.1f}%"

    if not c.baseline or figure.baseline is None:
        return own(figure.system)
    return f"{own(figure.system)} vs {own(figure.baseline)}"


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
def method_lines(settings: ResultsSettings) -> list[str]:
    """The section saying how the verdicts are reached."""
    return [
        "## How the verdicts are reached", "",
        "Every claim is declared before it is measured (`src/bioattn/results/claims.py`): the zoo entries it "
        "compares, its primary metric, the expected direction and, for a claim of no change, the margin within "
        "which a difference counts as none (the clean top-1 of RS-RNN looking longer: "
        f"±{_margin('rsrnn-looks-longer')} "
        f"points; a baseline's top-1 under attack \"does not recover\" while its rise stays below "
        f"{_margin('baseline-no-recovery-crop-s')} points). Only the primary metric decides; the others are shown "
        "beside it, with a note where they point the other way.", "",
        "Every model is measured on the same test images, image by image (the records in "
        "`docs/results/records/`), so every test is paired and the image is the unit:", "",
        "* two accuracies of single seeds on the same images: McNemar's exact test, mid-p value;",
        "* a per-image score against zero (steering): Wilcoxon's signed-rank test over images (each image's two "
        "prompts are averaged first, never counted as two samples);",
        "* means over conditions (the 15 corruptions at 5 severities), AUCs, map shares, mCE (errors summed over "
        "the severities, divided by the baseline's, averaged over the corruptions) and mIoU (intersections and "
        f"unions summed over the images): the paired bootstrap over images ({stats.RESAMPLES:,} resamples, "
        f"{OTHER_RESAMPLES:,} for the metrics that decide nothing; every value of an image resampled together);",
        "* a claim of no change: two one-sided paired t-tests against the margin (TOST); a claim that a "
        "difference stays below a margin: one one-sided paired t-test;",
        "* every interval is the paired bootstrap's 95% percentile interval.", "",
        f"The p-values of all measured claims are one family, corrected by Holm's method (α = {stats.ALPHA}). "
        "A claim **holds** only when its corrected p is below α, the difference averaged over seeds (each image's "
        "outcome averaged over the seeds its models were trained with) has the claimed sign, and so has the "
        "difference of every seed alone; a claim of no change holds only when the whole 95% interval lies "
        "inside its margin (and the corrected equivalence p is below α). It **does not hold** when the corrected "
        "p is below α with the opposite sign, whatever the seeds alone give (where one of them disagrees in sign, "
        "the claim's row says so; a claim of no change: the whole interval lies outside the margin). "
        "Anything else is **not resolved**: the data cannot tell, at this number of images and seeds, whether "
        "the claim holds; it never counts as holding. The power table below gives the smallest difference each "
        "test would have detected. **Not measured**: a record the claim needs is missing (the row says which).", "",
        f"A verdict needs {SEEDS} training seeds of every model the claim compares: a difference between two "
        "models trained once can be the seed's. Until each model has them, the claim is not resolved, and the "
        "column *the test on these seeds* gives what the rules above say on the seeds measured so far.",
        "",
        f"Images: clean top-1 on {settings.images} test images; {settings.corruption_images} under each of the 15 "
        f"corruptions at severit{'y' if len(settings.severities) == 1 else 'ies'} "
        f"{', '.join(map(str, settings.severities))}; {settings.attack_images} under FGSM "
        f"and PGD (eps {', '.join(f'{e * 255:g}/255' for e in settings.eps)}; the claims at 1/255; glimpse models: "
        f"{settings.glimpses} glimpses, the attack aimed at glimpse {settings.attack_readout}); "
        f"{settings.attention_images} for attention maps and fixations; {settings.steering_images} two-object "
        f"images (`{PAIR_BENCHMARK}`) for steering. `bioattn results --check` recomputes every verdict from the "
        "records and compares it with this page.",
    ]


def _margin(claim_id: str) -> str:
    found = next((c for c in claims() if c.id == claim_id), None)
    return f"{found.margin:g}" if found is not None and found.margin is not None else "-"


def claim_table(judgements: Sequence[Judgement]) -> list[str]:
    lines = ["| id | claim | source | primary metric (expected) | difference [95% interval] | Holm p | images | "
             "seeds | the test on these seeds | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for j in judgements:
        c, f = j.claim, j.primary
        lines.append(f"| `{c.id}` | {_cell(c.statement)} | {c.source} | {c.metric} ({_expected(j)}) | "
                     f"{_difference(j)} | {_p(j.p_corrected)} | {f.n if f else '-'} | {j.seeds or '-'} | "
                     f"{j.outcome if f else '-'} | {j.verdict} |")
    return lines


def claim_details(judgements: Sequence[Judgement], records: dict[tuple[str, int], Record],
                  out: str | Path | None = None) -> list[str]:
    """Each claim's figures; a steering claim names its model's figure beside page ``out``."""
    lines = ["## Claim by claim", ""]
    for j in judgements:
        c, f = j.claim, j.primary
        compared = ", ".join(f"`{e}`" for e in c.system) + (
            " vs " + ", ".join(f"`{e}`" for e in c.baseline) if c.baseline else "")
        lines += [f"### `{c.id}`: {c.statement}", "",
                  f"Source ({c.source}): {c.source_figure}. Compared: {compared}. Primary metric: **{c.metric}**, "
                  f"{METRICS[c.metric]}; expected {_expected(j)}.", ""]
        if f is None:
            lines += [f"Not measured: {j.note}.", ""]
            continue
        sides = _sides(j, f)
        lines.append(f"- {c.metric}: {sides + '; ' if sides else ''}difference {_difference(j)}, {f.test} "
                     f"p {_p(f.p)} (Holm {_p(j.p_corrected)}), {f.n} images, {j.seeds} seed(s)"
                     + (f" (each seed: {', '.join(_num(s, f.metric) for s in f.per_seed)})" if j.seeds > 1 else "")
                     + f": **{j.verdict}**" + (f" ({j.note})" if j.note else "") + ".")
        for o in j.others:
            sides = _sides(j, o)
            lines.append(f"- {o.metric}: {sides + '; ' if sides else ''}difference {_num(o.estimate, o.metric)} "
                         f"[{_num(o.low, o.metric)}, {_num(o.high, o.metric)}], {o.test} p {_p(o.p)} "
                         f"(uncorrected), {o.n} images.")
        ratios = _clean_ratios(c, records)
        if ratios:
            what = "PGD" if c.metric.startswith("pgd") else "corrupted"
            lines.append(f"- {what} / clean top-1 on the same images: {ratios}.")
        if j.others:
            lines.append("- the other metrics do not point significantly the other way." if not j.disagree else
                         f"- disagreeing: {', '.join(j.disagree)} points significantly the other way (uncorrected).")
        if out is not None and c.metric == "steering_shift":
            figure = steering_figure(out, c.system[0]).relative_to(Path(out).parent).as_posix()
            lines += ["", f"Figure: `{figure}` beside this page, which `bioattn results` draws from the model and "
                      f"this record (Python: `bioattn.results.page.draw_figures`; figures are not kept in git): the "
                      f"first {STEERING_PAIRS} test pairs scored, each under the class of either object, the map as "
                      "the benchmark scores it and its share on each object. The demo draws the same maps."]
        lines.append("")
    return lines


def _clean_ratios(claim, records: dict[tuple[str, int], Record]) -> str:
    """Each model's corrupted / clean (or attacked / clean) top-1 ratio on the same images."""
    prefix = {"mce": "corruption", "corrupted_top1": "corruption", "pgd_top1": f"pgd/{eps_key(OFFICIAL_EPS)}"}
    where = prefix.get(claim.metric)
    if where is None or not claim.baseline:
        return ""
    parts = []
    for entry in claim.system + claim.baseline:
        found = [r for (e, _), r in sorted(records.items()) if e == entry]
        if not found:
            return ""
        r = found[0]
        clean_key = "corruption/clean" if where == "corruption" else f"{where}/clean"
        if not r.has(clean_key):
            return ""
        if where == "corruption":
            conditions = [k for k in r.conditions if k.startswith("corruption/") and k != "corruption/clean"]
            attacked = float(np.mean([r.get(k).mean() for k in conditions])) if conditions else math.nan
        else:
            attacked = float(r.get(where).mean()) if r.has(where) else math.nan
        clean = float(r.get(clean_key).mean())
        parts.append(f"`{entry}` {attacked / clean:.3f}" if clean > 0 else f"`{entry}` -")
    return ", ".join(parts)


def power_table(judgements: Sequence[Judgement]) -> list[str]:
    lines = ["## Power", "",
             f"The smallest difference of each claim's primary metric that its test detects with {stats.POWER:.0%} "
             f"power at α = {stats.ALPHA} (before the Holm correction) on the images measured: from the share of "
             "discordant images for two accuracies (McNemar), from the per-image standard deviation of the "
             "differences for means and scores, from the bootstrap's standard error for mCE and mIoU. A claim not "
             "resolved with a detectable difference above the one its source reports needs more images.", "",
             "| id | primary metric | test | images | detectable at 80% power | observed |",
             "|---|---|---|---|---|---|"]
    for j in judgements:
        f = j.primary
        if f is None:
            continue
        lines.append(f"| `{j.claim.id}` | {f.metric} | {f.test} | {f.n} | ±{_num(f.detectable, f.metric, False)} | "
                     f"{_num(f.estimate, f.metric)} |")
    return lines


def _mean(record: Record, condition: str, scale: float = 100.0) -> float | None:
    values = record.get(condition).astype(float) if record.has(condition) else np.array([np.nan])
    return None if np.isnan(values).all() else float(scale * np.nanmean(values))


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}%"


def _seed_mean(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(found)) if found else None


def _over_seeds(values: Sequence[float | None], digits: int = 1, unit: str = "%") -> str:
    """A figure of every seed: its mean, and the spread (sd) across seeds where there are several."""
    found = [v for v in values if v is not None and math.isfinite(v)]
    if not found:
        return "-"
    spread = f" ± {np.std(found, ddof=1):.{digits}f}" if len(found) > 1 else ""
    return f"{float(np.mean(found)):.{digits}f}{unit}{spread}"


def _clean(record: Record) -> float | None:
    """Clean top-1 (%): a glimpse model's at the glimpse its attacks aim at."""
    if record.has("clean/glimpse") and "attack_readout" in record.meta:
        return float(100 * record.get("clean/glimpse")[int(record.meta["attack_readout"]) - 1].mean())
    return _mean(record, "clean")


def _corrupted(record: Record) -> float | None:
    conditions = [k for k in record.conditions if k.startswith("corruption/") and k != "corruption/clean"]
    return float(100 * np.mean([record.get(k).mean() for k in conditions])) if conditions else None


def model_lines(records: dict[tuple[str, int], Record]) -> list[str]:
    """Every measured model's figures, by kind of model."""
    seeds: dict[str, list[Record]] = {}
    for (entry, _), record in sorted(records.items()):
        seeds.setdefault(entry, []).append(record)
    by_entry = {entry: found[0] for entry, found in seeds.items()}
    key = eps_key(OFFICIAL_EPS)
    lines = ["## The models", "",
             "Top-1 in % on the benchmark's test images, the mean over the seeds measured (± their standard "
             "deviation where there are several): clean, averaged over the corruptions and severities, under "
             "FGSM and PGD at eps 1/255; the share of the attention map on the object (the object's "
             "area) and its AUC-Judd against the object mask. A glimpse model is read at the glimpse the attacks "
             "aim at, clean and attacked alike, and under corruptions at its last glimpse (the one recorded); "
             "the column *glimpse* says which.", "",
             "| zoo entry | model | seeds | glimpse | clean | corrupted | FGSM | PGD | attention on object (object "
             "area) | attention AUC |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in by_entry.items():
        if r.meta.get("data") != BENCHMARK:
            continue
        every = seeds[name]
        shares = [_mean(x, "attention/share") for x in every]
        on = f"{_over_seeds(shares)} ({_pct(_mean(r, 'attention/area'))})" if _seed_mean(shares) is not None else "-"
        glimpse = f"{r.meta['attack_readout']} (corrupted: {r.meta['settings']['glimpses']})" \
            if r.has("clean/glimpse") and "attack_readout" in r.meta else "-"
        lines.append(f"| `{name}` | {r.meta['model']['name']} | {len(every)} | {glimpse} | "
                     f"{_over_seeds([_clean(x) for x in every])} | "
                     f"{_over_seeds([_corrupted(x) for x in every])} | "
                     f"{_over_seeds([_mean(x, f'fgsm/{key}') for x in every])} | "
                     f"{_over_seeds([_mean(x, f'pgd/{key}') for x in every])} | {on} | "
                     f"{_over_seeds([_mean(x, 'attention/auc', 1.0) for x in every], 3, '')} |")
    seg = {n: r for n, r in by_entry.items() if r.meta.get("data") == SEGMENTATION_BENCHMARK}
    if seg:
        lines += ["", "## Segmenters", "",
                  f"UperNet on `{SEGMENTATION_BENCHMARK}`: mIoU over the 11 classes (background and the 10 shapes) "
                  "from the intersections and unions summed over the test images, and the mIoU of predicting "
                  "background everywhere, in %; the mean over the seeds measured (± their standard deviation "
                  "where there are several).", "",
                  "| zoo entry | model | seeds | images | mIoU | all background |", "|---|---|---|---|---|---|"]
        for name, r in seg.items():
            lines.append(f"| `{name}` | {r.meta['model']['name']} | {len(seeds[name])} | "
                         f"{len(r.images['segmentation'])} | {_over_seeds([_miou(x) for x in seeds[name]])} | "
                         f"{_pct(r.meta.get('all_background'))} |")
    multi = {n: r for n, r in by_entry.items() if r.meta.get("data") == MULTILABEL_BENCHMARK}
    if multi:
        lines += ["", "## Multi-label models", "",
                  f"On `{MULTILABEL_BENCHMARK}`: mAP, the mAP of ranking every image's labels by their training "
                  "frequency, overall F1, and for a glimpse model the share of fixations 2 to the last on a small "
                  "object against the small objects' area (random points), in %.", "",
                  "| zoo entry | model | mAP | label frequencies | overall F1 | fixations on a small object "
                  "(random points) | images with a small object |", "|---|---|---|---|---|---|---|"]
        for name, r in multi.items():
            fix = (f"{_pct(_mean(r, 'small_objects/on_small'))} ({_pct(_mean(r, 'small_objects/area'))})"
                   if r.has("small_objects/on_small") else "-")
            n = len(r.images["small_objects"]) if "small_objects" in r.images else "-"
            lines.append(f"| `{name}` | {r.meta['model']['name']} | {_pct(r.meta.get('map'))} | "
                         f"{_pct(r.meta.get('label_frequency_map'))} | {_pct(r.meta.get('f1_overall'))} | {fix} "
                         f"| {n} |")
    styles: dict[str, dict[str, list[float | None]]] = {}
    for name in by_entry:
        entry = find_entry(name)
        style = held_out(entry)
        if style is not None:
            styles.setdefault(entry.settings["init"].removeprefix("zoo:"), {})[style] = [
                _mean(x, "clean") for x in seeds[name]]
    if styles:
        lines += ["", "## Leave one style out", "",
                  "Each model is fine-tuned from the zoo's classifier on three of the four styles and tested on "
                  "every test image of the fourth (chance 10%); top-1 in %, the mean over the seeds measured (± "
                  "their standard deviation where there are several); the last column is the mean over the styles "
                  "of each seed's figures.", "",
                  "| fine-tuned from | seeds | " + " | ".join(f"{s} held out" for s in STYLES) + " | mean |",
                  "|---|---|" + "---|" * (len(STYLES) + 1)]
        for start, tops in styles.items():
            per_style = [tops.get(s) or [] for s in STYLES]
            count = min(len(v) for v in per_style)
            by_seed = [float(np.mean([v[i] for v in per_style])) if all(v[i] is not None for v in per_style)
                       else None for i in range(count)]
            lines.append(f"| `{start}` | {count} | " + " | ".join(_over_seeds(v) for v in per_style)
                         + f" | {_over_seeds(by_seed)} |")
    return lines


def _miou(record: Record) -> float:
    """mIoU (%) from the intersections and unions summed over the test images."""
    inter = record.get("segmentation/intersection").sum(axis=1).astype(float)
    union = record.get("segmentation/union").sum(axis=1).astype(float)
    return 100 * float(np.mean(inter[union > 0] / union[union > 0]))


def training_rows(names: Sequence[str]) -> list[str]:
    """One table row per entry from its ``train.json``."""
    rows = []
    for name in names:
        entry = find_entry(name)
        try:
            record = json.loads((entry.folder / "train.json").read_text())
        except (OSError, ValueError):
            continue
        key = {SEGMENTATION_BENCHMARK: "miou", MULTILABEL_BENCHMARK: "map"}.get(entry.data, "top1")
        curve = " ".join(f"{e[f'val_{key}']:.0f}" for e in record.get("log", []) if e.get(f"val_{key}") is not None)
        minutes = record.get("train_seconds", math.nan) / 60
        words = shlex.split(record.get("command", ""))
        flags = dict(zip(words, words[1:]))
        lr = f"{flags['--base-lr']} per 512 images" if "--base-lr" in flags else flags.get("--lr", "-")
        test = f"{_pct((record.get('test') or {}).get(key))} {dict(top1='top-1', miou='mIoU', map='mAP')[key]}"
        rows.append(f"| `{name}` | {flags.get('--epochs', '-')} | {lr} | {minutes:.1f} min | {curve} | {test} |")
    return rows


def results_markdown(settings: ResultsSettings, judgements: Sequence[Judgement],
                     records: dict[tuple[str, int], Record]) -> str:
    """The text of the results page."""
    counts = {v: sum(j.verdict == v for j in judgements) for v in VERDICTS}
    waiting = [j for j in judgements if j.verdict != j.outcome]
    seeds_line = ("" if not waiting else
                  f" Of those not resolved, {len(waiting)} wait for seeds: on the seeds measured, "
                  f"{sum(j.outcome == HOLDS for j in waiting)} would hold and "
                  f"{sum(j.outcome == FAILS for j in waiting)} would not.")
    measured = sorted({e for e, _ in records})
    lines = [
        TITLE, "",
        "Written by `make results` (`bioattn results`; Python: `bioattn.results.page.write_results`) from the "
        "model zoo alone (`src/bioattn/zoo/`, trained by `make zoo`), on the test split of the embedded "
        f"benchmark (`{BENCHMARK}`). Do not edit it: it is rewritten from its records, and "
        "`bioattn results --check` fails when a verdict differs from them.", "",
        *method_lines(settings), "",
        f"Verdicts: {counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[UNRESOLVED]} not resolved, "
        f"{counts[UNMEASURED]} not measured.{seeds_line}", "",
        "## Claims", "",
        *claim_table(judgements), "",
        *claim_details(judgements, records, settings.out),
        *power_table(judgements), "",
        *model_lines(records), "",
        "## Training", "",
        "Each entry as `make zoo` trained it (`train.json` beside its weights holds the command and the log): "
        "epochs and learning rate, wall-clock training time on the machine that built it, the validation score "
        "after every epoch (top-1, mIoU for segmenters, mAP for multi-label models) and the test score of the "
        "weights shipped (the best validation epoch).", "",
        "| zoo entry | epochs | learning rate | training time | validation score by epoch | test score |",
        "|---|---|---|---|---|---|",
        *training_rows(measured),
    ]
    missing = [e.name for e in ZOO if (base_name(e), e.seed) not in records]
    if missing:
        lines += ["", f"Not measured (no record): {', '.join(f'`{m}`' for m in missing)}."]
    return "\n".join(lines) + "\n"


def _settings(settings: ResultsSettings | None, overrides: dict[str, Any]) -> ResultsSettings:
    return ResultsSettings(**{**(asdict(settings) if settings else {}), **overrides})


def write_results(settings: ResultsSettings | None = None, log: Callable[[str], None] | None = None,
                  **overrides: Any) -> list[Judgement]:
    """Measure the zoo (or ``settings.only``), store the records beside ``settings.out`` (keeping
    the other entries' records), decide every claim and write the page; returns the judgements.
    Each entry's record is stored as soon as it is measured; without ``settings.only``, entries
    whose records are current (same weights, same settings) are kept, so a run that was stopped
    resumes where it stopped, and a run after the zoo changed measures only what changed.
    Keyword ``overrides`` name fields of :class:`~bioattn.config.ResultsSettings`."""
    settings = _settings(settings, overrides)
    if settings.check:
        return check_results(settings)
    out = check_page_target(settings.out)
    if not any(entry.is_built() for entry in ZOO):
        raise BioattnError("no zoo entry is built: run bioattn zoo first")
    folder = records_folder(out)
    existing = read_records(folder) if (folder / MANIFEST).is_file() else {}
    measured = measure_zoo(settings, settings.only, settings.progress, log, existing=existing,
                           store=lambda record: write_records(folder, [record]))
    draw_figures(out, {r.entry for r in measured if r.seed == 0}, log)
    return write_page(settings)


def draw_figures(out: str | Path, redraw: set[str] = frozenset(), log: Callable[[str], None] | None = None
                 ) -> list[Path]:
    """Draw the figure of every steerable entry whose first seed's record holds a steering
    measurement (:func:`bioattn.results.measure.draw_steering`), where it is missing or the
    entry is in ``redraw`` (just measured); returns the figures drawn."""
    drawn = []
    for (name, seed), record in sorted(read_records(records_folder(out)).items()):
        path = steering_figure(out, name)
        if seed != 0 or "steering" not in record.images or (path.is_file() and name not in redraw):
            continue
        if log:
            log(f"drawing {path}")
        drawn.append(draw_steering(find_entry(name), record, path))
    return drawn


def write_page(settings: ResultsSettings | None = None, **overrides: Any) -> list[Judgement]:
    """Decide every claim from the records stored beside ``settings.out`` and write the page
    (measuring nothing); returns the judgements."""
    settings = _settings(settings, overrides)
    out = check_page_target(settings.out)
    records = read_records(records_folder(out))
    judgements = judge(claims(settings.attack_readout), records)
    atomic_write_text(out, results_markdown(settings, judgements, records), what="results page")
    return judgements


def page_verdicts(out: str | Path) -> dict[str, str]:
    """The verdict of every claim row of a results page, by claim id."""
    out = Path(out)
    if not written_here(out):
        raise BioattnError(f"results page {out} is missing or was not written by bioattn results")
    verdicts = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match and match.group(2) in VERDICTS:
            verdicts.setdefault(match.group(1), match.group(2))
    return verdicts


def check_results(settings: ResultsSettings | None = None, **overrides: Any) -> list[Judgement]:
    """Recompute every verdict from the records of ``settings.out`` and compare it with the page;
    raises :class:`BioattnError` (one line, naming the record or the claim) when a record was
    altered or a verdict differs. Returns the judgements."""
    settings = _settings(settings, overrides)
    out = Path(settings.out)
    shown = page_verdicts(out)
    records = read_records(records_folder(out))
    judgements = judge(claims(settings.attack_readout), records)
    for j in judgements:
        if j.claim.id not in shown:
            raise BioattnError(f"results page {out} has no row for claim {j.claim.id}")
        if shown[j.claim.id] != j.verdict:
            raise BioattnError(f"claim {j.claim.id}: the page says '{shown[j.claim.id]}', the records give "
                               f"'{j.verdict}'")
    return judgements
