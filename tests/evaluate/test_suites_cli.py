"""`bioattn eval` end to end on fake ImageNet-C/-A/-R/-Sketch trees and the embedded data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from bioattn.checkpoint import model_meta, save_checkpoint
from bioattn.cli import main
from bioattn.data.imagenet_classes import imagenet_wnids, subset_indices, subset_wnids
from bioattn.evaluate.imagenet import eval_transform
from bioattn.evaluate.mce import ALEXNET_ERRORS, CORRUPTIONS
from bioattn.metrics.accuracy import topk_predictions

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = 32


def _write_images(folder: Path, n: int, shape, rng) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benchmarks")
    rng = np.random.default_rng(0)
    wnids = imagenet_wnids()
    for c in CORRUPTIONS:
        for s in range(1, 6):
            for w in wnids[:2]:
                _write_images(root / "imagenet-c" / c / str(s) / w, 1, (36, 36), rng)
    for name, classes in (("imagenet-a", subset_wnids("imagenet-a")[:3]),
                          ("imagenet-r", subset_wnids("imagenet-r")[-2:]),
                          ("imagenet-sketch", (wnids[0], wnids[500]))):
        for w in classes:
            _write_images(root / name / w, 2, (40, 48), rng)
    return {name: root / name for name in ("imagenet-c", "imagenet-a", "imagenet-r", "imagenet-sketch")}


def _checkpoint(path: Path, num_classes: int, classes=None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = timm.create_model("test_convnext", num_classes=num_classes)
    meta = model_meta("test_convnext", {"num_classes": num_classes}, num_classes, classes=classes,
                      img_size=SIZE, mean=MEAN, std=STD)
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def imagenet_ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "in1k", 1000, classes=imagenet_wnids())


def _direct_top1(ckpt: Path, folder: Path, indices) -> float:
    from bioattn.checkpoint import load_model

    model = load_model(ckpt).eval()
    transform = eval_transform(SIZE, MEAN, STD, resize=True)
    wnids = imagenet_wnids()
    hits = total = 0
    for sub in sorted(folder.iterdir()):
        for f in sorted(sub.iterdir()):
            x = transform(Image.open(f).convert("RGB"))[None]
            with torch.no_grad():
                pred = topk_predictions(model(x), 1, indices)[0, 0].item()
            hits += pred == wnids.index(sub.name)
            total += 1
    return 100.0 * hits / total


def test_imagenet_benchmarks_end_to_end(trees, imagenet_ckpt, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", "--checkpoint", str(imagenet_ckpt), "--suite",
               "imagenet-c,imagenet-a,imagenet-r,imagenet-sketch", "--out", str(out),
               "--workers", "0", "--no-progress", "--batch-size", "4",
               *(x for name, p in trees.items() for x in (f"--{name}", str(p)))])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["bioattn_version"] and r["suites"] == ["imagenet-c", "imagenet-a", "imagenet-r", "imagenet-sketch"]
    weights = imagenet_ckpt / "model.safetensors"
    assert r["model"]["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert r["model"]["name"] == "test_convnext"
    res = r["results"]

    c = res["imagenet-c"]
    assert set(c["top1"]) == set(CORRUPTIONS)
    assert all(c["n"][k][str(s)] == 2 for k in CORRUPTIONS for s in range(1, 6))
    expected = [sum(1 - a / 100 for a in c["top1"][k].values()) / 5 / ALEXNET_ERRORS[k] for k in CORRUPTIONS]
    assert c["mce"] == pytest.approx(100 * sum(expected) / 15)
    assert c["mean_top1"] == pytest.approx(sum(c["corruption_top1"].values()) / 15)

    assert res["imagenet-a"]["n"] == 6 and res["imagenet-a"]["classes"] == 200
    assert res["imagenet-r"]["n"] == 4 and res["imagenet-sketch"]["classes"] == 1000
    assert res["imagenet-a"]["top1"] == pytest.approx(
        _direct_top1(imagenet_ckpt, trees["imagenet-a"], subset_indices("imagenet-a")))
    assert res["imagenet-sketch"]["top1"] == pytest.approx(
        _direct_top1(imagenet_ckpt, trees["imagenet-sketch"], None))

    stdout = capsys.readouterr().out
    assert "ImageNet-C mCE" in stdout and "ImageNet-A top-1" in stdout
    assert (tmp_path / "r.md").exists()
    png = tmp_path / "r_corruptions.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_severity_is_a_clear_error(trees, imagenet_ckpt, tmp_path, capsys):
    broken = tmp_path / "imagenet-c"
    shutil.copytree(trees["imagenet-c"] / "fog", broken / "fog")
    shutil.rmtree(broken / "fog" / "3")
    rc = main(["eval", "--checkpoint", str(imagenet_ckpt), "--suite", "imagenet-c", "--imagenet-c",
               str(broken), "--corruptions", "fog", "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "lacks severity folder(s) 3" in err and len(err.strip().splitlines()) == 1


def test_wrong_class_count_for_a_1000_class_benchmark(trees, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "ten", 10)
    rc = main(["eval", "--checkpoint", str(ckpt), "--suite", "imagenet-a", "--imagenet-a",
               str(trees["imagenet-a"]), "--workers", "0", "--no-progress"])
    assert rc == 2
    assert "imagenet-a needs a 1000-class ImageNet model, but the model has 10 classes" in capsys.readouterr().err


def test_unknown_wnid_folder_is_a_clear_error(trees, imagenet_ckpt, tmp_path, capsys):
    bad = tmp_path / "sketch"
    shutil.copytree(trees["imagenet-sketch"], bad)
    (bad / "cats").mkdir()
    rc = main(["eval", "--checkpoint", str(imagenet_ckpt), "--suite", "imagenet-sketch",
               "--imagenet-sketch", str(bad), "--workers", "0", "--no-progress"])
    assert rc == 2 and "not ImageNet-1k class wnids: cats" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--suite", "pgd", "--eps", "-0.01"], "--eps must be a list of a number > 0"),
    (["--suite", "fgsm", "--eps", "1/0"], "bad eps"),
    (["--suite", "clean,blur"], "--suite must be a comma-separated list of clean,"),
    (["--suite", "imagenet-r"], "needs its folder (--imagenet-r DIR)"),
    (["--suite", "clean"], "need a data set"),
])
def test_bad_eval_input(imagenet_ckpt, capsys, extra, message):
    rc = main(["eval", "--checkpoint", str(imagenet_ckpt), "--workers", "0", "--no-progress", *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


EMBEDDED = "embedded:size=32,train=8,val=12,test=8"


def test_clean_corruptions_and_attacks_on_embedded_data(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "emb", 10, classes=[f"c{i}" for i in range(10)])
    base = _checkpoint(tmp_path / "base", 10, seed=1)
    out = tmp_path / "e.json"
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", EMBEDDED, "--suite", "clean,corruptions,fgsm,pgd",
               "--corruptions", "fog,contrast", "--severities", "1,5", "--baseline-checkpoint", str(base),
               "--limit", "6", "--eps", "1/255,4/255", "--workers", "0", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    res = r["results"]
    assert res["clean"]["n"] == 6 and 0 <= res["clean"]["top1"] <= 100
    corr = res["corruptions"]
    assert corr["n"] == 6 and set(corr["top1"]) == {"fog", "contrast"} and set(corr["top1"]["fog"]) == {"1", "5"}
    assert "mce" in corr and "relative_mce" in corr and "baseline" in corr
    assert r["baseline_model"]["checkpoint"] == str(base)
    assert [run["eps"] for run in res["pgd"]["runs"]] == pytest.approx([1 / 255, 4 / 255])
    assert all(run["max_linf"] <= run["eps"] + 1e-6 for run in res["pgd"]["runs"] + res["fgsm"]["runs"])
    assert r["settings"]["severities"] == [1, 5] and r["model"]["data"] == EMBEDDED


def test_clean_suite_from_checkpoint_metadata_on_the_test_split_by_default(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "emb", 10)
    out = tmp_path / "clean.json"
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", EMBEDDED, "--suite", "clean",
               "--workers", "0", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    r = json.loads(out.read_text())
    assert r["results"]["clean"]["n"] == 8 and r["model"]["split"] == "test"
    assert f"Data: {EMBEDDED}, test split." in printed.out  # the report says what it scored
    assert f"Data: {EMBEDDED}, test split." in (tmp_path / "clean.md").read_text()
    assert set(r["results"]["clean"]) >= {"top1", "top5", "loss"}


def test_settings_object_and_keywords_evaluate_alike(tmp_path):
    from bioattn.config import SuiteSettings
    from bioattn.errors import BioattnError
    from bioattn.evaluate import evaluate_checkpoint

    ckpt = _checkpoint(tmp_path / "emb", 10)
    given = SuiteSettings(limit=4, eps=[2 / 255], progress=False)
    by_object = evaluate_checkpoint(ckpt, "clean", data=EMBEDDED, settings=given)
    by_keywords = evaluate_checkpoint(ckpt, "clean", data=EMBEDDED, limit=4, eps="2/255", progress=False)
    assert by_object["settings"] == by_keywords["settings"]
    assert by_object["results"]["clean"] == by_keywords["results"]["clean"]
    assert by_object["results"]["clean"]["n"] == 4
    # keywords replace the object's values; the object itself keeps its own
    both = evaluate_checkpoint(ckpt, "clean", data=EMBEDDED, settings=given, limit=6)
    assert both["results"]["clean"]["n"] == 6 and both["settings"]["eps"] == [2 / 255]
    assert given.limit == 4
    with pytest.raises(BioattnError, match="unknown evaluation setting"):
        evaluate_checkpoint(ckpt, "clean", data=EMBEDDED, settings=given, limits=6)
