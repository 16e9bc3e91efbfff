"""Command-line plumbing: model listing, version, and model arguments on convert."""

from __future__ import annotations

import torch

from bioattn.checkpoint import load_model
from bioattn.cli import main
from bioattn.models import create_model


def test_models_lists_bioattn_models_with_parameter_counts(capsys):
    assert main(["models", "micro"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    for expected in ("absvit_micro_patch8_64", "vit_micro_patch8_64", "rvt_micro", "rsrnn_micro", "ffcnn_micro"):
        assert expected in names
    assert all(line.rstrip().endswith("M") for line in lines)
    assert main(["models", "no-such-family"]) == 2


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"


def test_convert_takes_model_arguments_for_vars_releases(tmp_path, capsys):
    source = create_model("rvt_micro", attention="vars_d", num_classes=10)
    torch.save({"model": source.state_dict(), "epoch": 299}, tmp_path / "release.pth")
    # without the attention argument the layout does not fit: refused, listing the keys
    assert main(["convert", str(tmp_path / "release.pth"), str(tmp_path / "bad"), "--model", "rvt_micro"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "release.pth"), str(tmp_path / "ok"), "--model", "rvt_micro",
                 "--model-arg", "attention=vars_d", "--num-classes", "10"]) == 0
    model = load_model(tmp_path / "ok")
    x = torch.randn(2, 3, 64, 64)
    source.eval(), model.eval()
    assert torch.allclose(source(x), model(x))
