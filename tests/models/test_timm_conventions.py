"""timm's model conventions, checked for every model bioattn registers.

The first part runs the checks of timm's own model tests (``tests/test_models.py`` of
pytorch-image-models: ``test_model_forward``, ``test_model_backward``,
``test_model_default_cfgs``, ``test_model_default_cfgs_non_std``, and the ``features_only``
wrapper of ``test_model_forward_features``) with the same assertions over bioattn's classifiers;
the rest checks bioattn's further conventions.

The ImageNet-size models are built shallower here (one or two blocks per stage) to keep the suite
fast on a CPU: the classes, widths, patch grids and input sizes are the registered ones.
"""

from __future__ import annotations

import copy
import fnmatch
import functools

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_model_data_config
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import group_parameters

import bioattn  # noqa: F401  (registers the models)
from bioattn.errors import BioattnError
from bioattn.models import create_model, data_config, list_models
from bioattn.models.common import embed_tokens
from bioattn.models.glimpse import GlimpseModel
from bioattn.models.inputs import InputConfig
from bioattn.protocol import (
    Glimpsing,
    MapProducing,
    ModelOutput,
    MultiReadout,
    ReadoutModel,
    TopDownSteerable,
    capable,
    compute_loss,
)

# every classifier (the segmenters, upernet_*, have their own tests in test_upernet.py)
NAMES = [n for n in list_models() if not n.startswith("upernet_")]
SHALLOW = {
    "absvit_tiny_patch16_224": dict(depth=2),
    "absvit_small_patch16_224": dict(depth=2),
    "absvit_base_patch16_224": dict(depth=2),
    "absvit_tiny_patch8_224_gap": dict(depth=2),
    "vit_tiny_patch8_224_gap": dict(depth=2),
    "deit_tiny_patch16_224_vars_d": dict(depth=2),
    "deit_small_patch16_224_vars_d": dict(depth=2),
    "deit_base_patch16_224_vars_d": dict(depth=2),
    "deit_tiny_patch16_224_vars_sd": dict(depth=2),
    "deit_small_patch16_224_vars_sd": dict(depth=2),
    "deit_base_patch16_224_vars_sd": dict(depth=2),
    "rvt_tiny": dict(depth=[2, 1]),
    "rvt_small": dict(depth=[2]),
    "rvt_base": dict(depth=[2]),
    "rvt_tiny_plus": dict(depth=[2, 1]),
    "rvt_small_plus": dict(depth=[2]),
    "rvt_base_plus": dict(depth=[2]),
    "gfnet_ti": dict(depth=2),
    "gfnet_xs": dict(depth=2),
    "gfnet_s": dict(depth=2),
    "gfnet_b": dict(depth=2),
    "gfnet_h_ti": dict(depth=[1, 1, 1, 1]),
    "gfnet_h_s": dict(depth=[1, 1, 1, 1]),
    "gfnet_h_b": dict(depth=[1, 1, 1, 1]),
}
TRANSFORMERS = [n for n in NAMES if n.startswith(("absvit_", "vit_", "rvt_", "deit_", "gfnet_"))]
GLIMPSE_POLICY = [n for n in NAMES if n.startswith(("rsrnn_", "retina_gru_", "crop_")) and n.endswith("_micro")]


@functools.cache
def _built(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **SHALLOW.get(name, {}))


def build(name: str) -> torch.nn.Module:
    """A fresh copy of the (shallow where listed) registered model."""
    return copy.deepcopy(_built(name))


def images(name: str, batch: int, side: int | None = None) -> torch.Tensor:
    c, h, w = timm.get_pretrained_cfg(name).input_size
    g = torch.Generator().manual_seed(batch)
    return torch.randn(batch, c, side or h, side or w, generator=g)


def fixation_parameters(model) -> set[str]:
    return set(model.fixation_parameter_names()) if isinstance(model, GlimpseModel) else set()


# ------------------------------------------------------------------------------------------
# timm's model tests
# ------------------------------------------------------------------------------------------
# timm's test_model_default_cfgs checks the unpooled NCHW feature maps against the cfg's
# pool_size; models without such maps take test_model_default_cfgs_non_std instead. timm lists
# 'vit_*' and 'deit*' there (ViT tokens); bioattn's other token models join them (AbSViT, a ViT;
# GFNet, (B, N, C) tokens like timm's '*mixer_*' and 'resmlp_*'), and so do the glimpse models,
# whose classifier reads a state vector, or (FF-CNN) pools inside its head.
NON_STD_FILTERS = ["vit_*", "deit*", "absvit_*", "gfnet_*", "rsrnn_*", "retina_gru_*", "retina_cnn_*", "crop_*",
                   "s3ta_*", "ffcnn_*"]
NON_STD = [n for n in NAMES if any(fnmatch.fnmatch(n, f) for f in NON_STD_FILTERS)]
STD = [n for n in NAMES if n not in NON_STD]
# timm's input sizes: models of a flexible size run at most at these sides
TARGET_FWD_SIZE = MAX_FWD_SIZE = 384
TARGET_BWD_SIZE = 128
MAX_BWD_SIZE = 320
MAX_FWD_OUT_SIZE = 448


def make(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, **kwargs)``, shallower where listed in SHALLOW."""
    torch.manual_seed(0)
    return timm.create_model(name, **SHALLOW.get(name, {}), **kwargs)


def input_size(model=None, name: str = "", target: int | None = None) -> tuple[int, int, int]:
    """timm's choice of input size: the cfg's if fixed, else capped at ``target``."""
    cfg = model.pretrained_cfg if model is not None else timm.get_pretrained_cfg(name).to_dict()
    size = cfg["input_size"]
    if cfg.get("fixed_input_size"):
        return size
    if cfg.get("min_input_size"):
        return cfg["min_input_size"] if target and max(size) > target else size
    return tuple(min(s, target) for s in size) if target and max(size) > target else size


def test_the_model_lists_cover_every_classifier():
    assert sorted(STD + NON_STD) == sorted(NAMES) and STD == [n for n in NAMES if n.startswith("rvt_")]


@pytest.mark.parametrize("name", NAMES)
def test_model_forward(name):
    """timm's test_model_forward: one image, no NaN; gradient checkpointing, where offered,
    changes nothing."""
    model = make(name, pretrained=False).eval()
    size = input_size(model, target=TARGET_FWD_SIZE)
    assert max(size) <= MAX_FWD_SIZE
    inputs = torch.randn(1, *size)
    outputs = model(inputs)
    assert outputs.shape[0] == 1
    assert not torch.isnan(outputs).any(), "Output included NaNs"
    try:
        model.set_grad_checkpointing()
    except Exception:
        pass  # not offered
    else:
        assert torch.allclose(outputs, model(inputs), rtol=1e-4, atol=1e-5), "Output does not match"


@pytest.mark.parametrize("name", NAMES)
def test_model_backward(name):
    """timm's test_model_backward: ``model(x).mean().backward()`` in train mode with 42 classes
    reaches every parameter. The one exception: a glimpse model's fixation networks learn from
    the policy term of bioattn's objective, not from the logits (tested below with the full
    objective)."""
    size = input_size(name=name, target=TARGET_BWD_SIZE)
    assert max(size) <= MAX_BWD_SIZE
    model = make(name, pretrained=False, num_classes=42)
    exempt = fixation_parameters(model)
    num_params = sum(p.numel() for n, p in model.named_parameters() if n not in exempt)
    model.train()
    outputs = model(torch.randn(2, *size))
    outputs.mean().backward()
    for n, p in model.named_parameters():
        if n not in exempt:
            assert p.grad is not None, f"No gradient for {n}"
    assert all(model.get_parameter(n).grad is None for n in exempt)
    num_grad = sum(p.grad.numel() for n, p in model.named_parameters() if p.grad is not None)
    assert model.num_classes == 42 and outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


def _classifier_and_first_conv_are_named(state_dict, cfg) -> None:
    if cfg.get("num_classes"):
        classifier = cfg["classifier"]
        for c in (classifier,) if not isinstance(classifier, (tuple, list)) else classifier:
            assert c + ".weight" in state_dict, f"{c} not in model params"
    first_conv = cfg["first_conv"]
    first_conv = (first_conv,) if isinstance(first_conv, str) else first_conv
    assert isinstance(first_conv, (tuple, list))
    for fc in first_conv:
        assert fc + ".weight" in state_dict, f"{fc} not in model params"


@pytest.mark.parametrize("name", STD)
def test_model_default_cfgs(name):
    """timm's test_model_default_cfgs: unpooled features on the cfg's pool_size grid with
    num_features channels, pre-logits of head_hidden_size, pooling and classifier removable."""
    model = make(name, pretrained=False).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.pretrained_cfg
    pool_size = cfg["pool_size"]
    size = cfg["input_size"]
    output_fmt = getattr(model, "output_fmt", "NCHW")
    spatial_axis = get_spatial_dim(output_fmt)
    assert len(spatial_axis) == 2
    feat_axis = get_channel_dim(output_fmt)
    assert all(x <= MAX_FWD_OUT_SIZE for x in size)
    input_tensor = torch.randn(1, *size)

    outputs = model.forward_features(input_tensor)
    outputs_pre = model.forward_head(outputs, pre_logits=True)
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]
    assert outputs.shape[feat_axis] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size

    model.reset_classifier(0)
    assert model.num_classes == 0
    outputs = model.forward(input_tensor)
    assert len(outputs.shape) == 2 and outputs.shape[1] == model.head_hidden_size
    assert outputs.shape == outputs_pre.shape

    model.reset_classifier(0, "")
    outputs = model.forward(input_tensor)
    assert len(outputs.shape) == 4
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]

    unpooled = make(name, pretrained=False, num_classes=0, global_pool="").eval()
    outputs = unpooled.forward(input_tensor)
    assert len(outputs.shape) == 4
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]
    _classifier_and_first_conv_are_named(state_dict, cfg)


@pytest.mark.parametrize("name", NON_STD)
def test_model_default_cfgs_non_std(name):
    """timm's test_model_default_cfgs_non_std: features with num_features channels (last axis of
    tokens, axis 1 otherwise), pre-logits of head_hidden_size, classifier removable."""
    model = make(name, pretrained=False).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.pretrained_cfg
    size = input_size(model)
    assert max(size) <= 320
    input_tensor = torch.randn(1, *size)
    feat_dim = getattr(model, "feature_dim", None)

    outputs = model.forward_features(input_tensor)
    outputs_pre = model.forward_head(outputs, pre_logits=True)
    assert torch.is_tensor(outputs)
    if feat_dim is None:
        feat_dim = -1 if outputs.ndim == 3 else 1
    assert outputs.shape[feat_dim] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size

    model.reset_classifier(0)
    assert model.num_classes == 0
    outputs = model.forward(input_tensor)
    assert outputs.shape[feat_dim] == model.head_hidden_size
    assert outputs.shape == outputs_pre.shape

    headless = make(name, pretrained=False, num_classes=0).eval()
    outputs = headless.forward(input_tensor)
    assert outputs.shape[feat_dim] == headless.num_features
    _classifier_and_first_conv_are_named(state_dict, cfg)


FEATURE_MODELS = ["vit_micro_patch8_64", "absvit_micro_patch8_64", "rvt_micro", "rvt_small",
                  "deit_tiny_patch16_224_vars_d", "gfnet_micro", "gfnet_h_micro"]


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_features_only(name):
    """``features_only=True`` wraps the model in timm's FeatureGetterNet over
    ``forward_intermediates`` (timm's test_model_forward_features checks), and the maps are the
    model's own intermediates."""
    model = make(name, pretrained=False, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 2
    size = input_size(model, target=96)
    x = torch.randn(1, *size)
    with torch.no_grad():
        outputs = model(x)
        plain = make(name, pretrained=False).eval()
        expected = plain.forward_intermediates(x, indices=model.out_indices, intermediates_only=True)
    assert len(outputs) == len(channels) == len(expected)
    for c, r, o, e in zip(channels, reductions, outputs, expected):
        assert o.shape == (1, c, -(-size[1] // r), -(-size[2] // r))
        assert not torch.isnan(o).any()
        torch.testing.assert_close(o, e)


@pytest.mark.parametrize("name", GLIMPSE_POLICY)
def test_fixation_networks_learn_from_the_full_objective(name):
    """The documented exception: the fixation networks get no gradient from ``model(x)``, and a
    gradient from bioattn's objective (``compute_loss`` on ``forward_readouts``)."""
    model = build(name).train()
    assert model.fixation_parameter_names()
    x, y = images(name, 2), torch.tensor([0, 1])
    out = ReadoutModel(model)(x)
    assert isinstance(out, ModelOutput) and out.readout_logits.shape[0] == model.num_glimpses
    compute_loss(model, out, y, torch.nn.CrossEntropyLoss()).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    for n in model.fixation_parameter_names():
        assert model.get_parameter(n).grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", ["absvit_micro_patch8_64", "rsrnn_micro"])
def test_readout_model_is_the_training_forward(name):
    model = build(name).train()
    x = images(name, 2)
    torch.manual_seed(0)
    wrapped = ReadoutModel(model)(x)
    torch.manual_seed(0)
    direct = model.forward_readouts(x)
    torch.testing.assert_close(wrapped.readout_logits, direct.readout_logits)
    torch.manual_seed(0)
    torch.testing.assert_close(model(x), direct.logits)


# ------------------------------------------------------------------------------------------
# classifier interface
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_classifier_interface(name):
    model = build(name).eval()
    cfg = model.pretrained_cfg
    x = images(name, 2)
    assert model.num_classes == cfg["num_classes"]
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), logits)
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        assert model.get_classifier() is model.get_submodule(cfg["classifier"])
        assert isinstance(model.get_submodule(cfg["first_conv"]), torch.nn.Conv2d)

        with pytest.raises(BioattnError, match="num_classes must be a whole number >= 0"):
            model.reset_classifier(-1)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_cfg_is_complete(name):
    cfg = timm.get_pretrained_cfg(name).to_dict()
    for key in ("input_size", "interpolation", "crop_pct", "mean", "std", "first_conv", "classifier",
                "num_classes", "fixed_input_size"):
        assert cfg.get(key) is not None, f"{name}: {key}"
    assert cfg.get("paper_name") or name.startswith(("rsrnn_", "ffcnn_")), name
    if name.startswith(("absvit_", "rvt_", "deit_", "gfnet_")):
        assert cfg["paper_ids"].startswith("arXiv:") and cfg["origin_url"].startswith("https://github.com/")
    resolved = data_config(name)
    assert resolved["input_size"] == cfg["input_size"] and resolved["mean"] == cfg["mean"]


@pytest.mark.parametrize("name", ["absvit_micro_patch8_64", "rvt_micro", "s3ta_micro"])
def test_data_config_is_timms(name):
    model = build(name)
    assert data_config(model) == resolve_model_data_config(model) == data_config(name)
    assert data_config(name, img_size=96)["input_size"] == (3, 96, 96)


def test_input_config_reads_the_models_data_config():
    # one resolution: the user's size first, then the checkpoint's metadata, then the model's own
    # timm data configuration, for a registered name or a built model alike
    cfg = data_config("absvit_micro_patch8_64")
    own = InputConfig(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"])
    model = create_model("absvit_micro_patch8_64")
    assert InputConfig.resolve("absvit_micro_patch8_64") == own == InputConfig.resolve(model)
    assert InputConfig.resolve("absvit_micro_patch8_64", img_size=96).img_size == 96
    meta = {"img_size": 48, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    assert InputConfig.resolve(model, meta) == InputConfig(48, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), cfg["crop_pct"])
    assert InputConfig.resolve(model, meta, img_size=40, crop_pct=0.9) == InputConfig(40, (0.5, 0.4, 0.3),
                                                                                       (0.2, 0.2, 0.2), 0.9)
    # a model built at another size reads at the size it was built for; an ImageNet model keeps
    # timm's centre crop
    assert InputConfig.resolve(create_model("rvt_micro", img_size=96)).img_size == 96
    assert InputConfig.resolve("rvt_tiny").crop_pct == data_config("rvt_tiny")["crop_pct"]


# ------------------------------------------------------------------------------------------
# input sizes
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_fixed_input_size_is_declared_exactly_where_needed(name):
    model = build(name).eval()
    side = model.pretrained_cfg["input_size"][-1]
    other = images(name, 1, side + 32)
    with torch.no_grad():
        if model.pretrained_cfg["fixed_input_size"]:
            with pytest.raises(BioattnError, match=rf"{side}x{side}"):
                model(other)
        else:
            out = model(other)
            assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("side", [160, 288])
def test_deit_vars_d_resamples_its_position_embedding(side):
    """At another image size the tokens entering the first block are the patch embedding plus
    the 14x14 position embedding resized bicubically (timm's dynamic size: antialiased, class
    token kept), computed here by hand with ``F.interpolate``; the maps are on the new grid."""
    model = build("deit_tiny_patch16_224_vars_d").eval()
    x = images("deit_tiny_patch16_224_vars_d", 1, side)
    grid = side // 16
    with torch.no_grad():
        patches = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        pos = model.pos_embed
        cells = pos[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(cells, size=(grid, grid), mode="bicubic", align_corners=False, antialias=True)
        expected = torch.cat([model.cls_token + pos[:, :1], patches + resized.flatten(2).transpose(1, 2)], dim=1)
        torch.testing.assert_close(embed_tokens(model, x), expected)
        maps = model.attention_maps(x)
    assert all(m.shape == (1, grid, grid) for m in maps.values())


# ------------------------------------------------------------------------------------------
# transformer families: optimiser groups, checkpointing, intermediates
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_weight_decay_groups_and_checkpointing(name):
    model = build(name).train()
    params = dict(model.named_parameters())
    assert set(model.no_weight_decay()) <= set(params) | {"pos_embed", "cls_token", "dist_token", "reg_token"}
    groups = group_parameters(model, model.group_matcher())
    grouped = [n for names in groups.values() for n in names]
    assert sorted(grouped) == sorted(params)
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert sorted(n for names in coarse.values() for n in names) == sorted(params)

    x = images(name, 2)
    model.eval()  # deterministic, with autograd on
    reference = model(x)
    model.set_grad_checkpointing(True)
    out = model(x)
    torch.testing.assert_close(out, reference)
    out.sum().backward()
    assert all(p.grad is not None for p in params.values())


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_forward_intermediates_and_feature_info(name):
    model = build(name).eval()
    x = images(name, 1)
    info = model.feature_info
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == len(info)
        for t, spec in zip(inter, info):
            assert t.shape == (1, spec["num_chs"], x.shape[-2] // spec["reduction"], x.shape[-1] // spec["reduction"])
        assert model.get_submodule(info[-1]["module"]) is not None
        last = model.forward_intermediates(x, indices=1, intermediates_only=True)
        assert len(last) == 1
        torch.testing.assert_close(last[0], inter[-1])
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[0])
        tokens = model.forward_intermediates(x, indices=[-1], output_fmt="NLC", intermediates_only=True) \
            if not name.startswith("rvt_") else None
        if tokens is not None:
            assert tokens[0].shape[1] == inter[-1].shape[-2] * inter[-1].shape[-1]
        torch.testing.assert_close(model.forward_head(final), model(x))
    n = len(info)
    for bad in ([n], [-n - 1], n + 1, 0):
        with pytest.raises(BioattnError, match="out of range|blocks"):
            model.forward_intermediates(x, indices=bad)


def test_absvit_intermediates_of_both_passes():
    model = build("absvit_micro_patch8_64").eval()
    x = images("absvit_micro_patch8_64", 2)
    with torch.no_grad():
        top_down = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt="NLC",
                                               intermediates_only=True)[0]
        feedforward = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt="NLC",
                                                  intermediates_only=True, top_down=False)[0]
        torch.testing.assert_close(top_down, model.forward_features(x)[:, model.num_prefix_tokens:])
        torch.testing.assert_close(feedforward, model.forward_feedforward(x)[:, model.num_prefix_tokens:])
        assert not torch.allclose(top_down, feedforward)
        prior = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt="NLC",
                                            intermediates_only=True, prior=torch.tensor([1, 2]), prior_scale=40)
        assert not torch.allclose(prior[0], top_down)
    with pytest.raises(BioattnError, match="cannot drop blocks"):
        model.prune_intermediate_layers(2)


@pytest.mark.parametrize("name", ["vit_micro_patch8_64", "rvt_tiny", "rvt_small", "deit_tiny_patch16_224_vars_d"])
def test_prune_intermediate_layers(name):
    model = build(name).eval()
    x = images(name, 1)
    with torch.no_grad():
        full = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
        kept = model.prune_intermediate_layers([0])
        assert kept == [0]
        pruned = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
    torch.testing.assert_close(pruned, full)
    assert model.num_classes == 0


# ------------------------------------------------------------------------------------------
# the rest of the declared interface
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("deit_")])
def test_fixed_random_features_are_buffers(name):
    model = build(name)
    attn = model.blocks[0].attn
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for key in ("blocks.0.attn.rand_matrix", "blocks.0.attn.L"):
        assert key not in params and key in buffers and key in model.state_dict()
    assert not hasattr(attn, "dictionary")
    fresh = build(name)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(fresh.blocks[0].attn.rand_matrix, attn.rand_matrix)


@pytest.mark.parametrize("name", NAMES)
def test_declared_capabilities(name):
    model = _built(name)
    readouts = name.startswith("absvit_") or isinstance(model, GlimpseModel)
    assert capable(model, MultiReadout) is readouts
    assert capable(model, Glimpsing) is isinstance(model, GlimpseModel)
    assert capable(model, TopDownSteerable) is name.startswith("absvit_")
    assert capable(model, MapProducing)
    assert capable(ReadoutModel(model), MultiReadout) is readouts


def test_rvt_global_pool_is_honoured():
    model = build("rvt_micro").eval()
    x = images("rvt_micro", 2)
    with torch.no_grad():
        pooled = model(x)
        model.reset_classifier(model.num_classes, global_pool="")
        maps = model(x)
    assert maps.shape == (2, model.num_classes, 4, 4)
    with pytest.raises(BioattnError, match="global_pool must be 'avg' or ''"):
        model.reset_classifier(3, global_pool="max")
    assert not torch.allclose(maps.mean(dim=(2, 3)), pooled)  # the norm comes before the pooling


def test_s3ta_and_ffcnn_take_no_sampling_flag():
    for name in ("s3ta_micro", "ffcnn_micro"):
        with pytest.raises(BioattnError, match="eval_sample"):
            create_model(name, eval_sample=True)


def test_plain_loop_trains_a_glimpse_model():
    """A timm-style step (``criterion(model(x), y)``) lowers the loss of a micro RS-RNN."""
    torch.manual_seed(0)
    model = create_model("rsrnn_micro", num_classes=2).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(8, 3, 64, 64)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
