"""The RS-RNN attack protocol as a preset of `bioattn eval`, and scan paths written as CSV."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from bioattn.checkpoint import load_model, model_meta, save_checkpoint
from bioattn.cli import main
from bioattn.config import PRESETS, SuiteSettings
from bioattn.data import build_dataset
from bioattn.data.subsets import spread_indices
from bioattn.errors import BioattnError
from bioattn.evaluate.glimpses import SCAN_PATH_COLUMNS, ScanPaths, scan_paths_path
from bioattn.evaluate.suites import run_suites
from bioattn.models import create_model
from conftest import make_image_folder

DATA = "embedded:size=32,train=4,val=6,test=4"
TINY = dict(img_size=32, num_classes=10, encoder_widths=(8, 12, 16))


def _checkpoint(tmp_path, name="rsrnn_micro", **extra):
    torch.manual_seed(0)
    args = dict(TINY, **extra)
    model = create_model(name, **args)
    meta = model_meta(name, args, 10, img_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    return save_checkpoint(tmp_path / name, model, meta)


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------
# the preset
# ------------------------------------------------------------------------------------------
def test_preset_fills_the_settings_left_at_their_defaults():
    s = SuiteSettings(preset="rsrnn-pgd").with_preset()
    assert s.eps == [1e-3, 2e-3, 3e-3, 5e-3]
    assert s.step_ratio == pytest.approx(1 / 3) and s.step_size is None
    assert (s.attack_iters, s.restarts, s.norm, s.readouts, s.attack_readout) == (5, 1, "Linf", 16, 4)
    # settings given explicitly win; a given step size replaces the preset's step ratio
    own = SuiteSettings(preset="rsrnn-pgd", eps=[2e-3], readouts=8, step_size=1e-4).with_preset()
    assert own.eps == [2e-3] and own.readouts == 8 and own.attack_readout == 4
    assert own.step_size == 1e-4 and own.step_ratio is None
    assert SuiteSettings().with_preset() == SuiteSettings()
    assert PRESETS["rsrnn-pgd"]["folder_resize"] == 384 and PRESETS["rsrnn-pgd"]["folder_crop"] == 336


def test_preset_runs_the_protocol_on_a_glimpse_model():
    torch.manual_seed(0)
    model = create_model("rsrnn_micro", **TINY)
    data = build_dataset(DATA, "val", img_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    out = run_suites(model, data, ["clean"], mean=[0.5] * 3, std=[0.25] * 3, preset="rsrnn-pgd", limit=3,
                     progress=False, device="cpu")
    assert out["suites"] == ["clean", "pgd"]
    assert len(out["results"]["clean"]["per_readout_top1"]) == 16
    runs = out["results"]["pgd"]["runs"]
    assert [r["eps"] for r in runs] == [1e-3, 2e-3, 3e-3, 5e-3]
    for r in runs:
        assert r["step_size"] == pytest.approx(r["eps"] / 3)
        setting = (r["iters"], r["random_start"], r["norm"], r["attack_readout"], r["readouts"])
        assert setting == (5, True, "Linf", 4, 16)
        assert len(r["per_readout_top1"]) == 16 and len(r["per_readout_clean_top1"]) == 16
        assert r["max_linf"] <= r["eps"] + 1e-6


def test_preset_resizes_image_folders_to_384_and_crops_336(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", classes=[str(i) for i in range(10)], per_class=1, size=48)
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "eval" / "r.json"
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", str(root), "--preset", "rsrnn-pgd",
               "--eps", "2e-3", "--limit", "2", "--workers", "0", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    assert results["model"]["img_size"] == 336 and results["model"]["crop_pct"] == pytest.approx(336 / 384)
    rows = _read_csv(scan_paths_path(out))
    assert max(float(r["x_px"]) for r in rows) <= 335.5 and max(float(r["x_px"]) for r in rows) > 63.5
    files = {r["file"] for r in rows}
    chosen = spread_indices(10, 2)
    val = build_dataset(str(root), "val", img_size=336)
    assert files == {str(val.samples[i][0].split("/val/")[1]) for i in chosen}


# ------------------------------------------------------------------------------------------
# scan paths as CSV
# ------------------------------------------------------------------------------------------
def test_scan_paths_rows_in_image_and_pixel_coordinates(tmp_path):
    paths = ScanPaths()
    fix = torch.tensor([[[0.0, 0.0], [-1.0, 1.0]], [[0.5, -0.5], [1.0, -1.0]]])  # (T=2, B=2, 2)
    widths = torch.tensor([[0.25, 0.3], [0.1, 0.2]])
    paths.add("glimpses", "clean", [7, 3], fix, widths, (32, 64))
    paths.add("glimpses", "clean", [7], fix[:, :1] + 0.1, widths[:, :1], (32, 64))  # image 7 again: kept once
    paths.add("pgd", "pgd eps=0.002", [7], fix[:, :1], widths[:, :1], (32, 64))
    rows = paths.rows()
    assert len(rows) == 6 and len(paths) == 6
    first = rows[0]
    assert (first["suite"], first["condition"], first["image"], first["glimpse"]) == ("glimpses", "clean", 7, 1)
    assert (first["x_px"], first["y_px"], first["width"]) == (31.5, 15.5, 0.25)  # the centre of a 64 x 32 image
    corner = next(r for r in rows if r["image"] == 3 and r["glimpse"] == 1)
    assert (corner["x"], corner["y"], corner["x_px"], corner["y_px"]) == (-1.0, 1.0, -0.5, 31.5)
    second = next(r for r in rows if r["image"] == 7 and r["glimpse"] == 2 and r["suite"] == "glimpses")
    assert (second["x"], second["y"], second["x_px"]) == (0.5, -0.5, 47.5)
    written = _read_csv(paths.write(tmp_path / "f.csv"))
    assert tuple(written[0]) == SCAN_PATH_COLUMNS and len(written) == 6
    assert written[-1]["condition"] == "pgd eps=0.002" and float(written[-1]["width"]) == pytest.approx(0.1)
    with pytest.raises(BioattnError, match=r"fixations \(T, B, 2\) and widths \(T, B\)"):
        paths.add("glimpses", "clean", [0], fix[0], widths, (32, 32))
    with pytest.raises(BioattnError, match="2 scan paths for 1 images"):
        paths.add("glimpses", "clean", [0], fix, widths, (32, 32))


def test_eval_writes_every_fixation_next_to_the_results(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "r.json"
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", DATA, "--split", "val", "--suite", "glimpses,pgd",
               "--readouts", "5", "--attack-readout", "2", "--eps", "2e-3", "--limit", "4", "--workers", "0",
               "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    csv_path = tmp_path / "r.fixations.csv"
    assert json.loads(out.read_text())["fixations_csv"] == str(csv_path)
    rows = _read_csv(csv_path)
    groups = {}
    for r in rows:
        groups.setdefault((r["suite"], r["condition"]), []).append(r)
    assert set(groups) == {("glimpses", "clean"), ("pgd", "clean"), ("pgd", "pgd eps=0.002")}
    chosen = spread_indices(6, 4)
    for group in groups.values():
        assert len(group) == 4 * 5
        assert sorted({int(r["image"]) for r in group}) == chosen
        assert sorted({int(r["glimpse"]) for r in group}) == [1, 2, 3, 4, 5]
    # the rows are the model's own scan paths on those images
    model = load_model(ckpt).eval()
    data = build_dataset(DATA, "val", img_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    with torch.no_grad():
        scan = model.forward_glimpses(torch.stack([data[i][0] for i in chosen]), glimpses=5)
    for r in groups[("glimpses", "clean")]:
        b, t = chosen.index(int(r["image"])), int(r["glimpse"]) - 1
        assert float(r["x"]) == pytest.approx(float(scan.fixations[t, b, 0]), abs=1e-5)
        assert float(r["y"]) == pytest.approx(float(scan.fixations[t, b, 1]), abs=1e-5)
        assert float(r["width"]) == pytest.approx(float(scan.sigmas[t, b]), rel=1e-4)
        assert r["file"] == ""
    clean_pgd = sorted((r["image"], r["glimpse"], r["x"], r["y"]) for r in groups[("pgd", "clean")])
    assert clean_pgd == sorted((r["image"], r["glimpse"], r["x"], r["y"]) for r in groups[("glimpses", "clean")])


def test_no_scan_paths_for_a_model_without_fixations(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", "--model", "vit_micro_patch8_64", "--model-arg", "num_classes=10", "--data",
               "embedded:train=4,val=4,test=4", "--suite", "clean", "--workers", "0", "--no-progress",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert not scan_paths_path(out).exists() and "fixations_csv" not in json.loads(out.read_text())


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, expected", [
    (["--preset", "rsrnn-pgd", "--readouts", "2"],
     "--readouts 2 is smaller than --attack-readout 4 (--attack-readout set by --preset rsrnn-pgd)"),
    (["--suite", "pgd", "--readouts", "2", "--attack-readout", "4"], "--attack-readout must be at most --readouts (2)"),
    (["--preset", "rsrnn-pgd", "--step-size", "1e-3", "--step-ratio", "1/3"], "give --step-size or --step-ratio"),
    (["--suite", "pgd", "--attack-readout", "6"], "--attack-readout 6 is beyond the 4 glimpses the model runs"),
    (["--preset", "rsrnn-pgd", "--step-ratio", "2"], "--step-ratio must be a number in (0, 1]"),
])
def test_attack_readouts_a_run_cannot_give_are_one_error(extra, expected, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    assert main(["eval", "--checkpoint", str(ckpt), "--data", DATA, "--workers", "0", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err


def test_preset_needs_a_glimpse_model(capsys):
    assert main(["eval", "--model", "vit_micro_patch8_64", "--model-arg", "num_classes=10", "--data",
                 "embedded:train=4,val=4,test=4", "--preset", "rsrnn-pgd", "--workers", "0", "--no-progress"]) == 2
    assert "--preset rsrnn-pgd reads the prediction after every glimpse: it needs a glimpse model" in \
        capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# headline figures and progress of a glimpse model
# ------------------------------------------------------------------------------------------
def test_headline_figures_are_read_at_the_trained_number_of_glimpses(capsys):
    from bioattn.evaluate.report import markdown_report
    from bioattn.evaluate.summary import CURVE, summary_columns

    torch.manual_seed(0)
    model = create_model("rsrnn_micro", **TINY, num_glimpses=3)
    data = build_dataset(DATA, "val", img_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    out = run_suites(model, data, ["clean", "pgd"], mean=[0.5] * 3, std=[0.25] * 3, readouts=6, eps=[2e-3],
                     attack_iters=2, limit=4, batch_size=2, device="cpu")
    assert out["model"]["trained_glimpses"] == 3
    per = out["results"]["clean"]["per_readout_top1"]
    assert len(per) == 6
    columns = summary_columns(out)
    assert columns["top-1"] == per[2]  # after glimpse 3, not 6
    run = out["results"]["pgd"]["runs"][0]
    assert columns["PGD eps=0.002 top-1"] == run["per_readout_top1"][2]
    cells = columns[CURVE].split()
    assert len(cells) == 6 and cells[2] == f"[{per[2]:.0f}]" and cells[5] == f"{per[5]:.0f}"
    assert "after glimpse 3 of the 6 run, the number it was trained with" in markdown_report([out])

    # the attack's progress moves at every iteration: 2 batches x 2 iterations
    err = capsys.readouterr().err.splitlines()
    pgd = [line for line in err if line.startswith("pgd:")]
    assert pgd[0] == "pgd: 0/4 passes (0 s)"
    assert pgd[-1].startswith("pgd: 4/4 passes (") and pgd[-1].endswith("eps=0.002, images 3-4 of 4")
