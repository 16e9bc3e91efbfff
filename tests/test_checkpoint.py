import errno
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
    assert json.loads((tmp_path / "ck" / ckpt.META).read_text())["classes"] == ["x", "y", "z"]
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
