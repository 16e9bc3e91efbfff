"""run_suites on multi-readout models, the results file, and the side-by-side report."""

from __future__ import annotations

import json
import math

import pytest
from robustness_models import MEAN, STD, GlimpseToy, normalise, uniform_pixels
from torch.utils.data import TensorDataset

from bioattn.cli import main
from bioattn.errors import BioattnError
from bioattn.evaluate import run_suites
from bioattn.evaluate.report import format_eps, load_results, markdown_report, write_report, write_results
from bioattn.evaluate.suites import DEFAULT_EOT


@pytest.fixture(scope="module")
def toy_data() -> TensorDataset:
    x, y = uniform_pixels(16, seed=2)
    return TensorDataset(normalise(x), y)


@pytest.fixture(scope="module")
def glimpse_results(toy_data):
    common = dict(mean=MEAN, std=STD, eps=[0.01, 0.04], readouts=6, attack_readout=2, progress=False,
                  batch_size=8, device="cpu")
    fixed = run_suites(GlimpseToy(stochastic=False), toy_data, ["clean", "pgd"],
                       model_info={"label": "fixed fixations"}, **common)
    random = run_suites(GlimpseToy(stochastic=True), toy_data, ["clean", "pgd"],
                        model_info={"label": "random fixations"}, **common)
    return fixed, random


def test_run_suites_reports_every_readout_under_attack(glimpse_results):
    fixed, random = glimpse_results
    assert fixed["results"]["clean"]["per_readout_top1"] == [100.0] * 6
    runs = fixed["results"]["pgd"]["runs"]
    assert [r["eps"] for r in runs] == [0.01, 0.04] and all(r["eot"] == 1 for r in runs)
    strong = runs[1]
    assert strong["attack_readout"] == 2 and len(strong["per_readout_top1"]) == 6
    assert strong["per_readout_top1"][1] == 0.0  # the attacked glimpse ...
    assert strong["per_readout_top1"][0] == 100.0 and strong["per_readout_top1"][2:] == [100.0] * 4  # ... only
    assert runs[0]["per_readout_top1"] == [100.0] * 6  # eps 0.01 is below the 0.02 margin
    assert fixed["model"]["multi_readout"] and not fixed["model"]["stochastic"]
    assert fixed["settings"]["attack_readout"] == 2 and fixed["seconds"]["pgd"] >= 0


def test_models_that_sample_get_an_eot_run_too(glimpse_results):
    _, random = glimpse_results
    pgd = random["results"]["pgd"]
    assert pgd["stochastic"] is True
    assert [(r["eps"], r["eot"]) for r in pgd["runs"]] == [
        (0.01, 1), (0.01, DEFAULT_EOT), (0.04, 1), (0.04, DEFAULT_EOT)]
    assert random["model"]["stochastic"]


def test_run_suites_bad_input(toy_data):
    model = GlimpseToy()
    with pytest.raises(BioattnError, match="mean and std"):
        run_suites(model, toy_data, ["pgd"], progress=False)
    with pytest.raises(BioattnError, match="unknown evaluation setting"):
        run_suites(model, toy_data, ["clean"], progress=False, epsilon=0.1)
    with pytest.raises(BioattnError, match="--attack-readout must be at most --readouts"):
        run_suites(model, toy_data, ["pgd"], mean=MEAN, std=STD, readouts=4, attack_readout=7, progress=False)
    with pytest.raises(BioattnError, match="needs two-object images"):
        run_suites(model, toy_data, ["steering"], progress=False)


def test_results_file_and_side_by_side_report(glimpse_results, tmp_path, capsys):
    fixed, random = glimpse_results
    fixed = json.loads(json.dumps(fixed))
    fixed["results"]["clean"]["loss"] = math.nan
    a = write_results(fixed, tmp_path / "a.json")
    b = write_results(random, tmp_path / "b.json")
    text = a.read_text()
    assert "NaN" not in text and json.loads(text)["results"]["clean"]["loss"] is None

    rc = main(["report", str(a), str(b), "--out", str(tmp_path / "rep")])
    assert rc == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "fixed fixations" in md and "random fixations" in md
    assert "PGD eps=0.04 @readout2 top1" in md and f"PGD EOT{DEFAULT_EOT} eps=0.04 @readout2 top1" in md
    header = next(line for line in md.splitlines() if line.startswith("| model | clean top1"))
    assert header.count("|") >= 6
    png = tmp_path / "rep" / "report_attack_readouts.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "rep" / "report_corruptions.png").exists()  # nothing to plot
    assert "wrote" in capsys.readouterr().out


def test_corruption_tables_and_plots(tmp_path):
    top1 = {"fog": {"1": 90.0, "3": 70.0}, "snow": {"1": 80.0, "3": 40.0}}
    results = [{
        "model": {"name": f"m{i}"},
        "results": {"corruptions": {"top1": top1, "corruption_top1": {"fog": 80.0, "snow": 60.0},
                                    "mean_top1": 70.0 - i, "mean_error": 30.0 + i}},
    } for i in range(2)]
    md = markdown_report(results)
    assert "| m0 | fog | 90.00 | 70.00 | 80.00 | - |" in md
    assert "| m1 | 69.00 | 31.00 |" in md
    files = write_report(results, tmp_path, stem="c")
    assert [f.name for f in files] == ["c.md", "c_corruptions.png"]


def test_report_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"hello\": 1}")
    with pytest.raises(BioattnError, match="not a bioattn evaluation results file"):
        load_results(bad)
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "results file not found" in capsys.readouterr().err


def test_format_eps():
    assert format_eps(1 / 255) == "1/255"
    assert format_eps(0.5 / 255) == "0.5/255"
    assert format_eps(2e-3) == "0.002"


def test_per_readout_clean_and_glimpse_tables():
    results = [
        {"model": {"label": "glimpser"}, "results": {
            "clean": {"top1": 50.0, "per_readout_top1": [20.0, 35.0, 50.0]},
            "glimpses": {"per_glimpse": [6.0, 30.0, 40.0], "learned": 35.0, "random": 6.5,
                         "ratio": 5.4, "glimpses": 3, "n_images": 10}}},
        {"model": {"label": "one shot"}, "results": {"clean": {"top1": 40.0, "per_readout_top1": [40.0]}}},
    ]
    md = markdown_report(results)
    clean = md.split("## Clean top-1 at every readout")[1].split("##")[0]
    assert "| glimpser | 20.00 | 35.00 | 50.00 |" in clean
    assert "one shot" not in clean                  # a single readout needs no per-readout row
    fix = md.split("## Fixations on the object's mask at every glimpse (%)")[1]
    assert "| model | 1 | 2 | 3 | after the first | uniform random |" in fix
    assert "| glimpser | 6.00 | 30.00 | 40.00 | 35.00 | 6.50 |" in fix


def _scored(name: str, n: int, steering: bool = False) -> dict:
    results = {"clean": {"top1": 50.0, "top5": 90.0, "n": n},
               "pgd": {"runs": [{"attack": "pgd", "eps": 1 / 255, "top1": 10.0, "n": n // 2}]}}
    if steering:
        results["steering"] = {"prompted_share": 0.25, "other_share": 0.125, "win_rate": 0.75,
                               "shift": 0.05, "shift_win_rate": 0.5, "n_images": 4, "n_pairs": 8,
                               "prior_scale": 40.0}
    return {"model": {"name": name}, "settings": {"limit": n}, "results": results}


def test_tables_say_how_many_images_and_flag_mixed_limits():
    md = markdown_report([_scored("a", 32), _scored("b", 32)])
    assert "Images: clean 32, pgd 16" in md and "Note" not in md
    md = markdown_report([_scored("a", 32), _scored("b", 100)])
    note = next(line for line in md.splitlines() if line.startswith("**Note"))
    assert "different numbers of images in clean, pgd" in note and "--limit" in note
    assert "a: clean 32, pgd 16; b: clean 100, pgd 50" in note


def test_steering_shares_are_shown_in_percent():
    md = markdown_report([_scored("absvit", 8, steering=True)])
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    row = next(line for line in md.splitlines() if line.startswith("| absvit"))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["steering prompted_share (%)"] == "25.00" and cells["steering win_rate (%)"] == "75.00"
    assert cells["steering shift (points)"] == "5.00"
    assert not any("n_pairs" in c or "prior_scale" in c for c in cells)


def test_report_accepts_the_demo_results_file(tmp_path, capsys):
    summary = {"settings": {"epochs": 1}, "quick": True, "timings": {},
               "models": [_scored("ViT", 32), _scored("AbSViT", 32, steering=True)]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(summary))
    assert load_results(path) == summary
    single = write_results(_scored("RS-RNN", 32), tmp_path / "rsrnn.json")
    assert main(["report", str(path), str(single), "--out", str(tmp_path / "rep")]) == 0, capsys.readouterr().err
    md = (tmp_path / "rep" / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "model" not in line]
    assert rows[:3] == ["ViT", "AbSViT", "RS-RNN"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"models": [{"no": "results"}]}))
    with pytest.raises(BioattnError, match="not a bioattn evaluation results file"):
        load_results(broken)
