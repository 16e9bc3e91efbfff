"""UperNet segmenters: the AbSViT backbone against the authors' segmentation backbone, the
decode head against mmsegmentation's UPerHead, the registrations, the objective, loading
ImageNet weights and top-down steering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from timm.models import group_parameters
from timm.optim import create_optimizer_v2

import bioattn  # noqa: F401  (registers the models)
from bioattn.errors import BioattnError
from bioattn.models import create_model, data_config, list_models
from bioattn.models.upernet import (
    FCNHead,
    UperHead,
    UperNetSegmenter,
    create_segmenter,
    default_indices,
    load_backbone_weights,
    resize_vit_pos_embed,
    segmenter_name,
)
from bioattn.protocol import ModelOutput, ReadoutModel, compute_loss

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
TOL = 1e-5
MICRO = [n for n in list_models("upernet_") if timm.get_pretrained_cfg(n).input_size[-1] == 64]
PAPER = [n for n in list_models("upernet_") if n not in MICRO]
# shallow versions of the paper-size backbones, to keep building them cheap
SHALLOW = {"rvt_tiny": dict(depth=[1, 1]), "rvt_small": dict(depth=[2])}


def golden() -> tuple[dict, dict, dict]:
    path = REFERENCE / "absvit_seg_backbone.safetensors"
    with safe_open(str(path), "pt") as fh:
        config = json.loads(fh.metadata()["config"])
    tensors = load_file(str(path))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return config, state, tensors


def golden_segmenter(img_size: int) -> UperNetSegmenter:
    config, _, _ = golden()
    args = {k: config[k] for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias")}
    torch.manual_seed(0)
    return create_segmenter("absvit_micro_patch8_64", 5, img_size=img_size, global_pool="token", **args)


def images(batch: int = 2, side: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def stronger_top_down(model: UperNetSegmenter) -> None:
    """Decoder weights as large as the golden file's (std 0.3), so that the prior visibly matters."""
    with torch.no_grad():
        for decoder in model.backbone.decoders:
            decoder.linear.weight.normal_(0, 0.3)
            decoder.linear2.weight.normal_(0, 0.3)


# ------------------------------------------------------------------------------------------
# the AbSViT backbone against the authors' ViT_Top_Down
# ------------------------------------------------------------------------------------------
def test_golden_features_at_construction_size():
    config, state, tensors = golden()
    assert config["out_indices"] == [0, 1, 2, 3] and config["transfer_type"] == "end2end"
    model = golden_segmenter(64).eval()
    model.backbone.load_state_dict(state, strict=True)
    assert model.indices == [0, 1, 2, 3]
    with torch.no_grad():
        levels = model.forward_levels(tensors["input_64"])
    for i, level in enumerate(levels):
        expected = tensors[f"features_64_{i}"]
        assert level.shape == expected.shape == (2, 48, 4, 4)
        assert (level - expected).abs().max().item() <= TOL, i


def test_golden_features_at_another_size_and_pos_embed_resize():
    """At 96 px the authors resize the 4x4 position embedding bicubically in forward; bioattn's
    backbone is built for 96 px and takes the resized embedding when the weights are loaded."""
    _, state, tensors = golden()
    model = golden_segmenter(96).eval()
    note = load_backbone_weights(model, state)
    assert "position embedding resized from 4x4 to 6x6" in note
    resized, _ = resize_vit_pos_embed(model.backbone, tensors["cls_pos_embed_4x4"])
    assert (resized - tensors["pos_embed_resized_6x6"]).abs().max().item() <= TOL
    # the class token's entry is kept, the grid changed
    torch.testing.assert_close(resized[:, 0], tensors["cls_pos_embed_4x4"][:, 0])
    with torch.no_grad():
        levels = model.forward_levels(tensors["input_96"])
    for i, level in enumerate(levels):
        expected = tensors[f"features_96_{i}"]
        assert level.shape == expected.shape == (2, 48, 6, 6)
        assert (level - expected).abs().max().item() <= TOL, i


def test_golden_features_come_from_the_top_down_pass():
    """The features differ from the feedforward pass's (the golden decoders were drawn large so
    that this is visible), and only the last level is normalised."""
    _, state, tensors = golden()
    model = golden_segmenter(64).eval()
    model.backbone.load_state_dict(state, strict=True)
    x = tensors["input_64"]
    with torch.no_grad():
        feedforward = model.backbone.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True,
                                                           top_down=False)
    assert (feedforward[0] - tensors["features_64_0"]).abs().max() > 0.1
    assert (feedforward[2] - tensors["features_64_2"]).abs().max() > 0.1


# ------------------------------------------------------------------------------------------
# the heads: mmsegmentation's UPerHead and FCNHead
# ------------------------------------------------------------------------------------------
def mmseg_uperhead(head: UperHead, inputs: list[torch.Tensor]) -> torch.Tensor:
    """mmsegmentation's ``UPerHead.forward`` written out, on the modules of ``head``."""
    decoder = head.decoder
    n = len(inputs)
    resize = lambda t, size: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    lateral_convs = [decoder.fpn_lateral_blocks[n - 2 - i].conv_norm_relu for i in range(n - 1)]
    fpn_convs = [decoder.fpn_conv_blocks[n - 2 - i] for i in range(n - 1)]
    x = inputs[-1]
    psp_outs = [x] + [resize(block(x), x.shape[2:]) for block in decoder.psp.blocks]
    laterals = [conv(inputs[i]) for i, conv in enumerate(lateral_convs)]
    laterals.append(decoder.psp.out_conv(torch.cat(psp_outs, dim=1)))
    for i in range(n - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
    fpn_outs = [fpn_convs[i](laterals[i]) for i in range(n - 1)] + [laterals[-1]]
    for i in range(n - 1, 0, -1):
        fpn_outs[i] = resize(fpn_outs[i], fpn_outs[0].shape[2:])
    feats = decoder.fusion_block(torch.cat(fpn_outs, dim=1))
    return head.conv_seg(head.dropout(feats))


def randomise_batch_norms(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_decode_head_computes_mmseg_uperhead():
    """smp's decoder without its input LayerNorms, with the dropout and classifier added here, is
    UPerHead's dataflow, on levels of four resolutions (a hierarchical backbone) and of one."""
    torch.manual_seed(0)
    head = UperHead([8, 16, 24, 32], num_classes=5, channels=16).eval()
    randomise_batch_norms(head)
    levels = [torch.randn(2, c, s, s) for c, s in ((8, 16), (16, 8), (24, 4), (32, 2))]
    with torch.no_grad():
        out = head(levels)
        expected = mmseg_uperhead(head, levels)
    assert out.shape == (2, 5, 16, 16)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # smp's own decoder normalises its inputs: that is what is switched off
    assert isinstance(head.decoder, UPerNetDecoder)
    assert all(isinstance(m, torch.nn.Identity) for m in head.decoder.feature_norms)


def test_decoder_matches_the_set_up():
    model = create_segmenter("vit_micro_patch8_64", 7, depth=12)
    assert model.indices == [2, 5, 8, 11] == default_indices(12)
    assert default_indices(4) == [0, 1, 2, 3] and default_indices(2) == [0, 1] and default_indices(6) == [0, 2, 3, 5]
    head = model.decode_head
    decoder = head.decoder
    assert [b[0].output_size for b in decoder.psp.blocks] == [1, 2, 3, 6]
    convs = {name: m for name, m in head.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for name, conv in convs.items():
        if name != "conv_seg":
            assert conv.out_channels == 512 and conv.bias is None, name
    assert all(b[1][0].in_channels == 96 for b in decoder.psp.blocks)
    assert decoder.psp.out_conv[0].in_channels == 96 + 4 * 512 and decoder.psp.out_conv[0].kernel_size == (3, 3)
    assert [b.conv_norm_relu[0].kernel_size for b in decoder.fpn_lateral_blocks] == [(1, 1)] * 3
    assert [b[0].kernel_size for b in decoder.fpn_conv_blocks] == [(3, 3)] * 3
    assert decoder.fusion_block[0].in_channels == 4 * 512 and decoder.fusion_block[0].kernel_size == (3, 3)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in head.modules()) == len(convs) - 1
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in head.modules())
    assert isinstance(head.dropout, torch.nn.Dropout2d) and head.dropout.p == 0.1
    assert head.conv_seg.kernel_size == (1, 1) and head.conv_seg.out_channels == 7
    assert abs(head.conv_seg.weight.std().item() - 0.01) < 0.003

    aux = model.auxiliary_head
    assert isinstance(aux, FCNHead)
    assert aux.conv[0].in_channels == 96 and aux.conv[0].out_channels == 256 and aux.conv[0].kernel_size == (3, 3)
    assert isinstance(aux.conv[1], torch.nn.BatchNorm2d) and isinstance(aux.conv[2], torch.nn.ReLU)
    assert isinstance(aux.dropout, torch.nn.Dropout2d) and aux.dropout.p == 0.1
    assert aux.conv_seg.out_channels == 7 and model.aux_weight == 0.4


def test_auxiliary_head_reads_the_last_level_and_outputs_match_the_input_size():
    torch.manual_seed(0)
    model = create_model("upernet_rvt_micro").eval()  # two stages at strides 8 and 16, any input size
    x = images(1, 72)
    seen = {}
    model.auxiliary_head.register_forward_hook(lambda m, args, out: seen.update(aux_in=args[0]))
    with torch.no_grad():
        levels = model.forward_levels(x)
        out = model.forward_readouts(x)
    assert [lv.shape[-1] for lv in levels] == [9, 5]
    assert seen["aux_in"] is not None and torch.equal(seen["aux_in"], levels[-1])
    assert out.logits.shape == out.extras["aux_logits"].shape == (1, 11, 72, 72)
    with torch.no_grad():
        torch.testing.assert_close(model(x), out.logits)
        # the last level, the backbone's final unit, passes through its final norm
        raw = model.backbone.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
        normed = model.backbone.norm(raw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(levels[-1], normed)


def test_an_isotropic_rvt_gives_four_block_levels_as_a_vit():
    """RVT-S has one stage of blocks, so the segmenter reads it as a plain ViT: 4 evenly spaced
    blocks, all at the stem's stride."""
    torch.manual_seed(0)
    model = create_model("upernet_rvt_small", depth=[8], img_size=64, num_classes=3).eval()
    assert model.indices == [1, 3, 5, 7] and model.in_channels == [384] * 4
    with torch.no_grad():
        levels = model.forward_levels(torch.randn(1, 3, 64, 64))
    assert [tuple(lv.shape[-2:]) for lv in levels] == [(4, 4)] * 4


def test_a_zoo_segmenter_loads_under_its_plain_name():
    """``<name>`` means ``<name>.<default tag>`` (timm's rule), head widths of the zoo entry
    included."""
    plain = timm.create_model("upernet_rvt_micro", pretrained=True).eval()
    tagged = timm.create_model("upernet_rvt_micro.embedded", pretrained=True).eval()
    assert plain.decode_head.decoder.psp.blocks[0][1][0].out_channels == 128
    for a, b in zip(plain.state_dict().values(), tagged.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# registrations
# ------------------------------------------------------------------------------------------
def test_registered_names():
    expected = {f"upernet_{b}" for b in (
        "vit_micro_patch8_64", "absvit_micro_patch8_64", "vit_micro_convstem_64", "absvit_micro_convstem_64",
        "rvt_micro", "rvt_micro_vars_d", "gfnet_micro",
        "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
        "absvit_tiny_patch16_224", "absvit_small_patch16_224", "absvit_base_patch16_224",
        "rvt_tiny", "rvt_small", "deit_tiny_patch16_224_vars_d", "deit_small_patch16_224_vars_d", "gfnet_ti")}
    assert set(list_models("upernet_")) == expected
    assert set(MICRO) == {n for n in expected if "micro" in n}
    assert segmenter_name("absvit_micro_patch8_64") == "upernet_absvit_micro_patch8_64"
    assert segmenter_name("upernet_rvt_micro") == "upernet_rvt_micro"


@pytest.mark.parametrize("name", MICRO)
def test_micro_segmenters_train(name):
    """Forward and backward at batch 2, 64 px: per-pixel logits at the input size, every
    parameter (backbone and both heads) reached by the objective."""
    torch.manual_seed(0)
    model = create_model(name).train()
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 64, 64) and model.num_classes == cfg["num_classes"] == 11
    assert model.decode_head.conv_seg.in_channels == 96 and model.auxiliary_head.conv_seg.in_channels == 48
    x = images()
    y = torch.randint(0, 11, (2, 64, 64), generator=torch.Generator().manual_seed(1))
    y[0, :8] = 255
    out = ReadoutModel(model)(x)
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, 11, 64, 64)
    loss = compute_loss(model, out, y, torch.nn.CrossEntropyLoss(ignore_index=255))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    for prefix in ("backbone.", "decode_head.", "auxiliary_head."):
        grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and sum(grads) > 0, prefix
    assert model(x).shape == (2, 11, 64, 64)
    assert data_config(model)["input_size"] == (3, 64, 64)


@pytest.mark.parametrize("name", PAPER)
def test_paper_size_segmenters_are_built_for_512(name):
    backbone = name.removeprefix("upernet_")
    depth = SHALLOW.get(backbone, dict(depth=2))
    model = create_model(name, **depth)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 512, 512) and model.num_classes == 150
    assert model.img_size == (512, 512)
    assert model.decode_head.conv_seg.in_channels == 512 and model.auxiliary_head.conv_seg.in_channels == 256
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["first_conv"].startswith("backbone.")
    assert isinstance(model.get_submodule(cfg["first_conv"]), torch.nn.Conv2d)
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    assert isinstance(model.backbone.get_classifier(), torch.nn.Identity)
    assert data_config(name)["input_size"] == (3, 512, 512)


def test_any_backbone_name_builds_a_segmenter():
    """An unregistered ``upernet_<backbone>``: the hierarchical GFNet's four stages (strides 4 to
    32) as the four levels."""
    torch.manual_seed(0)
    model = create_model("upernet_gfnet_h_micro", num_classes=3).eval()
    assert model.indices == [0, 1, 2, 3] and model.in_channels == [16, 32, 64, 96]
    assert model.pretrained_cfg["input_size"] == (3, 64, 64) and model.pretrained_cfg["architecture"] == \
        "upernet_gfnet_h_micro"
    with torch.no_grad():
        assert model(images(1)).shape == (1, 3, 64, 64)


def test_bad_backbones_and_arguments():
    for name in ("rsrnn_micro", "ffcnn_micro"):
        with pytest.raises(BioattnError, match=rf"^{name} has no feature maps") as info:
            create_segmenter(name, 3)
        assert "\n" not in str(info.value)
        with pytest.raises(BioattnError, match="has no feature maps"):
            create_model(f"upernet_{name}")
    with pytest.raises(BioattnError, match="unknown backbone 'nosuchnet'"):
        create_model("upernet_nosuchnet")
    with pytest.raises(BioattnError, match="num_classes >= 1"):
        create_segmenter("vit_micro_patch8_64", 0)
    with pytest.raises(BioattnError, match="out of range"):
        create_segmenter("vit_micro_patch8_64", 3, indices=[0, 6])
    with pytest.raises(BioattnError, match="var_loss needs an AbSViT backbone"):
        create_segmenter("vit_micro_patch8_64", 3, var_loss=True)
    with pytest.raises(BioattnError, match="prior_classes is for AbSViT"):
        create_segmenter("vit_micro_patch8_64", 3, prior_classes=10)
    model = create_model("upernet_vit_micro_patch8_64")
    with pytest.raises(BioattnError, match="built for 64x64 inputs, got 96x96"):
        model(images(1, 96))
    with pytest.raises(BioattnError, match=r"expects a batch of images \(B, 3, H, W\)"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(BioattnError, match="has no weights of its own"):
        timm.create_model("upernet_gfnet_micro", pretrained=True)
    # the zoo's segmenters load by name
    assert timm.create_model("upernet_vit_micro_patch8_64", pretrained=True).num_classes == 11


# ------------------------------------------------------------------------------------------
# objective
# ------------------------------------------------------------------------------------------
def test_compute_loss_weighs_the_auxiliary_head():
    torch.manual_seed(0)
    model = create_model("upernet_vit_micro_patch8_64", num_classes=4).train()
    ce = torch.nn.CrossEntropyLoss()
    main, aux = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    y = torch.randint(0, 4, (2, 8, 8))
    out = ModelOutput(logits=main, extras={"aux_logits": aux})
    expected = ce(main, y) + 0.4 * ce(aux, y)
    torch.testing.assert_close(model.compute_loss(out, y, ce), expected)
    with_backbone = ModelOutput(logits=main, aux_loss=torch.tensor(0.25), extras={"aux_logits": aux})
    torch.testing.assert_close(model.compute_loss(with_backbone, y, ce), expected + 0.25)
    # through the model: the two heads' real outputs
    x, y = images(), torch.randint(0, 4, (2, 64, 64))
    out = model.forward_readouts(x)
    assert out.aux_loss is None
    loss = compute_loss(model, out, y, ce)
    torch.testing.assert_close(loss, ce(out.logits, y) + 0.4 * ce(out.extras["aux_logits"], y))
    assert not torch.allclose(out.logits, out.extras["aux_logits"])


def test_absvit_variational_loss_on_request():
    torch.manual_seed(0)
    model = create_segmenter("absvit_micro_patch8_64", 3, var_loss=True).train()
    x = images()
    out = model.forward_readouts(x)
    assert out.aux_loss is not None and out.aux_loss.item() > 0
    record: list = []
    with torch.no_grad():
        model.backbone.forward_intermediates(x, indices=model.indices, intermediates_only=True, record=record)
        expected = model.backbone.variational_loss(record)
    torch.testing.assert_close(out.aux_loss.detach(), expected)
    assert model.eval().forward_readouts(x).aux_loss is None


# ------------------------------------------------------------------------------------------
# optimiser interface
# ------------------------------------------------------------------------------------------
def test_weight_decay_groups_and_checkpointing():
    torch.manual_seed(0)
    model = create_model("upernet_absvit_micro_patch8_64")
    params = dict(model.named_parameters())
    assert {"backbone.pos_embed", "backbone.cls_token"} <= model.no_weight_decay()
    groups = group_parameters(model, model.group_matcher())
    assert sorted(n for names in groups.values() for n in names) == sorted(params)
    last = groups[max(groups)]
    assert any(n.startswith("decode_head.") for n in last) and any(n.startswith("auxiliary_head.") for n in last)
    assert any(n.startswith("backbone.blocks.0.") for names in groups.values() for n in names)
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert sorted(n for names in coarse.values() for n in names) == sorted(params)
    optimiser = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    scales = {g["lr_scale"] for g in optimiser.param_groups}
    assert max(scales) == 1.0 and min(scales) < 1.0
    decayed = {id(p) for g in optimiser.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(params["backbone.pos_embed"]) not in decayed

    x = images()
    model.eval()
    reference = model(x)
    model.set_grad_checkpointing(True)
    assert model.backbone.grad_checkpointing
    torch.testing.assert_close(model(x), reference)


def test_reset_classifier():
    model = create_model("upernet_gfnet_micro").eval()
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.auxiliary_head.conv_seg.out_channels == 5
    with torch.no_grad():
        assert model(images(1)).shape == (1, 5, 64, 64)
    with pytest.raises(BioattnError, match="num_classes"):
        model.reset_classifier(-2)


# ------------------------------------------------------------------------------------------
# ImageNet weights into the backbone
# ------------------------------------------------------------------------------------------
def test_load_backbone_weights_from_a_classifier_of_another_size():
    torch.manual_seed(0)
    classifier = create_model("absvit_micro_patch8_64", num_classes=10)  # 64 px: 8x8 grid
    state = classifier.state_dict()
    model = create_model("upernet_absvit_micro_patch8_64", img_size=96)  # 12x12 grid
    note = load_backbone_weights(model, state)
    assert "\n" not in note and "from 8x8 to 12x12" in note and "head.weight, head.bias" in note
    backbone = model.backbone.state_dict()
    for key, value in state.items():
        if key.startswith("head."):
            continue
        if key == "pos_embed":
            assert value.shape != backbone[key].shape
            torch.testing.assert_close(backbone[key][:, 0], value[:, 0])
            grid = value[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
            resized = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False)
            torch.testing.assert_close(backbone[key][:, 1:], resized.permute(0, 2, 3, 1).reshape(1, 144, -1))
        else:
            assert torch.equal(backbone[key], value), key
    # keys under backbone. load the same way
    prefixed = {f"backbone.{k}": v for k, v in state.items()}
    other = create_model("upernet_absvit_micro_patch8_64", img_size=96)
    assert load_backbone_weights(other, prefixed) == note
    torch.testing.assert_close(other.backbone.pos_embed, model.backbone.pos_embed)


def test_released_absvit_layout_loads_into_the_segmenter():
    """A checkpoint with the keys and shapes of the authors' released AbSViT-Ti (224 px) loads
    into the 512-px segmenter: position embedding resized, classifier left out, nothing else."""
    shapes = json.loads((REFERENCE / "official_state_dicts.json").read_text())["absvit_tiny_patch16_224"]
    g = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=g) for key, shape in shapes.items()}
    model = create_model("upernet_absvit_tiny_patch16_224")
    note = load_backbone_weights(model, state)
    assert note.startswith("loaded 175 tensors") and "from 14x14 to 32x32" in note
    assert "left out the classifier (head.bias, head.weight)" in note
    assert torch.equal(model.backbone.prompt, state["prompt"])
    assert torch.equal(model.backbone.decoders[11].linear2.weight, state["decoders.11.linear2.weight"])


def test_load_backbone_weights_resizes_a_gfnet():
    torch.manual_seed(0)
    state = create_model("gfnet_micro").state_dict()
    model = create_model("upernet_gfnet_micro", img_size=96)
    note = load_backbone_weights(model, state)
    assert "resized (64 to 144 tokens)" in note
    assert torch.equal(model.backbone.blocks[0].mlp.fc1.weight, state["blocks.0.mlp.fc1.weight"])
    with torch.no_grad():
        assert model.eval()(images(1, 96)).shape == (1, 11, 96, 96)


def test_load_backbone_weights_refuses_a_wrong_checkpoint():
    model = create_model("upernet_absvit_micro_patch8_64")
    vit_state = create_model("vit_micro_patch8_64").state_dict()
    with pytest.raises(BioattnError, match="does not fit the model: .*missing keys: .*prompt") as info:
        load_backbone_weights(model, vit_state)
    assert "\n" not in str(info.value)
    with pytest.raises(BioattnError, match="segmentation heads"):
        load_backbone_weights(model, model.state_dict())
    wide = create_model("absvit_micro_patch8_64", embed_dim=48).state_dict()
    with pytest.raises(BioattnError, match="mis-shaped keys"):
        load_backbone_weights(model, wide)


# ------------------------------------------------------------------------------------------
# steering
# ------------------------------------------------------------------------------------------
def test_a_prior_steers_the_absvit_segmenter():
    torch.manual_seed(0)
    model = create_model("upernet_absvit_micro_patch8_64").eval()
    stronger_top_down(model)
    x = images()
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(96, generator=g), torch.randn(2, 96, generator=g)
    with torch.no_grad():
        prompt = model(x)
        steered_a = model(x, prior=a)
        steered_b = model(x, prior=b)
        explicit_prompt = model(x, prior=model.backbone.prompt)
    torch.testing.assert_close(explicit_prompt, prompt)
    assert (steered_a - prompt).abs().max() > 1e-3
    assert (steered_a - steered_b).abs().max() > 1e-3
    with pytest.raises(BioattnError, match="prior_classes=N"):
        model(x, prior=torch.tensor([1, 2]))


def test_class_priors_index_the_backbone_classifier():
    torch.manual_seed(0)
    classifier = create_model("absvit_micro_patch8_64", num_classes=10)
    model = create_model("upernet_absvit_micro_patch8_64", prior_classes=10).eval()
    note = load_backbone_weights(model, classifier.state_dict())
    assert "left out" not in note
    assert torch.equal(model.backbone.head.weight, classifier.head.weight)
    assert not model.backbone.head.weight.requires_grad
    stronger_top_down(model)
    x = images()
    with torch.no_grad():
        by_index = model(x, prior=torch.tensor([1, 4]))
        by_vector = model(x, prior=model.backbone.head.weight[[1, 4]])
        other = model(x, prior=torch.tensor([7, 2]))
    torch.testing.assert_close(by_index, by_vector)
    assert (by_index - other).abs().max() > 1e-3


def test_backbones_without_top_down_refuse_a_prior():
    model = create_model("upernet_vit_micro_patch8_64").eval()
    with pytest.raises(BioattnError, match="no top-down attention"):
        model(images(1), prior=torch.randn(96))
