"""AbSViT and its ViT twins: exactness against the authors' code, protocol, priors, checkpoints."""

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
from bioattn import cli
from bioattn.checkpoint import convert_checkpoint, load_model, load_weights, read_meta
from bioattn.errors import BioattnError
from bioattn.models import create_model
from bioattn.models.absvit import AbSViT, ViT
from bioattn.protocol import ModelOutput, compute_loss

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
TOL = 1e-5
CONSTRUCTOR_ARGS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias",
                    "num_classes", "global_pool", "var_loss_weight")
# The golden files' size (img 32, patch 8, C 48, depth 4, 3 heads, 7 classes).
TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, num_classes=7)


def golden(name: str) -> tuple[dict, dict, dict]:
    path = REFERENCE / f"{name}.safetensors"
    with safe_open(str(path), "pt") as fh:
        config = json.loads(fh.metadata()["config"])
    tensors = load_file(str(path))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return config, state, tensors


def golden_model(name: str, registered: str):
    config, state, tensors = golden(name)
    args = {k: config[k] for k in CONSTRUCTOR_ARGS if k in config}
    if not registered.startswith("absvit"):
        args.pop("var_loss_weight", None)
    model = create_model(registered, **args)
    model.load_state_dict(state, strict=True)
    return model.eval(), config, tensors


def close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return actual.shape == expected.shape and (actual - expected).abs().max().item() <= TOL


def tiny_absvit(**kw) -> AbSViT:
    torch.manual_seed(0)
    return create_model("absvit_micro_patch8_64", **dict(TINY, **kw))


# ------------------------------------------------------------------------------------------
# exactness
# ------------------------------------------------------------------------------------------
# the classifiers' golden files (the segmentation backbone's is tested in test_upernet.py)
@pytest.mark.parametrize("name", ["absvit_avg", "absvit_token"])
def test_absvit_reproduces_reference(name):
    model, config, ref = golden_model(name, "absvit_micro_patch8_64")
    assert isinstance(model, AbSViT) and model.global_pool == config["global_pool"]
    x = ref["input"]
    with torch.no_grad():
        assert close(model(x), ref["logits"])
        out = model.forward_readouts(x, with_var_loss=True)
        assert close(out.readout_logits[0], ref["logits_iter0"])
        assert close(out.readout_logits[1], ref["logits_iter1"])
        assert close(out.logits, ref["logits_iter1"])
        assert close(out.extras["prior_mask"], ref["prompt_mask"])
        assert close(out.aux_loss.reshape(1), ref["var_loss"])

        k, scale = config["class_prior_class"], config["class_prior_scale"]
        maps = model.attention_maps(x, priors=[k], prior_scale=scale)
        assert list(maps) == ["bottom-up", "top-down", f"class {k}"]
        assert close(maps["bottom-up"].flatten(1), ref["attention_bottom_up"])
        assert close(maps["top-down"].flatten(1), ref["attention_prompt"])
        assert close(maps[f"class {k}"].flatten(1), ref[f"attention_class{k}"])

        model.train()
        out = model.forward_readouts(x)
        assert isinstance(out, ModelOutput)
        assert close(model(x), ref["train_logits_iter1"])
        assert close(out.readout_logits[0], ref["train_logits_iter0"])
        assert close(out.readout_logits[1], ref["train_logits_iter1"])
        assert close(out.aux_loss.reshape(1), ref["train_var_loss"])


@pytest.mark.parametrize("name", sorted(p.stem for p in REFERENCE.glob("vit_*.safetensors")))
def test_vit_twin_reproduces_reference(name):
    model, _, ref = golden_model(name, "vit_micro_patch8_64")
    assert isinstance(model, ViT)
    with torch.no_grad():
        assert close(model(ref["input"]), ref["logits"])


def test_full_size_state_dicts_equal_official_layout():
    official = json.loads((REFERENCE / "official_state_dicts.json").read_text())
    names = [n for n in official if n.startswith(("absvit_", "official_vit_"))]
    assert len(names) == 8
    for name in names:
        model = create_model(name.replace("official_", ""), device="meta")
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert shapes == official[name], name


def test_feedback_values_equal_value_projection_of_decoder_chain():
    model = tiny_absvit()
    z = torch.randn(2, 17, 48)
    with torch.no_grad():
        composed = model.feedback_values(z)
        chain = model.feedback(z)
        for layer, block in enumerate(model.blocks):
            qkv = block.attn.qkv(chain[layer])
            assert torch.allclose(composed[layer], qkv[..., 2 * 48:], atol=1e-6)
        assert len(model.feedback_values(z, stop=1)) == 1


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
def test_registry_and_pretrained_cfg():
    names = set(timm.list_models(module="absvit"))
    assert {"absvit_tiny_patch16_224", "absvit_small_patch16_224", "absvit_base_patch16_224",
            "absvit_tiny_patch8_224_gap", "absvit_micro_patch8_64", "vit_tiny_patch8_224_gap",
            "vit_micro_patch8_64"} <= names
    model = create_model("absvit_small_patch16_224", device="meta")
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000
    assert tuple(cfg["mean"]) == (0.485, 0.456, 0.406) and cfg["crop_pct"] == 0.875
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (384, 12, 6)
    gap = create_model("absvit_tiny_patch8_224_gap", device="meta")
    assert gap.global_pool == "avg" and gap.patch_embed.grid_size == (28, 28)
    micro = create_model("vit_micro_patch8_64")
    assert micro.pretrained_cfg["input_size"] == (3, 64, 64) and micro.patch_embed.num_patches == 64
    with pytest.raises(BioattnError, match="bioattn convert"):
        timm.create_model("absvit_tiny_patch16_224", pretrained=True)


# ------------------------------------------------------------------------------------------
# protocol and training
# ------------------------------------------------------------------------------------------
def test_train_and_eval_outputs_follow_protocol():
    model = tiny_absvit()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 6])
    model.train()
    assert torch.is_tensor(model(x)) and model(x).shape == (3, 7)
    out = model.forward_readouts(x)
    assert isinstance(out, ModelOutput) and out.readout_logits.shape == (2, 3, 7)
    assert torch.equal(out.logits, out.readout_logits[1]) and out.aux_loss.ndim == 0
    ce = torch.nn.CrossEntropyLoss()
    expected = (ce(out.readout_logits[0], y) + ce(out.readout_logits[1], y)) / 2 + out.aux_loss
    assert torch.allclose(compute_loss(model, out, y, ce), expected)

    model.eval()
    with torch.no_grad():
        logits = model(x)
        both = model.forward_readouts(x)
        first = model.forward_readouts(x, readouts=1)
    assert torch.is_tensor(logits) and torch.allclose(logits, both.logits)
    assert both.aux_loss is None
    assert first.readout_logits.shape == (1, 3, 7) and torch.allclose(first.logits, both.readout_logits[0])
    with pytest.raises(BioattnError, match="readouts must be 1 or 2"):
        model.forward_readouts(x, readouts=3)


def test_variational_loss_only_in_training_and_only_trains_decoders():
    model = tiny_absvit()
    calls = []
    for decoder in model.decoders:
        decoder.linear.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        model(x)
    assert calls == []  # evaluation computes no reconstruction
    model.train()
    model(x)
    assert calls == []  # the plain forward computes no reconstruction either
    out = model.forward_readouts(x)
    assert len(calls) == 4
    out.aux_loss.backward()
    for name, param in model.named_parameters():
        trained = name.startswith("decoders.") and name.endswith(".linear.weight")
        has_grad = param.grad is not None and param.grad.abs().sum().item() > 0
        assert has_grad == trained, name


def test_the_prompts_scale_is_a_rescaling_of_the_feedbacks_last_layers():
    """The feedback path is linear and its second layers (``linear2``) are outside the
    variational loss, so a top-down pass under the prompt at scale s equals, in outputs and in
    the variational loss, the pass at scale 1 of the model whose ``linear2`` weights are s times
    larger: training under a prompt scale is a reparametrisation of those weights."""
    torch.manual_seed(0)
    model = tiny_absvit().train()
    rescaled = tiny_absvit().train()
    rescaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        for decoder in rescaled.decoders:
            decoder.linear2.weight.mul_(3.0)
    x = torch.randn(2, 3, 32, 32)
    scaled = model.forward_readouts(x, prior_scale=3.0)
    plain = rescaled.forward_readouts(x)
    torch.testing.assert_close(scaled.logits, plain.logits)
    torch.testing.assert_close(scaled.aux_loss, plain.aux_loss)
    assert not torch.allclose(model.forward_readouts(x).logits, scaled.logits)


def test_gradient_checkpointing_gives_same_outputs():
    model = tiny_absvit().train()
    x = torch.randn(2, 3, 32, 32)
    ref = model.forward_readouts(x)
    model.set_grad_checkpointing(True)
    out = model.forward_readouts(x)
    assert torch.allclose(out.readout_logits, ref.readout_logits, atol=1e-6)
    out.logits.sum().backward()
    assert model.prompt.grad is not None


def test_priors_class_index_vector_and_scale():
    model = tiny_absvit().eval()
    x = torch.randn(2, 3, 32, 32)
    y = torch.tensor([1, 5])
    with torch.no_grad():
        by_index = model(x, prior=y, prior_scale=40)
        by_vector = model(x, prior=model.head.weight[y], prior_scale=40)
        assert torch.allclose(by_index, by_vector)
        one = model(x, prior=model.head.weight[2])
        repeated = model(x, prior=model.head.weight[2].expand(2, -1))
        assert torch.allclose(one, repeated)
        assert not torch.allclose(model(x), by_index)

        features = model.forward_feedforward(x)
        cosine = F.normalize(features, dim=-1) @ F.normalize(model.head.weight[3], dim=0)
        mask = model.prior_mask(features, torch.tensor([3]), prior_scale=40)
        assert torch.allclose(mask[..., 0], 40 * cosine.clamp(0, 1), atol=1e-6)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_bad_input_errors(tmp_path):
    model = tiny_absvit().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(BioattnError, match="expects 3x32x32 images, got 3x64x64"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(BioattnError, match="expects 3x32x32"):
        create_model("vit_micro_patch8_64", **TINY)(torch.randn(1, 3, 40, 40))
    with pytest.raises(BioattnError, match="width 48"):
        model(x, prior=torch.randn(47))
    with pytest.raises(BioattnError, match="class index 7 out of range.*7 classes"):
        model(x, prior=torch.tensor([7]))
    with pytest.raises(BioattnError, match="one per image"):
        model(x, prior=torch.tensor([1, 2, 3]))

    vit = create_model("vit_micro_patch8_64", **TINY)
    path = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, path)
    with pytest.raises(BioattnError, match=r"missing keys: prompt, decoders\.0\.linear\.weight"):
        load_weights(model, path)
    with pytest.raises(BioattnError, match="unexpected keys: prompt"):
        load_model(_save_pth(tmp_path, model), "vit_micro_patch8_64", **TINY)


def _save_pth(folder: Path, model) -> Path:
    path = folder / "absvit.pth"
    torch.save({"model": model.state_dict(), "epoch": 299}, path)
    return path


# ------------------------------------------------------------------------------------------
# checkpoint import
# ------------------------------------------------------------------------------------------
def test_convert_round_trip_library_and_cli(tmp_path, capsys):
    model = tiny_absvit().eval()
    src = _save_pth(tmp_path, model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)

    dst = convert_checkpoint(src, tmp_path / "converted", "absvit_micro_patch8_64", **TINY)
    meta = read_meta(dst)
    assert meta["model"] == "absvit_micro_patch8_64" and meta["img_size"] == 32 and meta["num_classes"] == 7
    with torch.no_grad():
        assert torch.equal(load_model(dst).eval()(x), expected)
        assert torch.equal(load_model(src, "absvit_micro_patch8_64", **TINY).eval()(x), expected)

    micro = create_model("absvit_micro_patch8_64", num_classes=5).eval()
    src = tmp_path / "micro.pth"
    torch.save({"model": micro.state_dict()}, src)
    args = ["convert", str(src), str(tmp_path / "cli"), "--model", "absvit_micro_patch8_64",
            "--num-classes", "5", "--mean", "0.4,0.4,0.4", "--std", "0.2,0.2,0.2"]
    assert cli.main(args) == 0
    assert "wrote" in capsys.readouterr().out
    meta = read_meta(tmp_path / "cli")
    assert meta["mean"] == [0.4, 0.4, 0.4] and meta["std"] == [0.2, 0.2, 0.2] and meta["img_size"] == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "cli").eval()(x), micro(x))


def test_convert_refuses_mismatched_checkpoints(tmp_path, capsys):
    state = tiny_absvit().state_dict()
    broken = dict(state)
    del broken["prompt"]
    broken["extra.weight"] = torch.zeros(3)
    broken["head.weight"] = torch.zeros(5, 48)
    src = tmp_path / "broken.pth"
    torch.save({"model": broken}, src)
    with pytest.raises(BioattnError) as info:
        convert_checkpoint(src, tmp_path / "out", "absvit_micro_patch8_64", **TINY)
    message = str(info.value)
    assert "1 missing keys: prompt" in message and "1 unexpected keys: extra.weight" in message
    assert "head.weight (5, 48) vs (7, 48)" in message
    assert not (tmp_path / "out").exists()

    # a checkpoint of the full-size model: many problems, at most 10 listed, then a count
    assert cli.main(["convert", str(src), str(tmp_path / "out"), "--model", "absvit_tiny_patch16_224"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "more" in err
    assert "missing keys: prompt, blocks.4.norm1.weight" in err and "mis-shaped keys" in err


@pytest.mark.parametrize("name", ["vit_micro_convstem_64", "absvit_micro_convstem_64", "deit_micro_convstem_64_vars_d"])
def test_convolutional_stem_keeps_the_token_grid_of_the_patch_projection(name):
    # three 3x3 stride-2 convolutions with batch norm and ReLU, then a 1x1 convolution: the 8x8
    # token grid of an 8x8 patch projection, each token seeing beyond its own patch
    model = timm.create_model(name).eval()
    stem = model.patch_embed.backbone
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)] and convs[-1].kernel_size == (1, 1)
    assert tuple(model.patch_embed.grid_size) == (8, 8) and model.pretrained_cfg["first_conv"] + ".weight" in \
        model.state_dict()
    x = torch.zeros(1, 3, 64, 64)
    x[..., 20:28, 20:28] = 1.0  # one patch
    with torch.no_grad():
        base = model.patch_embed(torch.zeros_like(x))
        moved = (model.patch_embed(x) - base).abs().sum(-1).reshape(8, 8)
    assert (moved > 1e-6).sum() > 1  # the change reaches the neighbouring tokens
    with pytest.raises(BioattnError, match="expects 3x64x64 images"):
        model(torch.zeros(1, 1, 64, 64))
