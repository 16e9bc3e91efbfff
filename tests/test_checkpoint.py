import json

import pytest
import torch
from torch import nn

from bioattn import checkpoint as ckpt
from bioattn.errors import BioattnError


class Small(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = nn.Linear(3, width)
        self.out = nn.Linear(width, 2)


def test_interrupted_swap_falls_back_to_old_copy(tmp_path):
    model = Small()
    ckpt.save_checkpoint(tmp_path / "last", model, {"model": "small"})
    (tmp_path / "last").rename(tmp_path / "last.old")  # the moment between the two renames
    state = ckpt.read_state_dict(tmp_path / "last")
    assert set(state) == set(model.state_dict())


def test_read_state_dict_accepts_official_pth_bare_pth_and_module_prefix(tmp_path):
    model = Small()
    sd = model.state_dict()
    torch.save({"model": sd, "epoch": 3}, tmp_path / "official.pth")
    torch.save(sd, tmp_path / "bare.pth")
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pth")
    for name in ("official.pth", "bare.pth", "ddp.pth"):
        loaded = ckpt.read_state_dict(tmp_path / name)
        assert set(loaded) == set(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_read_state_dict_errors_are_one_line(tmp_path):
    with pytest.raises(BioattnError, match="not found"):
        ckpt.read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BioattnError, match="cannot read checkpoint") as info:
        ckpt.read_state_dict(tmp_path / "corrupt.pth")
    assert "\n" not in str(info.value)


def test_check_state_dict_lists_at_most_ten_problems_then_a_count():
    model = Small()
    state = {f"extra.{i}": torch.zeros(1) for i in range(13)}
    state["fc.weight"] = torch.zeros(5, 3)  # mis-shaped
    with pytest.raises(BioattnError) as info:
        ckpt.check_state_dict(model, state)
    msg = str(info.value)
    assert "3 missing keys" in msg and "fc.bias" in msg
    assert "13 unexpected keys" in msg and "and 3 more" in msg
    assert "1 mis-shaped keys" in msg and "fc.weight (5, 3) vs (4, 3)" in msg


def test_save_and_load_model_roundtrip(tmp_path):
    import timm

    model = timm.create_model("test_vit", num_classes=3, img_size=32)
    meta = ckpt.model_meta("test_vit", {"num_classes": 3, "img_size": 32}, 3, ["x", "y", "z"], 32)
    ckpt.save_checkpoint(tmp_path / "ck", model, meta)
    # one metadata file, in timm's layout: the class names are its pretrained_cfg's label names
    written = json.loads((tmp_path / "ck" / ckpt.META).read_text())
    assert written["architecture"] == "test_vit" and written["pretrained_cfg"]["label_names"] == ["x", "y", "z"]
    assert ckpt.read_meta(tmp_path / "ck")["classes"] == ["x", "y", "z"]
    loaded = ckpt.load_model(tmp_path / "ck")
    x = torch.randn(2, 3, 32, 32)
    model.eval(), loaded.eval()
    assert torch.equal(model(x), loaded(x))
    with pytest.raises(BioattnError, match="holds a test_vit model"):
        ckpt.load_model(tmp_path / "ck", model_name="test_resnet")
    with pytest.raises(BioattnError, match="has 3 classes"):
        ckpt.load_model(tmp_path / "ck", num_classes=1000)


def test_load_weights_refuses_checkpoint_of_another_model(tmp_path):
    import timm

    other = timm.create_model("test_resnet", num_classes=3)
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    model = timm.create_model("test_vit", num_classes=3, img_size=32)
    with pytest.raises(BioattnError, match="does not fit the model"):
        ckpt.load_weights(model, tmp_path / "other.pth")


def test_load_model_returns_a_model_in_eval_mode(tmp_path):
    import timm

    model = timm.create_model("test_vit", num_classes=3, img_size=32).train()
    ckpt.save_checkpoint(tmp_path / "ck", model, ckpt.model_meta("test_vit", {"num_classes": 3, "img_size": 32}, 3))
    assert not ckpt.load_model(tmp_path / "ck").training
    assert not ckpt.load_model(None, "test_vit", num_classes=3, img_size=32).training


def test_convert_reads_the_number_of_classes_from_the_head(tmp_path):
    import timm

    released = timm.create_model("test_vit", num_classes=5, img_size=32)
    torch.save({"model": released.state_dict()}, tmp_path / "released.pth")
    notes = []
    dst = ckpt.convert_checkpoint(tmp_path / "released.pth", tmp_path / "ck", "test_vit", img_size=32,
                                  log=notes.append)
    assert notes == ["note: num_classes=5, read from the checkpoint's head.weight"]
    meta = ckpt.read_meta(dst)
    assert meta["num_classes"] == 5 and meta["model_args"]["num_classes"] == 5
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ckpt.load_model(dst)(x), released.eval()(x))
    # given explicitly, the number is checked, not inferred
    with pytest.raises(BioattnError, match="mis-shaped keys"):
        ckpt.convert_checkpoint(tmp_path / "released.pth", tmp_path / "other", "test_vit", img_size=32,
                                num_classes=7)


def test_convert_says_so_on_standard_error_by_default(tmp_path, capsys):
    import timm

    torch.save(timm.create_model("test_vit", num_classes=4, img_size=32).state_dict(), tmp_path / "bare.pth")
    ckpt.convert_checkpoint(tmp_path / "bare.pth", tmp_path / "ck", "test_vit", img_size=32)
    assert "num_classes=4" in capsys.readouterr().err


def test_load_model_reads_the_class_count_of_a_bare_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    released = ckpt.create_model("vit_micro_patch8_64", num_classes=5)
    path = tmp_path / "released.pth"
    torch.save({"model": released.state_dict()}, path)
    model = ckpt.load_model(path, "vit_micro_patch8_64")
    assert model.num_classes == 5 and not model.training
    assert "num_classes=5, read from the checkpoint's head.weight" in capsys.readouterr().err
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), released.eval()(x))
    with pytest.raises(BioattnError, match="does not fit"):
        ckpt.load_model(path, "vit_micro_patch8_64", num_classes=7)


def test_zoo_references_name_the_entry_folder_or_fail_in_one_line():
    from bioattn import zoo

    built = next(e for e in zoo.ZOO if e.is_built())
    assert ckpt.checkpoint_path(f"zoo:{built.name}") == built.folder
    state = ckpt.read_state_dict(f"zoo:{built.name}")
    assert state.keys() == ckpt.read_state_dict(built.folder / ckpt.WEIGHTS).keys()
    with pytest.raises(BioattnError, match="no zoo entry named 'nothing'"):
        ckpt.read_state_dict("zoo:nothing")
    unbuilt = zoo.ZooEntry("never_built", "rvt_micro")
    with pytest.raises(BioattnError, match="not built"):
        import unittest.mock

        with unittest.mock.patch.object(zoo, "ZOO", zoo.ZOO + (unbuilt,)):
            ckpt.checkpoint_path("zoo:never_built")


@pytest.mark.parametrize("name", ["absvit_micro_patch8_64", "rvt_micro_vars_d", "gfnet_micro", "rsrnn_micro",
                                  "s3ta_micro", "upernet_rvt_micro"])
def test_every_family_takes_the_class_count_of_a_bare_checkpoint(tmp_path, name):
    # the model is built once and its classifier reset to the checkpoint's classes (timm's
    # reset_classifier); the loaded model computes what the saved one did
    torch.manual_seed(0)
    released = ckpt.create_model(name, num_classes=5).eval()
    torch.save(released.state_dict(), tmp_path / "bare.pth")
    model = ckpt.load_model(tmp_path / "bare.pth", name)
    assert model.num_classes == 5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)
        want = released(x)
        torch.manual_seed(1)
        torch.testing.assert_close(model(x), want)


def test_one_metadata_file_that_timm_reads_and_older_checkpoints_still_load(tmp_path):
    import timm

    torch.manual_seed(0)
    model = ckpt.create_model("rvt_micro", num_classes=4).eval()
    meta = ckpt.model_meta("rvt_micro", {"num_classes": 4}, 4, ["a", "b", "c", "d"], 64, (0.2,) * 3, (0.3,) * 3,
                           data="embedded", epoch=7)
    folder = ckpt.save_checkpoint(tmp_path / "ck", model, meta)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert ckpt.read_meta(folder) == meta  # every fact comes back, bioattn's own ones included
    x = torch.randn(1, 3, 64, 64)
    through_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert list(through_timm.pretrained_cfg["mean"]) == [0.2] * 3
    assert through_timm.pretrained_cfg["label_names"] == list("abcd")
    with torch.no_grad():
        torch.testing.assert_close(through_timm(x), model(x))
    # a checkpoint written before, with model.json, reads and loads as it did
    (folder / ckpt.META).unlink()
    (folder / ckpt.LEGACY_META).write_text(json.dumps(meta))
    assert ckpt.read_meta(folder) == meta
    with torch.no_grad():
        torch.testing.assert_close(ckpt.load_model(folder)(x), model(x))
    # a run folder's settings, also config.json, are no checkpoint metadata
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "rvt_micro", "epochs": 3}))
    assert ckpt.read_meta(tmp_path / "run") is None
