"""Command-line plumbing: model listing, version, and model arguments on convert."""

from __future__ import annotations

import pytest
import torch

from bioattn.checkpoint import load_model
from bioattn.cli import main, parameter_count
from bioattn.models import count_parameters, create_model


def test_models_lists_bioattn_models_with_parameter_counts(capsys):
    assert main(["models", "micro"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    for expected in ("absvit_micro_patch8_64", "vit_micro_patch8_64", "rvt_micro", "rsrnn_micro", "ffcnn_micro"):
        assert expected in names
    assert all(line.rstrip().endswith("M") for line in lines)
    assert main(["models", "no-such-family"]) == 2


@pytest.mark.parametrize("name", ["absvit_micro_patch8_64", "gfnet_micro", "rvt_micro", "rsrnn_micro", "crop_d_micro",
                                  "s3ta_micro", "upernet_rvt_micro"])
def test_models_counts_parameters_as_a_real_build_does_without_building(name, monkeypatch):
    import bioattn.models

    built = []
    real_create = bioattn.models.create_model

    def create(*args, **kwargs):
        built.append(real_create(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(bioattn.models, "create_model", create)
    counted = parameter_count(name, num_classes=7)
    assert [next(m.parameters()).device.type for m in built] == ["meta"]  # no weights made
    assert counted == count_parameters(real_create(name, num_classes=7))


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


def _subcommand_parsers(parser):
    """(name, parser) of every command, the data actions included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", p) for n, p in _subcommand_parsers(sub))


def test_every_flag_has_help_and_no_default_reads_none():
    from bioattn.cli import build_parser

    parsers = dict(_subcommand_parsers(build_parser()))
    assert set(parsers) == {"models", "train", "demo", "eval", "report", "attend", "convert", "domains", "zoo",
                            "results", "data", "data generate", "data preview"}
    for name, parser in parsers.items():
        text = parser.format_help()
        assert "(default: None)" not in text, name
        if name != "data":
            assert "(Python: bioattn." in parser.description, name
        for action in parser._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


def test_help_shows_effective_defaults():
    from bioattn.cli import build_parser

    parsers = dict(_subcommand_parsers(build_parser()))
    train = " ".join(parsers["train"].format_help().split())
    assert "(default: recipe: 300 (deit) / 10 (small) / 30 (upernet))" in train
    assert "(default: base-lr x global batch / 512)" in train
    evaluate = " ".join(parsers["eval"].format_help().split())
    assert "--readouts N" in evaluate and "--attack-readout N" in evaluate
    assert "--steps" not in evaluate and "--attack-step " not in evaluate
    assert "(default: 1/255)" in evaluate


def test_flags_are_built_from_the_settings_dataclasses():
    import dataclasses

    from bioattn import config
    from bioattn.cli import COMMANDS, DATA_COMMANDS, build_parser

    parsers = dict(_subcommand_parsers(build_parser()))
    for command in COMMANDS + DATA_COMMANDS:
        parser = parsers[command.name] if command in COMMANDS else parsers[f"data {command.name}"]
        dests = {a.dest for a in parser._actions}
        for cls in command.settings:
            for f in dataclasses.fields(cls):
                if "help" in f.metadata:
                    assert f.name in dests, (command.name, f.name)
        assert all(isinstance(cls, type) and dataclasses.is_dataclass(cls) for cls in command.settings)
    assert config.TrainConfig is __import__("bioattn.train", fromlist=["TrainConfig"]).TrainConfig


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: bioattn" in capsys.readouterr().err


def test_attend_takes_the_number_of_classes_as_a_model_argument(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 80, 20)).save(tmp_path / "photo.png")
    args = ["attend", "--model", "test_vit", "--img-size", "32", "--image", str(tmp_path / "photo.png")]
    assert main(args + ["--model-arg", "num_classes=3", "--out", str(tmp_path / "a.png")]) == 0
    assert main(args + ["--model-arg", "num_classes=3", "--num-classes", "3", "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").is_file() and (tmp_path / "b.png").is_file()
    assert "error" not in capsys.readouterr().err


def test_readme_names_the_installed_uv_and_convert_model_arguments():
    from pathlib import Path

    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    docs = readme + "".join(p.read_text() for p in sorted((root / "docs").glob("*.md")))
    assert ".tools/bin/uv run" in readme
    assert "has no `--model-arg`" not in docs
    assert "bioattn convert released/x.pth ckpt/vars_d --model rvt_tiny --model-arg attention=vars_d" in docs
