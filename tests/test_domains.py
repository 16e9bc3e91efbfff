"""Domain generalisation: the PACS layout, the training-domain validation split, and the
leave-one-domain-out protocol end to end (command line and Python) on a fixture PACS tree and
on the embedded styles; the bad inputs each end in one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioattn.checkpoint import read_meta
from bioattn.cli import main
from bioattn.data import build_dataset
from bioattn.data.domains import PACS_CLASSES, PACS_DOMAINS, DomainSpec, read_domain_folders
from bioattn.errors import BioattnError
from bioattn.generalisation import leave_one_domain_out, markdown_table
from bioattn.models import create_model
from bioattn.train import load_init_weights

PER_CLASS = 5
FAST = ["--epochs", "1", "--batch-size", "16", "--img-size", "32", "--device", "cpu",
        "--no-progress", "--no-tensorboard"]
FAST_API = dict(epochs=1, batch_size=16, img_size=32, device="cpu", progress=False, tensorboard=False)


def make_pacs(root: Path, per_class: int = PER_CLASS, size: int = 12) -> Path:
    """A tiny PACS tree: 4 domains x 7 classes; classes differ by brightness, domains by tint
    and by PIL mode (sketches greyscale, cartoons palette images)."""
    rng = np.random.default_rng(0)
    for di, domain in enumerate(PACS_DOMAINS):
        for ci, name in enumerate(PACS_CLASSES):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = 30 + 190 * ci / (len(PACS_CLASSES) - 1)
                pixels = np.clip(rng.normal(base, 12, (size, size + 2, 3)) + 8 * di, 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if domain == "sketch":
                    image = image.convert("L")
                elif domain == "cartoon":
                    image = image.convert("P")
                image.save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Path:
    return make_pacs(tmp_path_factory.mktemp("pacs") / "PACS")


def _copy(pacs: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pacs, tmp_path / "PACS"))


# ------------------------------------------------------------------------------------------
# the layout and the split
# ------------------------------------------------------------------------------------------
def test_a_pacs_root_has_four_domains_in_pacs_order_and_seven_classes(pacs, tmp_path):
    folders = read_domain_folders(pacs)
    assert folders.is_pacs and folders.domains == PACS_DOMAINS
    assert folders.classes == PACS_CLASSES
    # any other folder of domain folders is read as it is
    other = tmp_path / "other"
    for domain in ("b", "a"):
        for name in ("x", "y"):
            (other / domain / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(other / domain / name / "0.png")
    plain = read_domain_folders(other)
    assert not plain.is_pacs and plain.domains == ("a", "b") and plain.classes == ("x", "y")


def test_a_domain_spec_round_trips_and_its_root_may_hold_commas():
    spec = DomainSpec("/data/a,b/PACS", ("cartoon", "sketch"), "photo", 0.25, 3)
    assert DomainSpec.parse(str(spec)) == spec
    assert str(spec).endswith(",root=/data/a,b/PACS")
    with pytest.raises(BioattnError, match="also a training domain"):
        DomainSpec("/data", ("photo", "sketch"), "photo")


def test_the_validation_split_is_held_out_of_training_and_the_test_domain_never_read(pacs):
    spec = DomainSpec(str(pacs), ("art_painting", "cartoon", "sketch"), "photo", 0.2, 0)
    train = build_dataset(str(spec), "train", 16, (0.5,) * 3, (0.5,) * 3, train=True)
    val = build_dataset(str(spec), "val", 16, (0.5,) * 3, (0.5,) * 3, classes=train.classes)
    test = build_dataset(str(spec), "test", 16, (0.5,) * 3, (0.5,) * 3, classes=train.classes)
    train_paths = {p for p, _ in train.samples}
    val_paths = {p for p, _ in val.samples}
    assert not train_paths & val_paths
    everything = {str(p) for d in spec.train for p in (pacs / d).rglob("*.png")}
    assert train_paths | val_paths == everything
    assert not any("/photo/" in p for p in train_paths | val_paths)
    assert {p for p, _ in test.samples} == {str(p) for p in (pacs / "photo").rglob("*.png")}
    # 20% of each class of each training domain (1 of 5), so every class is in both parts
    assert val.domain_sizes() == {d: len(PACS_CLASSES) for d in spec.train}
    assert len(train) == 3 * len(PACS_CLASSES) * (PER_CLASS - 1)
    image, label = train[0]
    assert image.shape == (3, 16, 16) and 0 <= label < 7
    # a domain's validation images do not depend on which domain is tested; the seed picks them
    other = DomainSpec(str(pacs), ("photo", "cartoon", "sketch"), "art_painting", 0.2, 0)
    val_other = build_dataset(str(other), "val", 16, (0.5,) * 3, (0.5,) * 3)
    assert ({p for p, _ in val_other.samples if "/cartoon/" in p}
            == {p for p, _ in val.samples if "/cartoon/" in p})
    reseeded = build_dataset(str(DomainSpec(str(pacs), spec.train, "photo", 0.2, 1)), "val", 16,
                             (0.5,) * 3, (0.5,) * 3)
    assert {p for p, _ in reseeded.samples} != val_paths


def test_init_loads_every_weight_but_a_classifier_of_another_size(tmp_path):
    torch.manual_seed(0)
    source = create_model("vit_micro_patch8_64", num_classes=10, img_size=32)
    torch.save({"model": source.state_dict()}, tmp_path / "release.pth")
    model = create_model("vit_micro_patch8_64", num_classes=7, img_size=32)
    head = model.head.weight.detach().clone()
    note = load_init_weights(model, tmp_path / "release.pth")
    assert "left out head.weight, head.bias" in note and "10 classes" in note
    assert torch.equal(model.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert torch.equal(model.head.weight, head)
    other = create_model("vit_micro_patch8_64", num_classes=7, img_size=64)
    note = load_init_weights(other, tmp_path / "release.pth")  # another input size: grid resampled
    assert "position embedding resized from 4x4 to 8x8" in note
    assert torch.equal(other.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    wide = create_model("vit_micro_patch8_64", num_classes=7, img_size=32, embed_dim=48)
    with pytest.raises(BioattnError, match="does not fit the model"):
        load_init_weights(wide, tmp_path / "release.pth")  # another model: refused


# ------------------------------------------------------------------------------------------
# the protocol end to end
# ------------------------------------------------------------------------------------------
def test_the_command_runs_all_four_splits_and_writes_the_table(pacs, tmp_path, capsys):
    out = tmp_path / "dg"
    assert main(["domains", "--data", str(pacs), "--models", "vit_micro_patch8_64", "--out", str(out),
                 *FAST]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    assert table in printed
    header = "| model | photo | art_painting | cartoon | sketch | mean |"
    assert header in table and "| test images | 35 | 35 | 35 | 35 | 140 in all |" in table
    (row,) = results["rows"]
    assert set(row["top1"]) == set(PACS_DOMAINS)
    assert row["mean_top1"] == pytest.approx(sum(row["top1"].values()) / 4)
    for domain in PACS_DOMAINS:
        run_dir = out / "vit_micro_patch8_64" / domain
        config = json.loads((run_dir / "config.json").read_text())
        spec = DomainSpec.parse(config["data"])
        assert spec.test == domain and domain not in spec.train  # never seen in training
        assert set(spec.train) == set(PACS_DOMAINS) - {domain}
        assert read_meta(run_dir / "best")["data"] == config["data"]
        run = row["runs"][domain]
        assert run["test_images"] == len(PACS_CLASSES) * PER_CLASS and run["selected_epoch"] == 1
    # a second call with the same settings reuses the finished runs (tests them again)
    assert main(["domains", "--data", str(pacs), "--models", "vit_micro_patch8_64", "--out", str(out),
                 "--test-domains", "sketch", *FAST]) == 0
    assert "reusing the finished run" in capsys.readouterr().out
    # other settings in an existing run directory are refused, not mixed
    assert main(["domains", "--data", str(pacs), "--models", "vit_micro_patch8_64", "--out", str(out),
                 "--test-domains", "sketch", *FAST, "--seed", "1"]) == 2
    assert "holds a run with other settings (seed 0 there, 1 here)" in capsys.readouterr().err


def test_the_python_api_puts_several_models_side_by_side(pacs, tmp_path):
    torch.manual_seed(0)
    init = tmp_path / "imagenet.pth"
    torch.save(create_model("vit_micro_patch8_64", num_classes=1000, img_size=32).state_dict(), init)
    results = leave_one_domain_out(
        ["vit_micro_patch8_64", "vit_micro_patch8_64[drop_rate=0.1]"], str(pacs), tmp_path / "dg",
        test_domains=["sketch", "photo"], init=str(init), log=None, **FAST_API)
    assert results["test_domains"] == ["sketch", "photo"]
    assert [row["label"] for row in results["rows"]] == ["vit_micro_patch8_64",
                                                         "vit_micro_patch8_64[drop_rate=0.1]"]
    assert results["rows"][1]["model_args"] == {"drop_rate": 0.1}
    assert results["classes"] == list(PACS_CLASSES)
    assert results["test_images"] == {"sketch": 35, "photo": 35}
    for row in results["rows"]:
        assert set(row["runs"]) == {"sketch", "photo"} and row["mean_top1"] is not None
        for run in row["runs"].values():
            assert 0 <= run["test_top1"] <= 100 and run["test_domain"] not in run["train_domains"]
    assert (tmp_path / "dg" / "vit_micro_patch8_64-drop_rate=0.1" / "photo" / "best").is_dir()
    config = json.loads((tmp_path / "dg" / "vit_micro_patch8_64" / "sketch" / "config.json").read_text())
    assert config["init"] == str(init)
    table = markdown_table(results)
    assert "| model | sketch | photo | mean |" in table
    assert table.count("| vit_micro_patch8_64") == 4  # two rows in each of the two tables
    assert json.loads((tmp_path / "dg" / "results.json").read_text())["rows"][1]["top1"] == results["rows"][1]["top1"]


def test_the_embedded_styles_are_domains_too(tmp_path, capsys):
    from bioattn.data.embedded import EMBEDDED_DOMAINS

    out = tmp_path / "dg"
    data = "embedded:size=32,train=32,val=8,test=8"
    assert main(["domains", "--data", data, "--models", "vit_micro_patch8_64", "--out", str(out),
                 *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_domains"] == list(EMBEDDED_DOMAINS)
    assert results["test_images"] == {d: 8 for d in EMBEDDED_DOMAINS}
    config = json.loads((out / "vit_micro_patch8_64" / EMBEDDED_DOMAINS[0] / "config.json").read_text())
    spec = DomainSpec.parse(config["data"])
    assert spec.root == data and EMBEDDED_DOMAINS[0] not in spec.train
    assert "| test images | 8 | 8 | 8 | 8 | 32 in all |" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# bad input: one error line, exit status 2, before any training
# ------------------------------------------------------------------------------------------
def _one_error(capsys, args) -> str:
    assert main(["domains", "--models", "vit_micro_patch8_64", *args, *FAST]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_a_pacs_root_without_a_domain_is_refused(pacs, tmp_path, capsys):
    root = _copy(pacs, tmp_path)
    shutil.rmtree(root / "cartoon")
    line = _one_error(capsys, ["--data", str(root), "--out", str(tmp_path / "dg")])
    assert f"PACS root {root} lacks the domain folder(s) cartoon" in line
    assert not (tmp_path / "dg").exists()


def test_a_class_missing_from_one_domain_is_refused(pacs, tmp_path, capsys):
    root = _copy(pacs, tmp_path)
    shutil.rmtree(root / "sketch" / "horse")
    line = _one_error(capsys, ["--data", str(root), "--out", str(tmp_path / "dg")])
    assert "class folder(s) horse missing from domain 'sketch'" in line
    assert "every domain must have the same classes" in line


def test_an_unknown_domain_name_is_refused(pacs, tmp_path, capsys):
    line = _one_error(capsys, ["--data", str(pacs), "--out", str(tmp_path / "dg"),
                               "--test-domains", "photo,skecth"])
    assert "unknown domain 'skecth'" in line and "photo, art_painting, cartoon, sketch" in line
    with pytest.raises(BioattnError, match="unknown domain 'clipart'"):
        build_dataset(str(DomainSpec(str(pacs), ("photo", "clipart"), "sketch")), "train", img_size=32)


def test_an_out_that_is_a_file_is_refused(pacs, tmp_path, capsys):
    (tmp_path / "dg").write_text("not a folder")
    line = _one_error(capsys, ["--data", str(pacs), "--out", str(tmp_path / "dg")])
    assert "--out must be a directory path, not an existing file" in line
    with pytest.raises(BioattnError, match="not an existing file"):
        leave_one_domain_out("vit_micro_patch8_64", str(pacs), tmp_path / "dg", log=None)


def test_bad_model_entries_are_refused_before_training(pacs, tmp_path, capsys):
    assert main(["domains", "--data", str(pacs), "--models", "vit_micro_patch8_64[depth", "--out",
                 str(tmp_path / "dg"), *FAST]) == 2
    assert "--models must be a comma-separated list of NAME or NAME[KEY=VALUE,...]" in capsys.readouterr().err
    assert main(["domains", "--data", str(pacs), "--models", "vit_micro_patch8_64,no_such_model",
                 "--out", str(tmp_path / "dg"), *FAST]) == 2
    assert "--models no_such_model: unknown model" in capsys.readouterr().err
    assert not (tmp_path / "dg").exists()
