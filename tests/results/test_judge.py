"""The verdict rules on constructed cases: an unresolved outcome never holds, seeds that disagree
in sign never hold, a claim of no change holds only inside its margin, and a missing record
leaves a claim not measured."""

from __future__ import annotations

import numpy as np
import pytest

from bioattn.results.claims import AT_MOST, EQUIVALENT, GREATER, LESS, find_claim
from bioattn.results.judge import FAILS, HOLDS, UNMEASURED, UNRESOLVED, eps_key, judge, verdict
from bioattn.results.records import Record

PGD = f"pgd/{eps_key(1 / 255)}"
CLAIM = find_claim("vars-pgd-rvt-vars-d")  # rvt_micro_vars_d above rvt_micro in top-1 under PGD


def _bits(n: int, share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, bool)
    out[rng.choice(n, round(share * n), replace=False)] = True
    return out


def _record(entry: str, pgd: np.ndarray, seed: int = 0) -> Record:
    record = Record(entry, seed)
    record.add(PGD, pgd, range(len(pgd)))
    record.add(f"{PGD}/clean", np.ones(len(pgd), bool))
    record.add("clean", np.ones(len(pgd), bool), range(len(pgd)))
    return record


def _pair(system: np.ndarray, baseline: np.ndarray, seed: int = 0) -> dict:
    return {("rvt_micro_vars_d", seed): _record("rvt_micro_vars_d", system, seed),
            ("rvt_micro", seed): _record("rvt_micro", baseline, seed)}


def test_the_rules_of_a_directional_claim():
    assert verdict(GREATER, 5.0, 2.0, 8.0, 0.001, [5.0]) == HOLDS
    assert verdict(GREATER, -5.0, -8.0, -2.0, 0.001, [-5.0]) == FAILS
    assert verdict(LESS, -5.0, -8.0, -2.0, 0.001, [-5.0]) == HOLDS
    # not significant after correction: unresolved, whatever the sign and however large
    assert verdict(GREATER, 9.0, -1.0, 19.0, 0.06, [9.0]) == UNRESOLVED
    assert verdict(GREATER, 9.0, -1.0, 19.0, None, [9.0]) == UNRESOLVED
    # one seed the other way: never holds, even when the average is significant
    assert verdict(GREATER, 5.0, 2.0, 8.0, 0.001, [9.0, -1.0]) == UNRESOLVED
    assert verdict(GREATER, 5.0, 2.0, 8.0, 0.001, [9.0, 0.0]) == UNRESOLVED


def test_the_rules_of_a_claim_of_no_change():
    assert verdict(EQUIVALENT, 0.2, -0.8, 1.2, 0.001, [0.2], margin=2.0) == HOLDS
    # the interval crosses the margin: not holds, even with a small estimate and p
    assert verdict(EQUIVALENT, 0.2, -0.8, 2.1, 0.001, [0.2], margin=2.0) == UNRESOLVED
    assert verdict(EQUIVALENT, 0.2, -2.5, 1.0, 0.001, [0.2], margin=2.0) == UNRESOLVED
    # inside the margin but the equivalence test not significant after correction
    assert verdict(EQUIVALENT, 0.2, -0.8, 1.2, 0.2, [0.2], margin=2.0) == UNRESOLVED
    # a seed outside the margin
    assert verdict(EQUIVALENT, 0.2, -0.8, 1.2, 0.001, [0.2, 2.5], margin=2.0) == UNRESOLVED
    # the whole interval beyond the margin: does not hold
    assert verdict(EQUIVALENT, -12.0, -14.0, -10.0, 1.0, [-12.0], margin=2.0) == FAILS
    assert verdict(AT_MOST, -5.0, -8.0, 1.0, 0.001, [-5.0], margin=2.0) == HOLDS
    assert verdict(AT_MOST, 1.0, -1.0, 3.0, 0.001, [1.0], margin=2.0) == UNRESOLVED
    assert verdict(AT_MOST, 20.0, 15.0, 25.0, 1.0, [20.0], margin=2.0) == FAILS
    assert verdict(EQUIVALENT, 0.0, -0.1, 0.1, 0.001, [0.0], margin=None) == UNRESOLVED


def test_judged_from_records_by_mcnemar():
    n = 1000
    strong, weak = _bits(n, 0.8, 1), _bits(n, 0.6, 2)
    (held,) = judge([CLAIM], _pair(strong, weak), seeds=1)
    assert held.verdict == HOLDS and held.primary.test == "McNemar mid-p" and held.primary.n == n
    assert held.primary.estimate == pytest.approx(20.0) and held.primary.low > 0
    assert held.primary.system == pytest.approx(80.0) and held.primary.baseline == pytest.approx(60.0)
    (failed,) = judge([CLAIM], _pair(weak, strong), seeds=1)
    assert failed.verdict == FAILS
    # the same gap on 20 images is not enough to tell
    (few,) = judge([CLAIM], _pair(_bits(20, 0.6, 1), _bits(20, 0.5, 2)), seeds=1)
    assert few.verdict == UNRESOLVED


def test_a_sign_flip_across_seeds_never_holds():
    n = 1000
    records = _pair(_bits(n, 0.95, 1), _bits(n, 0.55, 2), seed=0)
    records.update(_pair(_bits(n, 0.60, 3), _bits(n, 0.62, 4), seed=1))
    (j,) = judge([CLAIM], records, seeds=2)
    # averaged over the seeds the system is far ahead, but seed 1 alone is behind
    assert j.seeds == 2 and j.primary.estimate > 15 and j.p_corrected < 0.05
    assert j.primary.per_seed[0] > 0 > j.primary.per_seed[1]
    assert j.primary.test == "paired bootstrap"
    assert j.verdict == UNRESOLVED and "seeds disagree" in j.note
    # with both seeds ahead it holds
    records.update(_pair(_bits(n, 0.80, 3), _bits(n, 0.62, 4), seed=1))
    assert judge([CLAIM], records, seeds=2)[0].verdict == HOLDS
    # far behind on average although one seed is ahead: does not hold, and the row says the seeds disagree
    records = _pair(_bits(n, 0.55, 1), _bits(n, 0.95, 2), seed=0)
    records.update(_pair(_bits(n, 0.62, 3), _bits(n, 0.60, 4), seed=1))
    (behind,) = judge([CLAIM], records, seeds=2)
    assert behind.verdict == FAILS and "seeds disagree in sign" in behind.note


def test_a_claim_waits_for_the_seeds_a_verdict_needs():
    n = 1000
    records = {}
    for seed in range(3):
        records.update(_pair(_bits(n, 0.80, 10 + seed), _bits(n, 0.60, 20 + seed), seed=seed))
    one = {k: v for k, v in records.items() if k[1] == 0}
    # one seed: the test alone says it holds, the verdict stays open and says why
    (j,) = judge([CLAIM], one)
    assert j.seeds == 1 and j.outcome == HOLDS and j.verdict == UNRESOLVED
    assert "1 of the 3 seeds" in j.note
    # the same on the wrong side: a clear loss on one seed is not yet "does not hold"
    (lost,) = judge([CLAIM], _pair(_bits(n, 0.60, 20), _bits(n, 0.80, 10)))
    assert lost.outcome == FAILS and lost.verdict == UNRESOLVED
    # three seeds, each ahead: it holds
    (three,) = judge([CLAIM], records)
    assert three.seeds == 3 and three.outcome == three.verdict == HOLDS and len(three.primary.per_seed) == 3
    # the fewest seeds of the compared entries count
    del records[("rvt_micro", 2)]
    (short,) = judge([CLAIM], records)
    assert short.seeds == 2 and short.verdict == UNRESOLVED and short.outcome == HOLDS


def test_holm_corrects_over_the_measured_claims():
    n = 300
    records = _pair(_bits(n, 0.60, 1), _bits(n, 0.52, 2))
    other = find_claim("vars-attention-rvt")  # not measured here: no attention records
    alone = judge([CLAIM], records)[0]
    together = judge([CLAIM, other], records)
    assert together[1].verdict == UNMEASURED and "attention/auc" in together[1].note
    # a claim not measured does not enlarge the family
    assert together[0].p_corrected == pytest.approx(alone.p_corrected)
    assert alone.p_corrected == pytest.approx(alone.primary.p)


def test_a_missing_record_leaves_the_claim_not_measured():
    records = {("rvt_micro", 0): _record("rvt_micro", _bits(100, 0.5, 1))}
    (j,) = judge([CLAIM], records)
    assert j.verdict == UNMEASURED and j.primary is None and "rvt_micro_vars_d" in j.note


def test_a_claim_of_no_change_from_glimpse_records():
    claim = find_claim("rsrnn-looks-longer")
    n, glimpses = 2000, 16

    def record(last_share: float) -> dict:
        per = np.zeros((glimpses, n), bool)
        per[3] = _bits(n, 0.90, 1)          # the trained number of glimpses: 4
        per[-1] = per[3].copy()
        flip = np.flatnonzero(per[3])[: round((0.90 - last_share) * n)]
        per[-1, flip] = False
        r = Record("rsrnn_micro", 0, meta={"trained_glimpses": 4})
        r.add("clean", per[-1], range(n))
        r.add("clean/glimpse", per)
        return {("rsrnn_micro", 0): r}

    same = judge([claim], record(0.90), seeds=1)[0]
    assert same.verdict == HOLDS and same.primary.test == "TOST (paired t)"
    assert judge([claim], record(0.80), seeds=1)[0].verdict == FAILS
    # a fall of 1.5 points: its interval crosses the 2-point margin, so it is not shown equivalent
    crossing = judge([claim], record(0.885), seeds=1)[0]
    assert crossing.primary.high > -2.0 > crossing.primary.low and crossing.verdict == UNRESOLVED
