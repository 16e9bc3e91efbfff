"""Loading a checkpoint with ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=path))``, through each family's ``checkpoint_filter_fn``: the
authors' released layouts (``tests/reference/*official_state_dicts.json``) as ``.pth`` files with
their ``model`` entry, and bioattn checkpoints (``model.safetensors``) of every family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import bioattn  # noqa: F401  (registers the models)
from bioattn.checkpoint import WEIGHTS, load_weights, model_meta, save_checkpoint
from bioattn.errors import BioattnError
from bioattn.models import checkpoint_filter_fn
from bioattn.models.common import unwrap_state_dict

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
OFFICIAL = json.loads((REFERENCE / "official_state_dicts.json").read_text())
GFNET_OFFICIAL = json.loads((REFERENCE / "gfnet_official_state_dicts.json").read_text())


def released_pth(tmp_path: Path, shapes: dict[str, list[int]], name: str = "released.pth"
                 ) -> tuple[Path, dict[str, torch.Tensor]]:
    """A state dict of the listed keys and shapes, saved as the authors' trainers do (the state
    dict under ``model``, next to the epoch)."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.rand(s, generator=g) + 0.5
             for k, s in shapes.items()}
    path = tmp_path / name
    torch.save({"model": state, "epoch": 299}, path)
    return path, state


def pretrained(name: str, path: Path, **kwargs) -> torch.nn.Module:
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


def assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


# ------------------------------------------------------------------------------------------
# the authors' releases
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, entry, kwargs", [
    ("absvit_tiny_patch16_224", "absvit_tiny_patch16_224", {}),
    ("rvt_tiny", "rvt_tiny[attention=vars_d]", dict(attention="vars_d")),
    ("rvt_small", "rvt_small[attention=vars_s]", dict(attention="vars_s")),
])
def test_released_absvit_and_vars_load_with_timm(tmp_path, name, entry, kwargs):
    path, state = released_pth(tmp_path, OFFICIAL[entry])
    assert_loaded(pretrained(name, path, **kwargs), state)


@pytest.mark.parametrize("name, entry", [("gfnet_h_ti", "gfnet-h-ti"), ("gfnet_ti", "gfnet-ti")])
def test_released_gfnet_loads_with_timm(tmp_path, name, entry):
    path, state = released_pth(tmp_path, GFNET_OFFICIAL[entry])
    assert_loaded(pretrained(name, path), state)


def test_released_gfnet_at_another_size_is_resized_as_by_load_state_dict(tmp_path):
    path, state = released_pth(tmp_path, GFNET_OFFICIAL["gfnet-ti"])
    model = pretrained("gfnet_ti", path, img_size=256)  # a 16x16 grid
    direct = timm.create_model("gfnet_ti", img_size=256)
    direct.load_state_dict(dict(state))  # the authors' resizing, in the model's own load_state_dict
    assert model.pos_embed.shape == (1, 256, 256)
    assert_loaded(model, direct.state_dict())


def test_released_layout_into_another_number_of_classes(tmp_path):
    """timm's convention: built for other classes than the cfg's, the classifier starts fresh."""
    path, state = released_pth(tmp_path, OFFICIAL["absvit_tiny_patch16_224"])
    model = pretrained("absvit_tiny_patch16_224", path, num_classes=10)
    assert model.head.weight.shape == (10, 192)
    assert torch.equal(model.prompt, state["prompt"]) and torch.equal(model.pos_embed, state["pos_embed"])


# ------------------------------------------------------------------------------------------
# bioattn checkpoints of every family
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", [
    ("absvit_micro_patch8_64", {}),
    ("vit_micro_patch8_64", {}),
    ("rvt_micro", dict(attention="vars_sd")),
    ("deit_tiny_patch16_224_vars_d", dict(depth=2, img_size=64)),
    ("gfnet_micro", dict(mixer="vars_s")),
    ("gfnet_h_micro", {}),
    ("rsrnn_micro", {}),
    ("s3ta_micro", {}),
    ("upernet_absvit_micro_patch8_64", {}),
])
def test_bioattn_checkpoint_loads_with_timm(tmp_path, name, kwargs):
    torch.manual_seed(0)
    source = timm.create_model(name, **kwargs)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # off its initialisation
    save_checkpoint(tmp_path / "ck", source, model_meta(name, kwargs, source.num_classes))
    torch.manual_seed(1)
    model = pretrained(name, tmp_path / "ck" / WEIGHTS, **kwargs)
    assert_loaded(model, source.state_dict())


def test_vit_checkpoint_of_another_size_is_resampled(tmp_path):
    """A 64-px ViT checkpoint into a 96-px model: the 8x8 position grid resized bicubically
    without antialiasing (the authors' segmentation backbone's resize), class token kept."""
    torch.manual_seed(0)
    source = timm.create_model("absvit_micro_patch8_64")
    torch.save({"model": source.state_dict()}, tmp_path / "micro.pth")
    model = pretrained("absvit_micro_patch8_64", tmp_path / "micro.pth", img_size=96)
    pos = source.pos_embed.detach()
    grid = F.interpolate(pos[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2), size=(12, 12), mode="bicubic",
                         align_corners=False).permute(0, 2, 3, 1).reshape(1, 144, -1)
    torch.testing.assert_close(model.pos_embed.detach(), torch.cat([pos[:, :1], grid], dim=1))
    torch.testing.assert_close(model.decoders[3].linear.weight, source.decoders[3].linear.weight)


def test_segmenter_takes_a_classifier_checkpoint_into_its_backbone(tmp_path):
    torch.manual_seed(0)
    classifier = timm.create_model("gfnet_micro")
    torch.save({"model": classifier.state_dict()}, tmp_path / "gfnet.pth")
    model = pretrained("upernet_gfnet_micro", tmp_path / "gfnet.pth")
    backbone = model.backbone.state_dict()
    assert all(torch.equal(backbone[k], v) for k, v in classifier.state_dict().items() if not k.startswith("head."))


def test_features_only_with_weights(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("gfnet_h_micro")
    torch.save({"model": source.state_dict()}, tmp_path / "h.pth")
    features = pretrained("gfnet_h_micro", tmp_path / "h.pth", features_only=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source.eval().forward_intermediates(x, intermediates_only=True)
        for got, want in zip(features.eval()(x), expected):
            torch.testing.assert_close(got, want)


def test_bioattn_loaders_use_the_same_filter(tmp_path):
    """``load_weights`` adapts a checkpoint of another size like timm's loader does."""
    torch.manual_seed(0)
    source = timm.create_model("vit_micro_patch8_64")
    torch.save({"model": source.state_dict()}, tmp_path / "vit.pth")
    via_timm = pretrained("vit_micro_patch8_64", tmp_path / "vit.pth", img_size=96)
    via_bioattn = load_weights(timm.create_model("vit_micro_patch8_64", img_size=96), tmp_path / "vit.pth")
    assert_loaded(via_bioattn, via_timm.state_dict())
    notes = []
    checkpoint_filter_fn({"model": source.state_dict()}, via_bioattn, notes)
    assert notes == ["position embedding resized from 8x8 to 12x12"]


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_checkpoint_of_another_number_of_classes_is_refused(tmp_path):
    source = timm.create_model("rvt_micro", num_classes=3)
    torch.save({"model": source.state_dict()}, tmp_path / "three.pth")
    with pytest.raises(BioattnError) as info:
        pretrained("rvt_micro", tmp_path / "three.pth")
    assert "classifier (head.weight) is for 3 classes, the model's for 10" in one_line(info)
    model = timm.create_model("rvt_micro", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "three.pth"), num_classes=3))
    assert_loaded(model, source.state_dict())


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    torch.save({"model": timm.create_model("vit_micro_patch8_64").state_dict()}, tmp_path / "vit.pth")
    with pytest.raises(BioattnError, match="does not fit the model: .*missing keys: .*prompt") as info:
        pretrained("absvit_micro_patch8_64", tmp_path / "vit.pth")
    one_line(info)
    path, _ = released_pth(tmp_path, GFNET_OFFICIAL["gfnet-xs"])
    with pytest.raises(BioattnError, match=r"mis-shaped keys.*pos_embed \(1, 196, 384\) vs \(1, 196, 256\)"):
        pretrained("gfnet_ti", path)


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(BioattnError, match="has no weights of its own.*pretrained_cfg_overlay=dict"):
        timm.create_model("gfnet_h_micro", pretrained=True)
    with pytest.raises(BioattnError, match="checkpoint not found"):
        pretrained("rsrnn_micro", tmp_path / "missing.pth")
    with pytest.raises(BioattnError, match="is a directory"):
        pretrained("upernet_vit_micro_patch8_64", tmp_path)
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(BioattnError, match="holds no state dict of tensors"):
        unwrap_state_dict(torch.load(tmp_path / "empty.pth", weights_only=True))


def test_unwrapping_takes_off_wrapper_prefixes():
    state = {"module._orig_mod.head.weight": torch.zeros(2), "_orig_mod.pos_embed": torch.ones(1)}
    assert set(unwrap_state_dict({"model": state})) == {"head.weight", "pos_embed"}
