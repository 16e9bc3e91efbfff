"""The claims as declared data: every claim names zoo entries, a known primary metric, its
direction and, for a claim of no change, its margin."""

from __future__ import annotations

import pytest

from bioattn.errors import BioattnError
from bioattn.results.claims import AT_MOST, DIRECTIONS, EQUIVALENT, METRICS, WITHIN_MODEL, claims, find_claim
from bioattn.results.judge import RULES
from bioattn.zoo import find_entry


def test_every_claim_is_declared_completely():
    rows = claims()
    assert len({c.id for c in rows}) == len(rows) == 29
    assert {c.source for c in rows} == {"AbSViT", "VARS", "RS-RNN"}
    assert set(METRICS) == set(RULES)
    for c in rows:
        assert c.metric in METRICS and set(c.others) <= set(METRICS), c.id
        assert c.direction in DIRECTIONS
        assert (c.margin is not None and c.margin > 0) == (c.direction in (EQUIVALENT, AT_MOST)), c.id
        # a comparison with a baseline pairs the entries one to one; a metric within one model has none
        assert (not c.baseline) == (c.metric in WITHIN_MODEL), c.id
        assert not c.baseline or len(c.baseline) == len(c.system)
        for name in c.entries:
            assert find_entry(name).name == name


def test_claims_are_found_by_id_and_name_the_attacked_glimpse():
    assert find_claim("absvit-corruptions").metric == "mce"
    assert "glimpse 6" in find_claim("rsrnn-recovers", attack_readout=6).statement
    with pytest.raises(BioattnError, match="no claim with id"):
        find_claim("nothing")
