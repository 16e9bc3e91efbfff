"""`bioattn eval` with bioattn's own models: AbSViT steering, fixations, RS-RNN under attack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioattn.checkpoint import model_meta, save_checkpoint
from bioattn.cli import main
from bioattn.models import create_model

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
PAIR = "embedded:pair,size=32,train=4,val=6,test=4"
EMBEDDED = "embedded:size=32,train=4,val=6,test=4"


def _checkpoint(path: Path, name: str, **args) -> Path:
    torch.manual_seed(0)
    model = create_model(name, **args)
    meta = model_meta(name, args, args["num_classes"], img_size=32, mean=MEAN, std=STD)
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def absvit_ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("absvit") / "ck", "absvit_micro_patch8_64",
                       img_size=32, depth=4, embed_dim=48, num_classes=10)


def test_steering_suite_on_pairs(absvit_ckpt, tmp_path, capsys):
    out = tmp_path / "s.json"
    rc = main(["eval", "--checkpoint", str(absvit_ckpt), "--data", PAIR, "--suite", "clean,steering",
               "--workers", "0", "--no-progress", "--limit", "4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    s = json.loads(out.read_text())["results"]["steering"]
    assert s["n_images"] == 4 and s["n_pairs"] == 8
    assert 0 <= s["prompted_share"] <= 1 and 0 <= s["win_rate"] <= 1
    assert "steering: prompted share" in capsys.readouterr().out


def test_steering_needs_a_model_with_priors(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "cnn", "ffcnn_micro", img_size=32, num_classes=10)
    # single-object data names the generator settings; the suite uses their two-object twin
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", EMBEDDED, "--suite", "steering",
               "--workers", "0", "--no-progress"])
    assert rc == 2 and "steering needs a model with top-down priors" in capsys.readouterr().err


def _fixation_tree(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for k in range(n):
        pts = np.zeros((24, 32), np.uint8)
        pts[rng.integers(0, 24, 5), rng.integers(0, 32, 5)] = 255
        for sub, array in (("images", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)), ("fixations", pts)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / sub / f"im{k}.png")
    return root


def test_fixations_suite(absvit_ckpt, tmp_path, capsys):
    root = _fixation_tree(tmp_path / "fix")
    out = tmp_path / "f.json"
    rc = main(["eval", "--checkpoint", str(absvit_ckpt), "--suite", "fixations", "--fixations", str(root),
               "--workers", "0", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    f = json.loads(out.read_text())["results"]["fixations"]
    assert f["n_images"] == 3 and set(f["model"]) == set(f["centre"])
    rc = main(["eval", "--checkpoint", str(absvit_ckpt), "--suite", "fixations", "--workers", "0"])
    assert rc == 2 and "--fixations DIR" in capsys.readouterr().err


def test_glimpse_model_attacked_at_one_glimpse_with_eot(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "rs", "rsrnn_micro", img_size=32, num_classes=10, eval_sample=True)
    out = tmp_path / "g.json"
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", EMBEDDED, "--suite", "pgd", "--readouts", "4",
               "--attack-readout", "2", "--eps", "2e-3,5e-3", "--eot", "2", "--attack-iters", "2",
               "--limit", "2", "--workers", "0", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    pgd = r["results"]["pgd"]
    assert pgd["stochastic"] is True and r["model"]["stochastic"] is True
    assert [(run["eps"], run["eot"]) for run in pgd["runs"]] == [(2e-3, 1), (2e-3, 2), (5e-3, 1), (5e-3, 2)]
    for run in pgd["runs"]:
        assert len(run["per_readout_top1"]) == 4 and len(run["per_readout_clean_top1"]) == 4
        assert run["attack_readout"] == 2 and run["max_linf"] <= run["eps"] + 1e-6
    assert (tmp_path / "g_attack_readouts.png").exists()


def test_random_weights_are_seeded_and_announced(capsys):
    from bioattn.evaluate import evaluate_checkpoint

    args = dict(model_name="vit_micro_patch8_64", data="embedded:train=4,val=6,test=4", workers=0,
                progress=False)
    first = evaluate_checkpoint(None, "clean", seed=3, **args)
    assert "random weights (seed 3)" in capsys.readouterr().err
    again = evaluate_checkpoint(None, "clean", seed=3, **args)
    other = evaluate_checkpoint(None, "clean", seed=4, **args)
    assert first["model"]["weights"] == "random (seed 3)"
    assert first["results"]["clean"]["loss"] == again["results"]["clean"]["loss"]
    assert first["results"]["clean"]["loss"] != other["results"]["clean"]["loss"]


def test_checkpoint_that_records_its_data_needs_no_data_flag(tmp_path, capsys):
    torch.manual_seed(0)
    args = {"img_size": 32, "num_classes": 10}
    model = create_model("vit_micro_patch8_64", **args)
    meta = model_meta("vit_micro_patch8_64", args, 10, img_size=32, mean=MEAN, std=STD, data=EMBEDDED)
    ckpt = save_checkpoint(tmp_path / "ck", model, meta)
    rc = main(["eval", "--checkpoint", str(ckpt), "--workers", "0", "--no-progress"])
    assert rc == 0
    assert f"evaluating on '{EMBEDDED}'" in capsys.readouterr().err


def test_random_weights_on_the_command_line_are_announced_once_and_repeat(tmp_path, capsys):
    args = ["eval", "--model", "vit_micro_patch8_64", "--data", "embedded:train=4,val=6,test=4",
            "--workers", "0", "--no-progress"]
    runs = []
    for name in ("a.json", "b.json"):
        assert main(args + ["--out", str(tmp_path / name)]) == 0
        err = capsys.readouterr().err
        assert [line for line in err.splitlines() if "random weights" in line] == [
            "warning: no checkpoint: vit_micro_patch8_64 is evaluated with random weights (seed 0)"]
        runs.append(json.loads((tmp_path / name).read_text()))
    assert runs[0]["results"]["clean"] == runs[1]["results"]["clean"]
    assert runs[0]["model"]["weights"] == "random (seed 0)"
