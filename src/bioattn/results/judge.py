"""Verdicts: each claim decided by its primary metric on the stored per-image records.

For a claim (:mod:`bioattn.results.claims`), the records (:mod:`bioattn.results.records`) of its
zoo entries are turned into per-image columns (e.g. a model's correctness under PGD, or both
models' corruption errors per corruption), paired image by image, and averaged over the seeds
each entry was trained with. The primary metric is then tested (:mod:`bioattn.results.stats`):

* two accuracies of single seeds on the same images: McNemar's mid-p test;
* a per-image score against zero (steering): Wilcoxon's signed-rank test over images;
* anything else (means over conditions, AUCs, shares, mCE, mIoU, several seeds): the paired
  bootstrap over images;
* a claim of no change: two one-sided tests against its margin (and for "at most" claims one
  one-sided test); the interval is always the paired bootstrap's 95% percentile interval.

The p-values of all measured claims form one family, corrected by Holm's method. The rules:

* **holds**: the corrected p is below 0.05, the seed-averaged difference has the claimed sign,
  and so does the difference of every seed alone; for a claim of no change, the whole 95%
  interval lies inside the margin (and the corrected equivalence p is below 0.05, and every
  seed's difference lies inside the margin);
* **does not hold**: the corrected p is below 0.05 with the opposite sign; for a claim of no
  change, the whole interval lies outside the margin;
* **not resolved**: anything else - a difference that is not significant after correction, or
  seeds that disagree in sign. An unresolved claim never becomes one that holds;
* **not measured**: a record the claim needs is missing.

Every entry of a claim needs :data:`SEEDS` training seeds before the claim is decided: with
fewer, the rules' outcome on the seeds measured is kept beside the verdict
(:attr:`Judgement.outcome`), and the verdict is "not resolved".

A leaf module (numpy, scipy, statsmodels): ``bioattn results --check`` recomputes every verdict
from the records alone, in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as scipy_stats

from ..zoo import find_entry
from . import stats
from .claims import AT_MOST, EQUIVALENT, GREATER, LESS, OFFICIAL_EPS, WITHIN_MODEL, Claim
from .records import Record

HOLDS, FAILS, UNRESOLVED, UNMEASURED = "holds", "does not hold", "not resolved", "not measured"
VERDICTS = (HOLDS, FAILS, UNRESOLVED, UNMEASURED)
# the kinds of per-image columns: two 0/1 outcomes to compare (McNemar when single seeds), two
# values whose means are compared, one score against zero, and statistics of column totals
BINARY, LINEAR, SCORE, RATIO = "binary", "linear", "score", "ratio"
# the training seeds every entry of a claim needs before the claim is decided: a difference
# between two models trained once can be the seed's
SEEDS = 3
# the other metrics decide nothing: fewer resamples give their intervals to a tenth of a point
OTHER_RESAMPLES = 2_000


class Missing(Exception):
    """A record or condition a claim needs is not there (the claim is not measured)."""


def eps_key(eps: float) -> str:
    """An attack budget as it appears in a condition's name (``pgd/0.00392157``)."""
    return f"{eps:.6g}"


# --------------------------------------------------------------------------------------------
# per-image columns of one record
# --------------------------------------------------------------------------------------------
def _get(record: Record, condition: str) -> np.ndarray:
    if not record.has(condition):
        raise Missing(f"record {record.name} holds no condition {condition}")
    return record.get(condition)


def _ids(record: Record, condition: str) -> np.ndarray:
    return np.asarray(record.images_of(condition), dtype=np.int64)


def _corruption_conditions(record: Record) -> list[str]:
    names = sorted(c for c in record.conditions if c.startswith("corruption/") and c != "corruption/clean")
    if not names:
        raise Missing(f"record {record.name} holds no corruption")
    return names


def _column(condition: str) -> Callable[[Record], tuple[np.ndarray, np.ndarray]]:
    """One condition's per-image values (correctness as 0 or 1, or scores) as one column."""
    def columns(record: Record) -> tuple[np.ndarray, np.ndarray]:
        values = _get(record, condition).astype(float)[:, None]
        return _ids(record, condition), values
    return columns


def _corrupted(record: Record) -> tuple[np.ndarray, np.ndarray]:
    names = _corruption_conditions(record)
    mean = np.mean([record.get(c).astype(float) for c in names], axis=0)
    return _ids(record, names[0]), mean[:, None]


def _corruption_errors(record: Record) -> tuple[np.ndarray, np.ndarray]:
    """Per image and corruption, the errors summed over the severities (columns in corruption order)."""
    names = _corruption_conditions(record)
    corruptions = sorted({c.split("/")[1] for c in names})
    errors = [sum(1.0 - record.get(c).astype(float) for c in names if c.split("/")[1] == name)
              for name in corruptions]
    return _ids(record, names[0]), np.stack(errors, axis=1)


def _with_clean(outcome: Callable[[Record], tuple[np.ndarray, np.ndarray]],
                clean: str) -> Callable[[Record], tuple[np.ndarray, np.ndarray]]:
    def columns(record: Record) -> tuple[np.ndarray, np.ndarray]:
        ids, cols = outcome(record)
        return ids, np.concatenate([cols, _get(record, clean).astype(float)[:, None]], axis=1)
    return columns


def _glimpse_pair(condition: str, at: Callable[[Record], int]) -> Callable[[Record], tuple[np.ndarray, np.ndarray]]:
    """Correctness at the last glimpse and at glimpse ``at(record)`` (1-based)."""
    def columns(record: Record) -> tuple[np.ndarray, np.ndarray]:
        per = _get(record, condition)
        k = at(record)
        if per.ndim != 2 or not 1 <= k <= per.shape[0]:
            raise Missing(f"record {record.name}: {condition} has no glimpse {k}")
        return _ids(record, condition), np.stack([per[-1], per[k - 1]], axis=1).astype(float)
    return columns


def _meta_int(key: str) -> Callable[[Record], int]:
    def read(record: Record) -> int:
        if not record.meta.get(key):
            raise Missing(f"record {record.name} does not say its {key.replace('_', ' ')}")
        return int(record.meta[key])
    return read


def _against(condition: str, reference: str) -> Callable[[Record], tuple[np.ndarray, np.ndarray]]:
    def columns(record: Record) -> tuple[np.ndarray, np.ndarray]:
        values = np.stack([_get(record, condition), _get(record, reference)], axis=1)
        return _ids(record, condition), values
    return columns


def _win(record: Record) -> tuple[np.ndarray, np.ndarray]:
    wins = _get(record, "steering/win").astype(float)
    return _ids(record, "steering/win"), np.stack([wins, np.full_like(wins, 0.5)], axis=1)


def _segmentation(record: Record) -> tuple[np.ndarray, np.ndarray]:
    inter = _get(record, "segmentation/intersection").astype(float)   # (K, n)
    union = _get(record, "segmentation/union").astype(float)
    return _ids(record, "segmentation/intersection"), np.concatenate([inter.T, union.T], axis=1)


# --------------------------------------------------------------------------------------------
# statistics of column totals
# --------------------------------------------------------------------------------------------
def _difference(scale: float) -> Callable[[np.ndarray, int], np.ndarray]:
    return lambda t, n: scale * (t[..., 0] - t[..., 1]) / n


def _miou(t: np.ndarray) -> np.ndarray:
    k = t.shape[-1] // 2
    inter, union = t[..., :k], t[..., k:]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
    return 100.0 * np.nanmean(iou, axis=-1)


def _miou_difference(t: np.ndarray, n: int) -> np.ndarray:
    half = t.shape[-1] // 2
    return _miou(t[..., :half]) - _miou(t[..., half:])


def _mce(t: np.ndarray, n: int) -> np.ndarray:
    k = t.shape[-1] // 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.mean(t[..., :k] / t[..., k:], axis=-1) - 100.0


def _both_clean(t: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (t[..., 0] - t[..., 1]) / t[..., 2]


def _join_both_clean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = a[:, 1] * b[:, 1]
    return np.stack([a[:, 0] * both, b[:, 0] * both, both], axis=1)


@dataclass(frozen=True)
class MetricRule:
    """How a metric is computed: ``columns`` of one record (image ids and an ``(n, k)`` array);
    ``join`` of the system's and the baseline's columns (a pair claim; default side by side);
    the ``statistic`` of the column totals; the ``kind`` of the columns; ``scale`` from the
    columns' unit to the metric's; and ``own``, one model's figure from its columns (shown
    beside the difference; None where the metric is relative only)."""

    columns: Callable[[Record], tuple[np.ndarray, np.ndarray]]
    statistic: Callable[[np.ndarray, int], np.ndarray]
    kind: str
    scale: float = 100.0
    join: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    own: Callable[[np.ndarray], float] | None = None
    lower_is_better: bool = False


def _mean_of_first(scale: float) -> Callable[[np.ndarray], float]:
    return lambda cols: float(scale * np.mean(cols[:, 0]))


_PGD = f"pgd/{eps_key(OFFICIAL_EPS)}"
_FGSM = f"fgsm/{eps_key(OFFICIAL_EPS)}"

RULES: dict[str, MetricRule] = {
    "clean_top1": MetricRule(_column("clean"), _difference(100.0), BINARY, own=_mean_of_first(100.0)),
    "corrupted_top1": MetricRule(_corrupted, _difference(100.0), LINEAR, own=_mean_of_first(100.0)),
    "mce": MetricRule(_corruption_errors, _mce, RATIO, lower_is_better=True),
    "corrupted_top1_both_clean": MetricRule(_with_clean(_corrupted, "corruption/clean"), _both_clean, RATIO,
                                            join=_join_both_clean),
    "fgsm_top1": MetricRule(_column(_FGSM), _difference(100.0), BINARY, own=_mean_of_first(100.0)),
    "pgd_top1": MetricRule(_column(_PGD), _difference(100.0), BINARY, own=_mean_of_first(100.0)),
    "pgd_top1_both_clean": MetricRule(_with_clean(_column(_PGD), f"{_PGD}/clean"), _both_clean, RATIO,
                                      join=_join_both_clean),
    "attention_auc": MetricRule(_column("attention/auc"), _difference(1.0), LINEAR, scale=1.0,
                                own=_mean_of_first(1.0)),
    "attention_share": MetricRule(_column("attention/share"), _difference(100.0), LINEAR,
                                  own=_mean_of_first(100.0)),
    "held_out_top1": MetricRule(_column("clean"), _difference(100.0), BINARY, own=_mean_of_first(100.0)),
    "miou": MetricRule(_segmentation, _miou_difference, RATIO, own=lambda cols: float(_miou(cols.sum(axis=0)))),
    "steering_shift": MetricRule(_column("steering/shift"), lambda t, n: 100.0 * t[..., 0] / n, SCORE),
    "steering_win": MetricRule(_win, _difference(100.0), LINEAR, own=_mean_of_first(100.0)),
    "glimpse_change": MetricRule(_glimpse_pair("clean/glimpse", _meta_int("trained_glimpses")),
                                 _difference(100.0), BINARY),
    "pgd_recovery": MetricRule(_glimpse_pair(f"{_PGD}/glimpse", _meta_int("attack_readout")),
                               _difference(100.0), BINARY),
    "fixations_on_object": MetricRule(_against("fixations/on_object", "fixations/area"), _difference(100.0),
                                      LINEAR, own=_mean_of_first(100.0)),
    "small_object_fixations": MetricRule(_against("small_objects/on_small", "small_objects/area"),
                                         _difference(100.0), LINEAR, own=_mean_of_first(100.0)),
}


# --------------------------------------------------------------------------------------------
# pairing records image by image and averaging seeds
# --------------------------------------------------------------------------------------------
def _seed_records(records: dict[tuple[str, int], Record], entry: str) -> list[Record]:
    found = [records[key] for key in sorted(records) if key[0] == entry]
    if not found:
        how = (f"zoo entry {entry} is not built (bioattn zoo --only {entry})" if not find_entry(entry).is_built()
               else f"no record of zoo entry {entry} (bioattn results --only {entry})")
        raise Missing(how)
    return found


def _aligned(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """The columns of every part on the images all parts share (in the first part's order)."""
    common = parts[0][0]
    for ids, _ in parts[1:]:
        common = common[np.isin(common, ids)]
    out = []
    for ids, cols in parts:
        if np.array_equal(ids, common):
            out.append(cols)
            continue
        order = np.argsort(ids, kind="stable")
        out.append(cols[order[np.searchsorted(ids, common, sorter=order)]])
    return out


def _entry_columns(rule: MetricRule, records: list[Record], seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One entry's columns: of its ``seed``-th record, or averaged over its seeds (None)."""
    chosen = records if seed is None or seed >= len(records) else [records[seed]]
    parts = [rule.columns(r) for r in chosen]
    common = parts[0][0]
    for ids, _ in parts[1:]:
        common = common[np.isin(common, ids)]
    return common, np.mean(_aligned(parts), axis=0)


def claim_columns(claim: Claim, metric: str, records: dict[tuple[str, int], Record],
                  seed: int | None = None) -> np.ndarray:
    """The per-image columns a claim's ``metric`` is tested on: the system's and the baseline's
    columns joined image by image (the entries of each side stacked, e.g. the four held-out
    styles), or the system's own for a metric within one model; averaged over seeds (``seed``
    None) or of one seed (its index). Rows with a missing value are dropped."""
    rule = RULES[metric]
    blocks = []
    for i, system in enumerate(claim.system):
        sys_ids, sys_cols = _entry_columns(rule, _seed_records(records, system), seed)
        if metric in WITHIN_MODEL or not claim.baseline:
            blocks.append(sys_cols)
            continue
        base_ids, base_cols = _entry_columns(rule, _seed_records(records, claim.baseline[i]), seed)
        if sys_cols.shape[1] != base_cols.shape[1]:
            raise Missing(f"{system} and {claim.baseline[i]} were measured under different conditions for {metric}")
        a, b = _aligned([(sys_ids, sys_cols), (base_ids, base_cols)])
        blocks.append(rule.join(a, b) if rule.join else np.concatenate([a, b], axis=1))
    columns = np.concatenate(blocks, axis=0)
    keep = np.all(np.isfinite(columns), axis=1)
    if not keep.any():
        raise Missing(f"no image has every value of {metric} for {', '.join(claim.entries)}")
    return columns[keep]


def seed_count(claim: Claim, records: dict[tuple[str, int], Record]) -> int:
    """The number of seeds every entry of the claim was measured with (the fewest)."""
    return min(len(_seed_records(records, e)) for e in claim.entries)


# --------------------------------------------------------------------------------------------
# one metric's test
# --------------------------------------------------------------------------------------------
@dataclass
class Figure:
    """One metric of one claim: the difference ``estimate`` with its 95% interval, the test's
    (uncorrected) ``p``, the ``n`` images, the estimate of each seed alone, the smallest
    difference detectable at 80% power, and each side's own figure where it has one."""

    metric: str
    estimate: float
    low: float
    high: float
    p: float | None
    test: str
    n: int
    per_seed: list[float] = field(default_factory=list)
    detectable: float = math.nan
    system: float | None = None
    baseline: float | None = None


def _own_figures(claim: Claim, metric: str, columns: np.ndarray) -> tuple[float | None, float | None]:
    """Each side's own figure from a claim's joined columns (the reference's for a metric within
    one model), where the metric has one."""
    rule = RULES[metric]
    if rule.own is None:
        return None, None
    if metric in WITHIN_MODEL or not claim.baseline:
        return rule.own(columns), (rule.own(columns[:, 1:]) if columns.shape[1] > 1 else None)
    k = columns.shape[1] // 2
    return rule.own(columns[:, :k]), rule.own(columns[:, k:])


def measure_metric(claim: Claim, metric: str, records: dict[tuple[str, int], Record],
                   direction: str | None = None, margin: float | None = None,
                   resamples: int = stats.RESAMPLES) -> Figure:
    """Test ``metric`` of ``claim`` on its records (raises :class:`Missing` when one is
    missing): the estimate, interval and p-value described in the module's description, with
    ``direction`` and ``margin`` choosing the equivalence tests for a claim of no change."""
    rule = RULES[metric]
    columns = claim_columns(claim, metric, records)
    n = columns.shape[0]
    seeds = seed_count(claim, records)
    boot = stats.paired_bootstrap(columns, rule.statistic, resamples)
    single = seeds == 1 and np.all((columns == 0) | (columns == 1))
    p, test = boot.p, boot.test
    if rule.kind == BINARY and single and direction in (GREATER, LESS, None):
        p, test = stats.mcnemar_p(stats.mcnemar_table(columns[:, 0] > 0.5, columns[:, 1] > 0.5)), "McNemar mid-p"
    elif rule.kind == SCORE:
        p, test = stats.signed_rank_p(columns[:, 0])
    if direction == EQUIVALENT and rule.kind in (BINARY, LINEAR):
        p, test = stats.tost(rule.scale * columns[:, 0], rule.scale * columns[:, 1], margin), "TOST (paired t)"
    elif direction == AT_MOST and rule.kind in (BINARY, LINEAR):
        p, test = stats.one_sided_below(rule.scale * columns[:, 0], rule.scale * columns[:, 1], margin), \
            "one-sided paired t"
    elif direction in (EQUIVALENT, AT_MOST):
        p, test = None, "no equivalence test for this metric"
    per_seed = [boot.estimate]
    if seeds > 1:
        per_seed = []
        for s in range(seeds):
            of_seed = claim_columns(claim, metric, records, s)
            per_seed.append(float(rule.statistic(of_seed.sum(axis=0), of_seed.shape[0])))
    system, baseline = _own_figures(claim, metric, columns)
    return Figure(metric, boot.estimate, boot.low, boot.high, p, test, n, per_seed,
                  detectable(rule, columns, boot), system, baseline)


def detectable(rule: MetricRule, columns: np.ndarray, boot: stats.Test) -> float:
    """The smallest difference detectable at 80% power on these images: from the discordance
    for two accuracies, the per-image standard deviation of the differences for means and
    scores, and the bootstrap's standard error for other statistics."""
    n = columns.shape[0]
    if rule.kind == BINARY:
        discordance = float(np.mean(np.abs(columns[:, 0] - columns[:, 1])))
        return rule.scale * stats.mcnemar_detectable(n, discordance)
    if rule.kind in (LINEAR, SCORE):
        d = columns[:, 0] - (columns[:, 1] if columns.shape[1] > 1 and rule.kind == LINEAR else 0.0)
        return rule.scale * stats.paired_detectable(n, float(np.std(d, ddof=1)) if n > 1 else math.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = stats.bootstrap_distribution(columns, rule.statistic, resamples=1000)
    dist = dist[np.isfinite(dist)]
    if dist.size < 2:
        return math.nan
    se = float(np.std(dist, ddof=1))
    z = scipy_stats.norm.ppf(1 - stats.ALPHA / 2) + scipy_stats.norm.ppf(stats.POWER)
    return float(z * se)


# --------------------------------------------------------------------------------------------
# verdicts
# --------------------------------------------------------------------------------------------
def verdict(direction: str, estimate: float, low: float, high: float, p_corrected: float | None,
            per_seed: Sequence[float], margin: float | None = None, alpha: float = stats.ALPHA) -> str:
    """The verdict of one claim from its primary figure (the rules in the module's description)."""
    significant = p_corrected is not None and p_corrected < alpha
    if direction in (GREATER, LESS):
        sign = 1.0 if direction == GREATER else -1.0
        if significant and sign * estimate > 0 and all(sign * s > 0 for s in per_seed):
            return HOLDS
        if significant and sign * estimate < 0:
            return FAILS
        return UNRESOLVED
    if margin is None or not margin > 0:
        return UNRESOLVED
    if direction == EQUIVALENT:
        if significant and stats.inside(low, high, margin) and all(abs(s) < margin for s in per_seed):
            return HOLDS
        if low > margin or high < -margin:
            return FAILS
        return UNRESOLVED
    if direction == AT_MOST:
        if significant and high < margin and all(s < margin for s in per_seed):
            return HOLDS
        if low > margin:
            return FAILS
        return UNRESOLVED
    return UNRESOLVED


@dataclass
class Judgement:
    """A claim's outcome: its primary :class:`Figure` (None when not measured), the Holm-corrected
    p, the number of seeds, the verdict, the other metrics' figures, those that disagree with
    the primary one, a note (why it is not measured, or why it is not resolved) and ``outcome``:
    what the rules give on the seeds measured (the verdict once every entry has the seeds a
    verdict needs)."""

    claim: Claim
    primary: Figure | None
    p_corrected: float | None
    seeds: int
    verdict: str
    others: list[Figure] = field(default_factory=list)
    disagree: list[str] = field(default_factory=list)
    note: str = ""
    outcome: str = UNMEASURED


def _sign(figure: Figure, lower_is_better: bool) -> int:
    """+1 when the figure says the system is significantly better, -1 worse, 0 neither."""
    if figure.p is None or figure.p >= stats.ALPHA or figure.estimate == 0:
        return 0
    s = 1 if figure.estimate > 0 else -1
    return -s if lower_is_better else s


def judge(claims: Sequence[Claim], records: dict[tuple[str, int], Record], seeds: int = SEEDS) -> list[Judgement]:
    """Every claim's :class:`Judgement` from the records, the p-values of the measured claims
    corrected together by Holm's method; a claim whose entries have fewer than ``seeds`` seeds
    each is not resolved, whatever its test gives (kept as the judgement's ``outcome``)."""
    results: list[Judgement] = []
    for claim in claims:
        if claim.missing:
            results.append(Judgement(claim, None, None, 0, UNMEASURED, note=claim.missing))
            continue
        try:
            primary = measure_metric(claim, claim.metric, records, claim.direction, claim.margin)
            measured = seed_count(claim, records)
        except Missing as missing:
            results.append(Judgement(claim, None, None, 0, UNMEASURED, note=str(missing)))
            continue
        others = []
        for metric in claim.others:
            try:
                others.append(measure_metric(claim, metric, records, resamples=OTHER_RESAMPLES))
            except Missing:
                continue
        results.append(Judgement(claim, primary, None, measured, UNRESOLVED, others))
    tested = [j for j in results if j.primary is not None and j.primary.p is not None]
    for j, p in zip(tested, stats.holm([j.primary.p for j in tested])):
        j.p_corrected = p
    for j in results:
        if j.primary is None:
            continue
        f, claim = j.primary, j.claim
        j.outcome = verdict(claim.direction, f.estimate, f.low, f.high, j.p_corrected, f.per_seed, claim.margin)
        j.verdict = j.outcome
        if j.outcome == UNRESOLVED and j.p_corrected is not None and j.p_corrected < stats.ALPHA:
            j.note = "the seeds disagree in sign" if claim.direction in (GREATER, LESS) else \
                "the interval crosses the margin"
        elif j.outcome in (HOLDS, FAILS) and j.seeds < seeds:
            j.verdict = UNRESOLVED
            j.note = (f"{j.seeds} of the {seeds} seeds a verdict needs; on {'it' if j.seeds == 1 else 'them'} "
                      f"the test gives '{j.outcome}'")
        elif j.outcome == FAILS and claim.direction in (GREATER, LESS) and any(s * f.estimate <= 0 for s in f.per_seed):
            j.note = "the seeds disagree in sign; their mean is significantly the other way"
        # the others disagree when significantly the other way: from the primary's significant
        # direction, or from the claimed one where the primary is not significant
        lead = _sign(f, RULES[claim.metric].lower_is_better) or (1 if claim.direction in (GREATER, LESS) else 0)
        if lead:
            j.disagree = [o.metric for o in j.others if _sign(o, RULES[o.metric].lower_is_better) == -lead]
    return results
