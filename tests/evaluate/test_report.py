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
from bioattn.evaluate.report import load_results, markdown_report, write_report, write_results
from bioattn.evaluate.suites import DEFAULT_EOT
from bioattn.evaluate.summary import format_eps


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
    assert "PGD eps=0.04 top-1" in md and f"PGD EOT{DEFAULT_EOT} eps=0.04 top-1" in md
    assert "Attacks aimed at one readout are read there (fixed fixations: 2; random fixations: 2)" in md
    header = next(line for line in md.splitlines() if line.startswith("| model | top-1"))
    assert header.count("|") >= 6
    png = tmp_path / "rep" / "report_attack_readouts.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "![top-1 after every glimpse or pass](report_attack_readouts.png)" in md
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
    assert "| m0 | fog | 90.00 | 70.00 | 80.00 |" in md  # no baseline: no corruption error column
    assert "| m1 | 69.00 |" in md.splitlines()  # the error is 100 - top-1: one column is enough
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
    assert cells["steering: prompted share (%)"] == "25.00" and cells["steering: images above 0 (%)"] == "50.00"
    assert cells["steering: image score (points)"] == "5.00"
    assert not any("win rate" in c for c in cells)  # image-prompt pairs are not independent images
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


# ------------------------------------------------------------------------------------------
# the summary table, its notes and the figures
# ------------------------------------------------------------------------------------------
def _header_and_rows(md: str) -> tuple[list[str], dict[str, list[str]]]:
    """The summary table: its header and its rows by model."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    return table[0], {row[0]: row for row in table[2:]}


def _glimpse_model(label: str, trained: int) -> dict:
    per = [40.0, 60.0, 70.0, 65.0, 62.0, 61.0]
    return {"model": {"label": label, "trained_glimpses": trained, "data": "embedded", "split": "test"},
            "results": {
                "clean": {"top1": per[-1], "top5": 99.0, "per_readout_top1": per, "n": 8},
                "pgd": {"runs": [{"attack": "pgd", "eps": 1 / 255, "top1": 10.0, "n": 8,
                                  "per_readout_top1": [5.0, 20.0, 30.0, 25.0, 15.0, 10.0],
                                  "per_readout_clean_top1": per}]},
                "glimpses": {"per_glimpse": [6.0, 30.0, 40.0, 42.0, 41.0, 40.0], "learned": 38.6, "random": 6.2,
                             "ratio": 6.2, "glimpses": 6, "n_images": 8}}}


def _plain_model(label: str, split: str = "test") -> dict:
    return {"model": {"label": label, "data": "embedded", "split": split},
            "results": {"clean": {"top1": 80.0, "top5": 99.5, "n": 8},
                        "pgd": {"runs": [{"attack": "pgd", "eps": 1 / 255, "top1": 30.0, "n": 8}]}}}


def test_summary_has_plain_unique_headers_for_measured_figures_only():
    md = markdown_report([_plain_model("ViT"), _glimpse_model("RS-RNN", trained=3)])
    header, rows = _header_and_rows(md)
    # a column one model adds sits beside the column before it in that model's row
    assert header == ["model", "top-1", "top-5", "top-1 per glimpse or pass", "PGD eps=1/255 top-1",
                      "fixations on the object (%)", "fixations by chance (%)"]
    assert len(set(header)) == len(header) and not any("_" in h for h in header)
    assert rows["ViT"] == ["ViT", "80.00", "99.50", "-", "30.00", "-", "-"]
    # the glimpse model is read after its 3 trained glimpses: top-1 70, top-5 (the last glimpse's) not shown
    assert rows["RS-RNN"] == ["RS-RNN", "70.00", "-", "40 60 [70] 65 62 61", "30.00", "38.60", "6.20"]
    for column in range(1, len(header)):  # every column holds a figure for some model
        assert any(row[column] != "-" for row in rows.values())


def test_the_headline_is_the_last_readout_when_the_trained_one_was_not_run():
    header, rows = _header_and_rows(markdown_report([_glimpse_model("long", trained=8)]))
    assert rows["long"][header.index("top-1")] == "61.00"
    assert rows["long"][header.index("top-5")] == "99.00"


def test_notes_explain_only_the_suites_that_ran():
    segmenter = {"model": {"label": "UperNet", "data": "embedded:seg", "split": "test"},
                 "results": {"clean": {"miou": 60.0, "pixel_acc": 90.0, "n": 4}}}
    md = markdown_report([segmenter])
    assert "Attacks" not in md and "mCE" not in md and "top-1" not in md.split("## ")[0]
    assert "Figures in % (mIoU and pixel accuracy)." in md
    md = markdown_report([_plain_model("ViT")])
    assert "Attacks: top-1 on white-box adversarial images, eps on pixels in [0, 1]." in md  # no EOT run
    assert "mCE" not in md and "readouts" not in md
    base = {"model": {"label": "m"}, "results": {"corruptions": {
        "top1": {"fog": {"1": 50.0}}, "corruption_top1": {"fog": 50.0}, "mean_top1": 50.0, "mean_error": 50.0,
        "mce": 90.0, "relative_mce": 80.0, "ce": {"fog": 90.0}}}}
    md = markdown_report([base])
    assert "mCE x100: corruption errors normalised by the baseline model's" in md and "Attacks" not in md
    assert "| m | fog | 50.00 | 50.00 | 90.00 |" in md  # with a baseline, the corruption error column


def test_report_names_the_data_and_split():
    assert "Data: embedded, test split." in markdown_report([_plain_model("a"), _plain_model("b")])
    mixed = markdown_report([_plain_model("a"), _plain_model("b", split="val")])
    assert "Data: a: embedded, test split; b: embedded, val split." in mixed
    assert "Data:" not in markdown_report([{"model": {"name": "m"}, "results": {"clean": {"top1": 1.0}}}])


def _every_kind_of_result() -> list[dict]:
    def corrupted(label, severities, offset):
        top1 = {c: {str(s): max(0.0, 90.0 - 12 * s - offset - k) for s in severities}
                for k, c in enumerate(("gaussian_noise", "motion_blur", "jpeg_compression", "elastic_transform"))}
        return {"model": {"label": label}, "results": {
            "clean": {"top1": 90.0 - offset, "top5": 99.0, "n": 8},
            "corruptions": {"top1": top1, "corruption_top1": {c: sum(v.values()) / len(v) for c, v in top1.items()},
                            "mean_top1": 50.0 - offset, "mean_error": 50.0 + offset, "n": 8},
            "steering": {"prompted_share": 0.3, "other_share": 0.2, "win_rate": 0.6, "shift": -0.0015,
                         "shift_win_rate": 0.5, "n_images": 4}}}
    return [corrupted("RVT (self-attention)", (1, 2, 3, 4, 5), 0), corrupted("GFNet VARS-S", (1, 2, 3, 4, 5), 7),
            _glimpse_model("RS-RNN", trained=3), _glimpse_model("Crop-D with a long label", trained=4)]


def test_every_report_figure_keeps_its_texts_apart():
    from bioattn.evaluate.report import report_figures
    from conftest import overlapping_text

    for results in (_every_kind_of_result(), _every_kind_of_result()[:1], _every_kind_of_result()[2:3]):
        figures = report_figures(results)
        assert figures
        for name, _, build in figures:
            fig = build()
            assert fig is not None, name
            assert overlapping_text(fig) == [], name


def test_the_report_has_a_figure_per_suite(tmp_path):
    files = write_report(_every_kind_of_result(), tmp_path, stem="r")
    names = [f.name for f in files]
    assert names == ["r.md", "r_clean.png", "r_steering.png", "r_pgd.png", "r_glimpses.png", "r_corruptions.png",
                     "r_attack_readouts.png"]
    md = (tmp_path / "r.md").read_text()
    for name in names[1:]:
        assert f"]({name})" in md
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_the_overlap_check_finds_covered_titles():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from conftest import overlapping_text

    fig = Figure(figsize=(4, 4))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1)
    top.set_title("upper")
    bottom.set_title("lower panel title")
    top.legend(["a long legend entry"], loc="upper center", bbox_to_anchor=(0.5, -0.05))
    top.plot([0, 1])
    top.legend(["a long legend entry"], loc="upper center", bbox_to_anchor=(0.5, -0.05))
    found = overlapping_text(fig)
    assert any("legend" in pair and "lower panel title" in pair for pair in found), found
    fig.subplots_adjust(hspace=1.2)
    top.get_legend().remove()
    assert overlapping_text(fig) == []
