"""The results page: written from the stored records, marked as its own, refusing a file it did
not write, and checked against the records (``bioattn results --check``)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bioattn.cli import main
from bioattn.config import ResultsSettings
from bioattn.errors import BioattnError
from bioattn.results.judge import HOLDS, UNMEASURED, UNRESOLVED, eps_key
from bioattn.results.page import TITLE, check_results, records_folder, write_page
from bioattn.results.records import Record, write_records

PGD = f"pgd/{eps_key(1 / 255)}"


def _record(entry: str, share: float, seed: int) -> Record:
    n = 800
    rng = np.random.default_rng(seed)
    record = Record(entry, 0, meta={"model": {"name": entry}, "data": "embedded"})
    correct = rng.random(n) < share
    record.add("clean", rng.random(n) < 0.95, range(n))
    record.add(PGD, correct, range(n))
    record.add(f"{PGD}/clean", correct | (rng.random(n) < 0.5))
    record.add("attention/auc", rng.random(n).astype(np.float32), range(n))
    record.add("attention/share", rng.random(n).astype(np.float32))
    record.add("attention/area", np.full(n, 0.06, np.float32))
    return record


@pytest.fixture
def page(tmp_path):
    out = tmp_path / "docs" / "results.md"
    write_records(records_folder(out), [_record("rvt_micro_vars_d", 0.8, 1), _record("rvt_micro", 0.6, 2)])
    judged = write_page(ResultsSettings(out=str(out), progress=False))
    return out, judged


def test_the_page_shows_each_claim_with_its_statistics(page):
    out, judged = page
    text = out.read_text()
    assert text.startswith(TITLE + "\n")
    for section in ("## How the verdicts are reached", "## Claims", "## Claim by claim", "## Power", "## The models"):
        assert section in text
    pgd = next(j for j in judged if j.claim.id == "vars-pgd-rvt-vars-d")
    # one seed: the test holds, the verdict waits for the seeds
    assert pgd.outcome == HOLDS and pgd.verdict == UNRESOLVED
    row = next(line for line in text.splitlines() if line.startswith("| `vars-pgd-rvt-vars-d` |"))
    assert "pgd_top1 (above 0)" in row and "| 800 | 1 | holds | not resolved |" in row and "[+" in row
    assert "1 wait for seeds: on the seeds measured, 1 would hold and 0 would not" in text
    assert "- pgd_top1: 7" in text or "- pgd_top1: 8" in text
    assert "McNemar mid-p" in text and "PGD / clean top-1 on the same images" in text
    assert "| `vars-pgd-rvt-vars-d` | pgd_top1 | McNemar mid-p | 800 | ±" in text
    # the claims on other entries are not measured, and say which record they lack
    assert sum(j.verdict == UNMEASURED for j in judged) == len(judged) - 2
    assert re.search(r"Not measured: (zoo entry absvit_micro_convstem_64 is not built|no record of zoo entry "
                     r"absvit_micro_convstem_64)", text)
    assert "Not measured: no record of zoo entry rvt_micro_vars_s" in text


def test_check_passes_on_intact_records_and_names_an_altered_one(page, capsys):
    out, judged = page
    assert [j.verdict for j in check_results(out=str(out))] == [j.verdict for j in judged]
    assert main(["results", "--check", "--out", str(out)]) == 0
    assert "all agree" in capsys.readouterr().out
    path = records_folder(out) / "rvt_micro.seed0.json"
    data = json.loads(path.read_text())
    data["meta"]["model"]["name"] = "changed"
    path.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n")
    with pytest.raises(BioattnError, match=r"rvt_micro\.seed0\.json was altered"):
        check_results(out=str(out))
    assert main(["results", "--check", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rvt_micro.seed0.json was altered" in err[0]


def test_check_fails_when_a_verdict_on_the_page_differs(page, capsys):
    out, _ = page
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `vars-pgd-rvt-vars-d` |"))
    out.write_text(text.replace(row, row.replace("| holds | not resolved |", "| holds | holds |")))
    with pytest.raises(BioattnError, match="claim vars-pgd-rvt-vars-d: the page says 'holds', the records "
                                           "give 'not resolved'"):
        check_results(out=str(out))
    out.write_text(text.replace(row + "\n", ""))
    assert main(["results", "--check", "--out", str(out)]) == 2
    assert "has no row for claim vars-pgd-rvt-vars-d" in capsys.readouterr().err


def test_the_page_writer_refuses_a_file_it_did_not_write(page):
    out, _ = page
    out.write_text("# My notes\n\nkept by hand\n")
    with pytest.raises(BioattnError, match="was not written by bioattn results"):
        write_page(ResultsSettings(out=str(out), progress=False))
    assert out.read_text() == "# My notes\n\nkept by hand\n"
    with pytest.raises(BioattnError, match="not written by bioattn results"):
        check_results(out=str(out))


def test_results_refuses_a_page_that_is_not_markdown(tmp_path, capsys):
    assert main(["results", "--out", str(tmp_path / "results.txt"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a .md file" in err[0]
    with pytest.raises(BioattnError, match="beyond --glimpses"):
        ResultsSettings(glimpses=4, attack_readout=8)


def test_figures_are_drawn_where_missing_or_just_measured(tmp_path, monkeypatch):
    from bioattn.results import page as page_module

    out = tmp_path / "results.md"
    steered = Record("absvit_micro_convstem_64", 0, meta={"steering_protocol": {"prior_scale": 3.0, "threshold": 0.7}})
    steered.add("steering/shift", np.zeros(4, np.float32), range(4))
    write_records(records_folder(out), [steered, _record("rvt_micro", 0.6, 2)])
    drawn = []

    def draw(entry, record, path):
        drawn.append(entry.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("figure")
        return path

    monkeypatch.setattr(page_module, "draw_steering", draw)
    assert page_module.draw_figures(out) == [page_module.steering_figure(out, "absvit_micro_convstem_64")]
    assert drawn == ["absvit_micro_convstem_64"]  # the only record with a steering measurement
    assert page_module.draw_figures(out) == [] and drawn == ["absvit_micro_convstem_64"]
    page_module.draw_figures(out, redraw={"absvit_micro_convstem_64"})
    assert drawn == ["absvit_micro_convstem_64"] * 2


def test_a_glimpse_model_is_read_at_its_attacked_glimpse_in_the_models_table(tmp_path):
    out = tmp_path / "results.md"
    n, glimpses = 100, 16
    per = np.zeros((glimpses, n), bool)
    per[3, :60] = True   # 60% at glimpse 4, the attacked one
    per[-1, :90] = True  # 90% at the last
    record = Record("rsrnn_micro", 0, meta={"model": {"name": "RS-RNN"}, "data": "embedded", "attack_readout": 4,
                                            "settings": {"glimpses": glimpses}})
    record.add("clean", per[-1], range(n))
    record.add("clean/glimpse", per)
    record.add(PGD, per[3] & (np.arange(n) < 30), range(n))
    write_records(records_folder(out), [record])
    write_page(ResultsSettings(out=str(out), progress=False))
    row = next(line for line in out.read_text().splitlines() if line.startswith("| `rsrnn_micro` | RS-RNN |"))
    assert "| 4 (corrupted: 16) | 60.0% |" in row and "| 30.0% |" in row


def test_the_tables_give_the_mean_and_spread_over_seeds(tmp_path):
    from bioattn.zoo import STYLES

    out = tmp_path / "results.md"
    n = 100
    records = []
    for seed, top in ((0, 60), (1, 80)):
        record = Record("rvt_micro", seed, meta={"model": {"name": "RVT"}, "data": "embedded"})
        record.add("clean", np.arange(n) < top, range(n))
        record.add("attention/auc", np.full(n, 0.5 + top / 400, np.float32), range(n))
        records.append(record)
        for i, style in enumerate(STYLES):
            held = Record(f"rvt_micro_without_{style}", seed, meta={"model": {"name": "RVT"}, "data": "embedded"})
            held.add("clean", np.arange(n) < top - 10 * i, range(n))
            records.append(held)
    write_records(records_folder(out), records)
    write_page(ResultsSettings(out=str(out), progress=False))
    lines = out.read_text().splitlines()
    row = next(line for line in lines if line.startswith("| `rvt_micro` | RVT |"))
    # clean 60% and 80%: mean 70.0, sd 14.1; AUC 0.65 and 0.70
    assert "| 2 | - | 70.0% ± 14.1 |" in row and row.endswith("| 0.675 ± 0.035 |")
    styles = next(line for line in lines if line.startswith("| `rvt_micro` | 2 |"))
    # each style's mean over the seeds, and the mean over the styles (seed 0: 45%, seed 1: 65%)
    assert styles == "| `rvt_micro` | 2 | 70.0% ± 14.1 | 60.0% ± 14.1 | 50.0% ± 14.1 | 40.0% ± 14.1 | 55.0% ± 14.1 |"
