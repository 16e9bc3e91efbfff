"""The trainer and the evaluator on the other two tasks (segmentation, multi-label) and with a
class list: a run end to end through the task table, exact resume, and the bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from bioattn import checkpoint as ckpt
from bioattn.cli import main
from bioattn.errors import BioattnError
from bioattn.evaluate.saved import evaluate_checkpoint
from bioattn.train import TrainConfig, train
from conftest import killed_before_saving_epoch, make_image_folder

SEG_DATA = "embedded:seg,size=32,train=64,val=16,test=16"
MULTI_DATA = "embedded:multi,size=32,train=64,val=32,test=16"


def _config(data, out, **kw) -> TrainConfig:
    base = dict(model="vit_micro_patch8_64", data=data, output=str(out), img_size=32, epochs=2,
                batch_size=16, lr=1e-3, warmup_epochs=0, progress=False, tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def test_segmentation_run_builds_a_segmenter_and_selects_by_miou(tmp_path):
    result = train(_config(SEG_DATA, tmp_path / "run"))
    assert result["task"] == "segmentation" and result["metric"] == "val_miou"
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    for r in records:
        assert 0.0 <= r["val_miou"] <= 100.0 and 0.0 <= r["val_pixel_acc"] <= 100.0
        assert "train_pixel_acc" in r and "val_top1" not in r
    assert records[-1]["best_val_miou"] == max(r["val_miou"] for r in records)
    meta = ckpt.read_meta(tmp_path / "run" / "best")
    assert meta["model"] == "upernet_vit_micro_patch8_64" and meta["task"] == "segmentation"
    assert meta["classes"][0] == "background" and meta["num_classes"] == 11
    # the per-pixel logits have the input's size
    model = ckpt.load_model(tmp_path / "run" / "best")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 11, 32, 32)

    # the evaluator reads the task from the checkpoint and scores mIoU, whole and sliding windows
    whole = evaluate_checkpoint(tmp_path / "run" / "best", "clean", limit=8, progress=False)
    assert whole["task"] == "segmentation"
    clean = whole["results"]["clean"]
    assert 0.0 <= clean["miou"] <= 100.0 and len(clean["per_class"]) == 11
    # one window over the whole image: the same prediction
    slide = evaluate_checkpoint(tmp_path / "run" / "best", "clean", limit=8, progress=False,
                                inference="slide", slide_stride=16)
    assert slide["results"]["clean"]["mode"] == "slide"
    assert slide["results"]["clean"]["miou"] == pytest.approx(clean["miou"], abs=1e-6)
    with pytest.raises(BioattnError, match="score classifiers; a segmentation model has"):
        evaluate_checkpoint(tmp_path / "run" / "best", "pgd", limit=8, progress=False)


def test_segmentation_run_killed_then_resumed_ends_with_the_same_weights(tmp_path, monkeypatch):
    # the segmentation transforms draw random scales, crops and flips: resume must replay them
    kw = dict(random_resized_crop=True, hflip=0.5, color_jitter=0.4)
    full = train(_config(SEG_DATA, tmp_path / "full", **kw))

    with killed_before_saving_epoch(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        train(_config(SEG_DATA, tmp_path / "cut", **kw))
    torch.manual_seed(1234)
    resumed = train(TrainConfig(resume=str(tmp_path / "cut"), progress=False, tensorboard=False))
    assert resumed["best_val_miou"] == pytest.approx(full["best_val_miou"])
    a = ckpt.read_state_dict(tmp_path / "full" / "last")
    b = ckpt.read_state_dict(tmp_path / "cut" / "last")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_multilabel_run_trains_with_binary_cross_entropy_and_selects_by_map(tmp_path):
    result = train(_config(MULTI_DATA, tmp_path / "run", epochs=1))
    assert result["task"] == "multilabel" and result["metric"] == "val_map"
    record = result["metrics"]
    assert 0.0 <= record["val_map"] <= 100.0 and "val_f1_overall" in record and "val_loss" in record
    meta = ckpt.read_meta(tmp_path / "run" / "best")
    assert meta["task"] == "multilabel" and meta["model"] == "vit_micro_patch8_64"
    out = evaluate_checkpoint(tmp_path / "run" / "best", "clean", progress=False)
    clean = out["results"]["clean"]
    assert len(clean["per_class_ap"]) == 10 and 0 < clean["label_frequency_map"] < 100


def test_segmentation_refuses_mixup(tmp_path):
    with pytest.raises(BioattnError, match="--mixup 0.8: segmentation training does not use it"):
        train(_config(SEG_DATA, tmp_path / "run", mixup=0.8))
    assert not (tmp_path / "run").exists()


def _voc_tree(root, height: int, width: int, n: int = 5):
    """A VOC2012 tree of ``n`` ``height x width`` images (one for validation) whose label maps
    mark the bright half of each image as class 1."""
    import numpy as np
    from PIL import Image

    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True)
    names = [f"2007_{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        label = np.zeros((height, width), np.uint8)
        label[:, : width // 2 + i] = 1
        Image.fromarray((label[..., None] * 180 + 30 + 5 * i).repeat(3, -1).astype(np.uint8)).save(
            base / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(label, "L").save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[:-1]) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text(names[-1] + "\n")
    return root


def test_a_fixed_size_segmenter_is_validated_by_sliding_windows_of_its_size(tmp_path):
    from bioattn.evaluate.segmentation import slide_inference
    from bioattn.tasks.registry import get_task

    # validation images (40x56) larger than the model's input (32): a ViT backbone built for 32x32
    # runs on windows of 32, two thirds of a window apart, as mmsegmentation tests it
    root = _voc_tree(tmp_path / "voc", 40, 56)
    result = train(_config(f"voc:{root}", tmp_path / "run", epochs=1, batch_size=2))
    record = result["metrics"]
    assert record["epoch"] == 1 and 0.0 <= record["val_miou"] <= 100.0 and record["val_pixel_acc"] > 0
    model = result["model"].eval()
    images = torch.randn(2, 3, 40, 56)
    with pytest.raises(BioattnError, match="built for 32x32 inputs, got 40x56"):
        model(images)
    with torch.no_grad():
        predicted = get_task("segmentation").predict(model, images, 21)
        windows = slide_inference(model, images, (32, 32), (21, 21), 21)
    assert predicted.shape == (2, 21, 40, 56)
    torch.testing.assert_close(predicted, windows)
    # images of the model's size are seen whole
    with torch.no_grad():
        whole = model(images[..., :32, :32])
        torch.testing.assert_close(get_task("segmentation").predict(model, images[..., :32, :32], 21), whole)


def test_class_list_trains_on_the_listed_folders_only(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=8)
    listed = tmp_path / "classes.txt"
    listed.write_text("# two of three\nc\na\n")
    train(_config(str(data), tmp_path / "run", model="test_vit", classes=str(listed), epochs=1,
                  batch_size=8, recipe="small"))
    meta = ckpt.read_meta(tmp_path / "run" / "best")
    assert meta["classes"] == ["a", "c"] and meta["num_classes"] == 2


def test_class_list_naming_a_missing_class_is_one_error(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    listed = tmp_path / "classes.txt"
    listed.write_text("a\nzebra\n")
    code = main(["train", "--model", "test_vit", "--data", str(data), "--classes", str(listed),
                 "--img-size", "32", "--epochs", "1", "--output", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "zebra" in err[0]
