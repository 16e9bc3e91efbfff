"""GFNet: exactness against the authors' code, the released state-dict layouts, checkpoints of
another image size, the VARS mixers (reuse of VARS-S, maps, trainer hook) and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

import bioattn  # noqa: F401  (registers the models)
from bioattn.checkpoint import load_weights
from bioattn.errors import BioattnError
from bioattn.models import create_model, list_models
from bioattn.models.gfnet import (
    MIXERS,
    OFFICIAL_NAMES,
    GFNet,
    GFNetPyramid,
    GlobalFilter,
    StaticFilterDictionary,
)
from bioattn.models.rvt import VARSSBlock
from bioattn.models.vars import VARSDAttention, VARSSDAttention
from bioattn.protocol import MapProducing, after_train_step, capable

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
TOL = 1e-5
OFFICIAL = json.loads((REFERENCE / "gfnet_official_state_dicts.json").read_text())


def golden(name: str) -> tuple[dict, dict, dict]:
    path = REFERENCE / f"{name}.safetensors"
    with safe_open(str(path), "pt") as fh:
        config = json.loads(fh.metadata()["config"])
    tensors = load_file(str(path))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return config, state, tensors


def golden_model(name: str) -> tuple[torch.nn.Module, dict]:
    config, state, tensors = golden(name)
    assert config.pop("norm_layer") == "LayerNorm(eps=1e-6)"  # bioattn's GFNet norms use eps 1e-6
    cls = GFNetPyramid if name == "gfnet_h_small_cfg" else GFNet
    model = cls(**config).eval()
    model.load_state_dict(state, strict=True)
    return model, tensors


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------------
# exactness and layouts
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gfnet_small_cfg", "gfnet_h_small_cfg"])
def test_golden_logits_and_features(name):
    """The official GFNet / GFNetPyramid's eval logits and pooled features, within 1e-5."""
    model, tensors = golden_model(name)
    assert tensors["logits"].abs().max() > 0.1  # a non-trivial reference
    with torch.no_grad():
        logits = model(tensors["input"])
        features = model.forward_head(model.forward_features(tensors["input"]), pre_logits=True)
    assert max_err(logits, tensors["logits"]) <= TOL
    assert max_err(features, tensors["features"]) <= TOL


@pytest.mark.parametrize("name", sorted(OFFICIAL_NAMES))
def test_official_state_dict_layouts(name):
    """Every released architecture has the official keys and shapes at 224 px, one for one, and
    a state dict built from the listed shapes loads strictly."""
    shapes = OFFICIAL[OFFICIAL_NAMES[name]]
    with torch.device("meta"):
        model = timm.create_model(name)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == shapes
    state = {k: torch.zeros(shape, device="meta") for k, shape in shapes.items()}
    model.load_state_dict(state, strict=True, assign=True)


def test_released_checkpoint_loads_with_load_weights(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.rand(s, generator=gen) for k, s in OFFICIAL["gfnet-h-ti"].items()}
    torch.save({"model": state, "epoch": 299}, tmp_path / "gfnet-h-ti.pth")
    model = load_weights(create_model("gfnet_h_ti", depth=[3, 3, 10, 3]), tmp_path / "gfnet-h-ti.pth")
    torch.testing.assert_close(model.blocks[2][9].filter.complex_weight, state["blocks.2.9.filter.complex_weight"])


def test_registered_models_and_cfgs():
    names = [n for n in list_models("gfnet") if not n.startswith("upernet_")]
    assert set(OFFICIAL_NAMES) | {"gfnet_micro", "gfnet_micro_vars_s", "gfnet_h_micro"} == set(names)
    for name in names:
        cfg = timm.get_pretrained_cfg(name).to_dict()
        assert cfg["fixed_input_size"] is True
        # GFNet's paper, and VARS's beside it where the mixer is VARS-S
        assert cfg["paper_ids"].split(",")[0] == "arXiv:2107.00645"
        assert ("arXiv:2204.10962" in cfg["paper_ids"]) == name.endswith("_vars_s")
        assert cfg["origin_url"] == "https://github.com/raoyongming/GFNet"
    assert timm.get_pretrained_cfg("gfnet_micro").input_size == (3, 64, 64)
    assert timm.get_pretrained_cfg("gfnet_h_micro").num_classes == 10


def test_training_script_arguments():
    """Drop-path and layer-scale settings of the official training script."""
    model = create_model("gfnet_h_b", depth=[3, 3, 27, 3])
    assert model.blocks[0][0].gamma.detach().unique().tolist() == pytest.approx([1e-6])
    assert model.blocks[3][2].drop_path.drop_prob == pytest.approx(0.4)
    assert create_model("gfnet_h_ti", depth=[1, 1, 1, 1]).blocks[0][0].gamma[0].item() == pytest.approx(1e-3)
    assert create_model("gfnet_s").blocks[-1].drop_path.drop_prob == pytest.approx(0.15)


# ------------------------------------------------------------------------------------------
# other image sizes
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gfnet_small_cfg", "gfnet_h_small_cfg"])
def test_checkpoint_of_another_size_is_resized_as_the_authors_do(name):
    """A 64-px checkpoint loaded into a 96-px model: position embedding bicubic over the token
    grid (align_corners=False), each complex_weight bicubic over its frequency grid with real and
    imaginary parts as channels, to (h, w//2+1), align_corners=True."""
    config, state, tensors = golden(name)
    config.pop("norm_layer")
    config["img_size"] = 96
    cls = GFNetPyramid if name == "gfnet_h_small_cfg" else GFNet
    model = cls(**config).eval()
    model.load_state_dict(dict(state), strict=True)

    pos = state["pos_embed"]
    side, new_side = int(pos.shape[1] ** 0.5), model.grids[0][0]
    expected = F.interpolate(pos.reshape(1, side, side, -1).permute(0, 3, 1, 2), size=(new_side, new_side),
                             mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, pos.shape[2])
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    key = next(k for k in state if k.endswith("complex_weight"))
    weight = state[key]
    h, w, c, _ = weight.shape
    target = model.state_dict()[key]
    nh, nw = target.shape[:2]
    assert (nh, nw) == (h * 96 // 64, h * 96 // 64 // 2 + 1)
    expected = F.interpolate(weight.reshape(1, h, w, c * 2).permute(0, 3, 1, 2), size=(nh, nw),
                             mode="bicubic", align_corners=True).permute(0, 2, 3, 1).reshape(nh, nw, c, 2)
    torch.testing.assert_close(target, expected)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 96))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_model_built_for_another_size():
    model = create_model("gfnet_ti", img_size=160, depth=1)
    assert model.blocks[0].filter.complex_weight.shape == (10, 6, 256, 2)
    assert model.pretrained_cfg["input_size"] == (3, 160, 160)
    assert model(torch.randn(1, 3, 160, 160)).shape == (1, 1000)


# ------------------------------------------------------------------------------------------
# the global filter
# ------------------------------------------------------------------------------------------
def test_global_filter_is_a_circular_convolution():
    """Per channel, the filter is linear and commutes with circular shifts of the token grid."""
    torch.manual_seed(0)
    filt = GlobalFilter(4, (6, 6))
    x = torch.randn(2, 36, 4)

    def grid(t):
        return t.view(2, 6, 6, 4)

    shifted = torch.roll(grid(x), shifts=(2, 1), dims=(1, 2)).reshape(2, 36, 4)
    torch.testing.assert_close(grid(filt(shifted)), torch.roll(grid(filt(x)), shifts=(2, 1), dims=(1, 2)))
    y = torch.randn(2, 36, 4)
    torch.testing.assert_close(filt(2 * x + y), 2 * filt(x) + filt(y))


# ------------------------------------------------------------------------------------------
# VARS mixers
# ------------------------------------------------------------------------------------------
def test_vars_s_mixer_is_vars_s_blocks_reconstruction():
    """The GFNet VARS-S mixer is the attention part of RVT's VARS-S block, weight for weight."""
    torch.manual_seed(0)
    block = VARSSBlock(8, (4, 4), lam=0.1, num_step=3)
    mixer = StaticFilterDictionary(8, (4, 4), lam=0.1, num_step=3)
    shared = {k: v for k, v in block.state_dict().items() if k in mixer.state_dict()}
    assert set(shared) == set(mixer.state_dict())
    mixer.load_state_dict(shared, strict=True)
    x = torch.randn(2, 16, 8)
    out = mixer(x)
    assert out.abs().max() > 0.01  # codes above the threshold
    torch.testing.assert_close(out, block.reconstruct(x))


def test_vars_s_without_iterations_or_shrinkage_is_a_global_filter():
    torch.manual_seed(0)
    mixer = StaticFilterDictionary(4, (6, 6), lam=0.0, num_step=0)
    x, y = torch.randn(2, 36, 4), torch.randn(2, 36, 4)
    with torch.no_grad():
        mixer.v.bias.zero_()
        torch.testing.assert_close(mixer(2 * x + y), 2 * mixer(x) + mixer(y), atol=1e-5, rtol=1e-5)
        shifted = torch.roll(x.view(2, 6, 6, 4), shifts=(1, 3), dims=(1, 2)).reshape(2, 36, 4)
        torch.testing.assert_close(mixer(shifted).view(2, 6, 6, 4),
                                   torch.roll(mixer(x).view(2, 6, 6, 4), shifts=(1, 3), dims=(1, 2)),
                                   atol=1e-5, rtol=1e-5)


MIXER_TYPES = {"filter": GlobalFilter, "vars_s": StaticFilterDictionary, "vars_d": VARSDAttention,
               "vars_sd": VARSSDAttention}


@pytest.mark.parametrize("name", ["gfnet_micro", "gfnet_h_micro"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_mixers_train_and_draw_maps(name, mixer):
    torch.manual_seed(0)
    model = create_model(name, mixer=mixer).train()
    assert all(type(m.filter) is MIXER_TYPES[mixer] for m in model.modules() if hasattr(m, "mlp"))
    x = torch.randn(2, 3, 64, 64)
    model(x).logsumexp(dim=1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert capable(model, MapProducing)
    model.eval()
    maps = model.attention_maps(x)
    grid = model.grids[0]
    if mixer == "filter":
        assert list(maps) == ["filter response"]
    else:
        steps = {"vars_s": 3, "vars_d": 5, "vars_sd": 5}[mixer]
        assert list(maps) == [f"iteration {t}" for t in range(steps + 1)]
        assert not torch.allclose(maps["iteration 0"], maps[f"iteration {steps}"])
    for m in maps.values():
        assert m.shape == (2, *grid) and (m >= 0).all() and torch.isfinite(m).all()
    torch.testing.assert_close(model.saliency(x), next(reversed(maps.values())))


def test_maps_of_other_blocks_and_stages():
    model = create_model("gfnet_h_micro", mixer="vars_s", num_step=2).eval()
    x = torch.randn(1, 3, 64, 64)
    maps = model.attention_maps(x, stage=2, block=0)
    assert list(maps) == ["iteration 0", "iteration 1", "iteration 2"]
    assert maps["iteration 2"].shape == (1, 4, 4)
    with pytest.raises(BioattnError, match="stage 4 out of range"):
        model.attention_maps(x, stage=4)
    with pytest.raises(BioattnError, match="block 5 out of range"):
        create_model("gfnet_micro").attention_maps(x, block=5)


def test_vars_s_step_size_follows_the_trainer_hook():
    model = create_model("gfnet_micro", mixer="vars_s")
    mixer = model.blocks[0].filter
    with torch.no_grad():
        mixer.kernel.mul_(2)
    before = mixer.L.clone()
    after_train_step(model, 100)
    assert (mixer.L > before).all()


def test_vars_arguments_reach_the_mixer():
    model = create_model("gfnet_micro", mixer="vars_d", lam=0.5, num_step=2, num_heads=4)
    attn = model.blocks[0].filter
    assert (attn.lam, attn.num_step, attn.num_heads) == (0.5, 2, 4)
    model = create_model("gfnet_ti", depth=1, mixer="vars_sd")
    assert model.blocks[0].filter.num_tokens == 196


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_checkpoint_of_another_variant_is_refused(tmp_path):
    """gfnet_xs weights into gfnet_ti: one error naming the mis-shaped keys, from load_weights
    and from the model's own load_state_dict."""
    state = {k: torch.zeros(s) for k, s in OFFICIAL["gfnet-xs"].items()}
    torch.save({"model": state}, tmp_path / "gfnet-xs.pth")
    model = create_model("gfnet_ti")
    with pytest.raises(BioattnError, match=r"mis-shaped keys.*pos_embed \(1, 196, 384\) vs \(1, 196, 256\)"):
        load_weights(model, tmp_path / "gfnet-xs.pth")
    with pytest.raises(BioattnError, match=r"another variant.*blocks\.0\.filter\.complex_weight \(14, 8, 384, 2\)"):
        model.load_state_dict(state)
    hierarchical = {k: torch.zeros(s) for k, s in OFFICIAL["gfnet-h-ti"].items()}
    with pytest.raises(BioattnError, match="missing keys.*unexpected keys"):
        model.load_state_dict(hierarchical)


def test_unknown_mixer():
    with pytest.raises(BioattnError, match="unknown mixer 'attention'; choose one of filter, vars_s"):
        create_model("gfnet_micro", mixer="attention")
    with pytest.raises(BioattnError, match="unknown mixer"):
        GFNetPyramid(img_size=64, mixer="self-att")


def test_input_of_the_wrong_size():
    model = create_model("gfnet_micro")
    with pytest.raises(BioattnError, match=r"built for 64x64 inputs .* got 96x96"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(BioattnError, match=r"expects a batch of images \(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(BioattnError, match="does not tile"):
        create_model("gfnet_micro", img_size=60)
    with pytest.raises(BioattnError, match="num_step must be a whole number"):
        create_model("gfnet_micro", mixer="vars_s", num_step=-1)
