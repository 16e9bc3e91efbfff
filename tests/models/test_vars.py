"""VARS on the RVT backbone and in ViT: exactness against the authors' code, the math of each
attention written out by hand, official checkpoint layouts, maps, trainer hook, bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

import bioattn  # noqa: F401  (registers the models)
from bioattn.checkpoint import load_weights
from bioattn.errors import BioattnError
from bioattn.models import list_models
from bioattn.models.rvt import RVT, VARSSBlock
from bioattn.models.vars import (
    PerformerAttention,
    SelfAttention,
    VARSDAttention,
    VARSSDAttention,
    replace_attention,
    vit_attention_maps,
)
from bioattn.protocol import after_train_step
from conftest import compile_backend_problem

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
TOL = 1e-5
GOLDEN = ["self_att", "perf", "vars_d", "vars_sd", "vars_s"]


def golden(name: str) -> tuple[dict, dict, dict]:
    path = REFERENCE / f"vars_{name}.safetensors"
    with safe_open(str(path), "pt") as fh:
        config = json.loads(fh.metadata()["config"])
    tensors = load_file(str(path))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return config, state, tensors


def golden_model(config: dict) -> RVT:
    return RVT(img_size=config["image_size"], base_dims=config["base_dims"], depth=config["depth"],
               heads=config["heads"], mlp_ratio=config["mlp_ratio"], num_classes=config["num_classes"],
               attention=config["attention"], lam=config["lam"], num_step=config["num_step"],
               rand_feat_dim_ratio=config["rand_feat_dim_ratio"])


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest error relative to the largest magnitude of ``b``."""
    return max_err(a, b) / b.abs().max().item()


# ------------------------------------------------------------------------------------------
# exactness against the authors' implementation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_logits(name):
    """Strict load of the official state; eval and train-mode logits within 1e-5.

    The reference computed its eval logits on the freshly built model, before the train-mode
    pass that produced ``train_logits`` updated the BatchNorm running statistics the stored
    state carries; so the eval check runs with those statistics at their initial values.
    """
    config, state, tensors = golden(name)
    model = golden_model(config)
    model.load_state_dict(state, strict=True)
    model.train()
    with torch.no_grad():
        train_logits = model(tensors["input"])
    assert max_err(train_logits, tensors["train_logits"]) <= TOL

    model.load_state_dict(state, strict=True)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    model.eval()
    with torch.no_grad():
        logits = model(tensors["input"])
    assert max_err(logits, tensors["logits"]) <= TOL


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_vars_s_block_at_full_size(mode):
    """One official VARS-S block of RVT-Ti (C 192, 14x14 tokens) reproduces the authors' output
    in train and in eval mode within 1e-4 (values reach about 9). At this size the attention
    output is a few thousandths, so train-mode BatchNorm magnifies any change in how it is
    computed: the reconstruction and the second filter are two separate circular convolutions."""
    tensors = load_file(str(REFERENCE / "vars_s_block_224.safetensors"))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    block = VARSSBlock(192, (14, 14), mlp_ratio=4.0)
    block.load_state_dict(state, strict=True)
    block.train(mode == "train")
    with torch.no_grad():
        out = block(tensors["input"])
    assert max_err(out, tensors[f"{mode}_output"]) <= 1e-4


@pytest.mark.parametrize("name", ["rvt_tiny", "rvt_small", "rvt_base", "rvt_tiny_plus",
                                  "rvt_small_plus", "rvt_base_plus"])
def test_official_state_dict_layouts(name):
    """Every released configuration has the official keys and shapes, one for one."""
    official = json.loads((REFERENCE / "official_state_dicts.json").read_text())
    entries = {k: v for k, v in official.items() if re.fullmatch(rf"{name}\[attention=.+\]", k)}
    assert entries
    for entry, shapes in entries.items():
        attention = entry.split("=")[1].rstrip("]")
        with torch.device("meta"):
            model = timm.create_model(name, attention=attention)
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == shapes, entry


def _official_pth(tmp_path: Path, entry: str) -> tuple[Path, dict]:
    shapes = json.loads((REFERENCE / "official_state_dicts.json").read_text())[entry]
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.rand(shape, generator=gen) + 0.5
    path = tmp_path / "released.pth"
    torch.save({"model": state, "epoch": 299}, path)
    return path, state


@pytest.mark.parametrize("attention", ["vars_d", "vars_sd"])
def test_released_checkpoint_layout_loads_strictly(tmp_path, attention):
    path, state = _official_pth(tmp_path, f"rvt_tiny[attention={attention}]")
    model = timm.create_model("rvt_tiny", attention=attention)
    load_weights(model, path)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key in ("transformers.0.blocks.3.attn.learned_k", "transformers.1.blocks.1.attn.rand_matrix",
                "head.weight"):
        assert torch.equal(loaded[key], state[key])
    if attention == "vars_sd":
        kernel = model.transformers[0].blocks[0].attn.kernel
        assert torch.equal(kernel, state["transformers.0.blocks.0.attn.kernel"])


def test_released_checkpoint_of_another_attention_is_refused(tmp_path):
    path, _ = _official_pth(tmp_path, "rvt_tiny[attention=vars_d]")
    model = timm.create_model("rvt_tiny", attention="vars_sd")
    with pytest.raises(BioattnError, match="kernel"):
        load_weights(model, path)


# ------------------------------------------------------------------------------------------
# the math, written out from the equations
# ------------------------------------------------------------------------------------------
def _phi(u: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    m = R.shape[-1]
    return torch.exp(F.normalize(u, dim=-1) @ R - 0.5) / math.sqrt(m)


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    B, N, C = t.shape
    return t.reshape(B, N, h, C // h).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    B, h, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, h * d)


def _randomise(module: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "learned_k":
                p.copy_(torch.eye(p.shape[0]) + 0.1 * torch.randn(p.shape, generator=gen))
            elif name in ("learned_lam", "learned_L"):
                p.fill_(0.7 if name == "learned_lam" else 1.3)
            elif p.requires_grad:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def _vars_by_hand(mod: VARSDAttention, x: torch.Tensor, num_step: int, static=None) -> torch.Tensor:
    h, d = mod.num_heads, mod.head_dim
    qv = mod.qkv(x)
    q, v = _heads(qv[..., : mod.dim], h), _heads(qv[..., mod.dim:], h)
    feats = _phi(q * d ** -0.25, mod.rand_matrix)
    if static is not None:
        feats = torch.cat([feats, static.expand(x.shape[0], -1, -1, -1)], dim=-1)
    D = feats / feats.norm(dim=-2, keepdim=True)
    G = D.transpose(-2, -1) @ D
    b = D.transpose(-2, -1) @ v
    L = G.abs().sum(dim=-1).max(dim=-1).values[..., None, None] + 1
    lam = mod.learned_lam * mod.lam
    L = L / mod.learned_L
    W = mod.learned_k
    G = W @ G @ W
    code = torch.sign(b) * F.gelu(b.abs() - lam)
    for _ in range(num_step):
        code = code - (G @ code - b) / L
        code = torch.sign(code) * F.gelu(code.abs() - lam / L)
    return mod.proj(_merge(D @ code))


def test_vars_d_without_iterations_is_thresholded_linear_reconstruction():
    """Limiting case: with ``num_step=0`` VARS-D outputs
    ``proj(merge_heads(D · (sign(b) · gelu(|b| − lam'))))``, ``D = norm_L2(phi(q), tokens)``,
    ``b = D^T v``, ``lam' = learned_lam · lam``; written here from those equations."""
    torch.manual_seed(0)
    mod = VARSDAttention(32, 2, lam=0.2, num_step=0)
    _randomise(mod)
    x = torch.randn(3, 10, 32)
    h, d = 2, 16
    qv = mod.qkv(x)
    q, v = _heads(qv[..., :32], h), _heads(qv[..., 32:], h)
    phi = torch.exp(F.normalize(q, dim=-1) @ mod.rand_matrix - 0.5) / math.sqrt(2 * d)
    D = phi / phi.norm(dim=2, keepdim=True)
    b = D.transpose(-2, -1) @ v
    expected = mod.proj(_merge(D @ (torch.sign(b) * F.gelu(b.abs() - 0.7 * 0.2))))
    assert rel_err(mod(x), expected) < 1e-6


@pytest.mark.parametrize("num_step", [1, 3])
def test_vars_d_ista_iterations_match_the_equations(num_step):
    torch.manual_seed(0)
    mod = VARSDAttention(32, 2, lam=0.3, num_step=num_step)
    _randomise(mod)
    x = torch.randn(2, 12, 32)
    assert rel_err(mod(x), _vars_by_hand(mod, x, num_step)) < 1e-6


def test_vars_sd_concatenates_the_static_dictionary():
    torch.manual_seed(0)
    mod = VARSSDAttention(32, 2, num_tokens=12, lam=0.3, num_step=2)
    _randomise(mod)
    assert mod.learned_k.shape == (64, 64) and mod.kernel.shape == (1, 2, 12, 32)
    x = torch.randn(2, 12, 32)
    assert rel_err(mod(x), _vars_by_hand(mod, x, 2, static=mod.kernel)) < 1e-6


def test_performer_is_row_normalised_random_feature_attention():
    torch.manual_seed(0)
    mod = PerformerAttention(32, 2)
    x = torch.randn(2, 9, 32)
    q, k, v = (_heads(t, 2) for t in mod.qkv(x).split(32, dim=-1))
    A = _phi(q, mod.rand_matrix) @ _phi(k, mod.rand_matrix).transpose(-2, -1)
    expected = mod.proj(_merge((A / A.sum(dim=-1, keepdim=True)) @ v))
    assert rel_err(mod(x), expected) < 1e-6


def test_vars_d_gradients_reach_the_learned_step_parameters():
    torch.manual_seed(0)
    mod = VARSDAttention(32, 2)
    mod(torch.randn(2, 12, 32)).square().sum().backward()
    for p in (mod.learned_k, mod.learned_lam, mod.learned_L, mod.qkv.weight):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert mod.rand_matrix.grad is None and mod.L.grad is None


def _vars_s_block(lam: float, num_step: int, grid=(4, 6)) -> VARSSBlock:
    torch.manual_seed(0)
    block = VARSSBlock(16, grid, mlp_ratio=2, lam=lam, num_step=num_step)
    with torch.no_grad():
        block.kernel2.zero_()
        block.kernel2[..., 0] = 1.0  # identity second filter
    return block


def test_vars_s_without_threshold_converges_to_the_values():
    """With lam = 0 and L the exact largest singular value, the ISTA iterations solve
    min_x |v - conv(x, K^H)|^2: the reconstruction converges to v itself."""
    block = _vars_s_block(lam=0.0, num_step=400)
    x = torch.randn(2, 24, 16)
    v = block.v(x)
    assert max_err(block.reconstruct(x), v) < 1e-3
    block.num_step = 2
    assert max_err(block.reconstruct(x), v) > 1e-2


def test_vars_s_first_code_by_hand():
    """num_step = 0: r = conv(conv(sign(b) relu(|b| - lam), K^H), kernel2) with
    b = conv(v, K), circular convolutions as products of rfft2 spectra (norm='ortho')."""
    block = _vars_s_block(lam=0.5, num_step=0)
    with torch.no_grad():
        block.kernel2.normal_()
    x = torch.randn(2, 24, 16)
    B, N, C = x.shape
    K = torch.view_as_complex(block.kernel)[:, :, 0]  # (C, 5, H, Wf)
    K2 = torch.view_as_complex(block.kernel2)[:, 0, 0]  # (C, H, Wf)
    v = block.v(x).transpose(1, 2).reshape(B, C, 4, 6)
    V = torch.fft.rfft2(v, norm="ortho")
    b = torch.fft.irfft2(torch.einsum("coyx,bcyx->bcoyx", K, V), s=(4, 6), norm="ortho")
    code = torch.sign(b) * F.relu(b.abs() - 0.5)
    X = torch.fft.rfft2(code, norm="ortho")
    rec = torch.fft.irfft2(torch.einsum("coyx,bcoyx->bcyx", K.conj(), X), s=(4, 6), norm="ortho")
    filtered = torch.fft.rfft2(rec, norm="ortho") * K2
    r = torch.fft.irfft2(filtered, s=(4, 6), norm="ortho").reshape(B, C, N).transpose(1, 2)
    assert (b.abs() > 0.5).any()
    assert rel_err(block.reconstruct(x), r) < 1e-6


def test_vars_s_trains_after_inference_mode_use():
    block = _vars_s_block(lam=0.1, num_step=1, grid=(3, 5))
    x = torch.randn(2, 15, 16)
    with torch.inference_mode():
        block(x)
    block(x).sum().backward()
    assert torch.isfinite(block.kernel.grad).all() and block.kernel.grad.abs().sum() > 0


def test_vars_s_step_size_refresh_follows_the_trainer_hook():
    model = RVT(img_size=64, base_dims=[16], depth=[2], heads=[2], attention="vars_s")
    block = model.transformers[0].blocks[0]
    assert block.L_update_interval == 100 and block.L_update_rate == 0.1
    with torch.no_grad():
        block.L.fill_(1.0)
    K = torch.view_as_complex(block.kernel)
    sigma = K.abs().pow(2).sum(dim=(1, 2)).flatten(1).amax(dim=1)
    after_train_step(model, 101)
    assert torch.equal(block.L, torch.ones_like(block.L))
    after_train_step(model, 100)
    assert torch.allclose(block.L, 0.9 + 0.1 * sigma)
    custom = VARSSBlock(16, (4, 4), L_update_interval=7, L_update_rate=0.5)
    before = custom.L.clone()
    with torch.no_grad():
        custom.L.fill_(1.0)
    custom.after_train_step(7)
    assert torch.allclose(custom.L, 0.5 + 0.5 * before)


# ------------------------------------------------------------------------------------------
# timm registration and the micro model
# ------------------------------------------------------------------------------------------
def test_registered_with_timm():
    assert {"rvt_tiny", "rvt_small", "rvt_base", "rvt_tiny_plus", "rvt_micro"} <= set(timm.list_models(module="rvt"))
    assert "deit_small_patch16_224_vars_d" in timm.list_models(module="vars")
    assert "rvt_micro" in list_models("rvt")
    model = timm.create_model("rvt_micro", attention="vars_d", num_classes=10, num_step=2, lam=0.2)
    attn = model.transformers[0].blocks[0].attn
    assert isinstance(attn, VARSDAttention) and attn.num_step == 2 and attn.lam == 0.2
    assert model.head.out_features == 10
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 64, 64) and cfg["first_conv"] == "patch_embed.proj.0"
    assert cfg["classifier"] == "head" and not cfg.get("url")
    fixed = timm.create_model("rvt_tiny", attention="vars_sd")
    assert fixed.pretrained_cfg["fixed_input_size"] and fixed.pretrained_cfg["input_size"] == (3, 224, 224)
    with pytest.raises(BioattnError, match="has no weights of its own"):
        timm.create_model("rvt_tiny", pretrained=True)


def test_units_are_blocks_of_an_isotropic_rvt_and_stages_of_a_hierarchical_one():
    """As timm's ViT (blocks) and PiT (stages): RVT-S's one stage gives a map per block, the
    last 3 by default under ``features_only``; RVT-Ti's two stages give a map per stage."""
    torch.manual_seed(0)
    small = timm.create_model("rvt_small", depth=[4], img_size=64).eval()
    assert [i["module"] for i in small.feature_info] == [f"transformers.0.blocks.{i}" for i in range(4)]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = small.forward_intermediates(x)
        by_hand, h = [], small.pos_drop(small.patch_embed(x))
        tokens = h.flatten(2).transpose(1, 2)
        for blk in small.transformers[0].blocks:
            tokens = blk(tokens, (4, 4))
            by_hand.append(tokens.transpose(1, 2).reshape(1, -1, 4, 4))
        early = small.forward_intermediates(x, indices=[1], stop_early=True)
        torch.manual_seed(0)
        features = timm.create_model("rvt_small", depth=[4], img_size=64, features_only=True).eval()
        assert features.feature_info.module_name() == [f"transformers.0.blocks.{i}" for i in (1, 2, 3)]
        for got, want in zip(features(x), by_hand[1:]):
            torch.testing.assert_close(got, want)
    assert len(maps) == 4
    for got, want in zip(maps, by_hand):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(final, small.forward_features(x))
    torch.testing.assert_close(early[0], by_hand[1])
    torch.testing.assert_close(early[1][0], by_hand[1])
    tiny = timm.create_model("rvt_tiny", depth=[2, 1], img_size=64, features_only=True)
    assert tiny.feature_info.module_name() == ["transformers.0", "transformers.1"]
    assert tiny.feature_info.reduction() == [16, 32]


def test_pruning_an_isotropic_rvt_keeps_the_blocks_asked_for():
    torch.manual_seed(0)
    model = timm.create_model("rvt_small", depth=[4], img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
        assert model.prune_intermediate_layers([1]) == [1]
        pruned = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    assert len(model.transformers[0].blocks) == 2 and len(model.feature_info) == 2
    torch.testing.assert_close(pruned, full)


def test_plus_models_mask_the_first_blocks():
    with torch.device("meta"):
        model = timm.create_model("rvt_small_plus")
    masked = [hasattr(b.attn, "att_mask") for b in model.transformers[0].blocks]
    assert masked == [True] * 5 + [False] * 7
    with pytest.raises(BioattnError, match="self-att"):
        timm.create_model("rvt_tiny_plus", attention="vars_d")


@pytest.mark.parametrize("attention", ["self-att", "perf", "vars_s", "vars_d", "vars_sd"])
def test_micro_trains_with_each_attention(attention):
    torch.manual_seed(0)
    model = timm.create_model("rvt_micro", attention=attention, num_classes=3)
    assert model.grids == [(8, 8), (4, 4)]
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    assert model(x).shape == (4, 3)


# ------------------------------------------------------------------------------------------
# attention maps
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["vars_d", "vars_sd"])
def test_vars_maps_per_iteration_are_reconstruction_norms(attention):
    torch.manual_seed(0)
    model = timm.create_model("rvt_micro", attention=attention, num_step=4).eval()
    x = torch.randn(2, 3, 64, 64)
    maps = model.attention_maps(x)
    assert list(maps) == [f"iteration {t}" for t in range(5)]
    assert all(m.shape == (2, 8, 8) and (m >= 0).all() for m in maps.values())
    assert not torch.allclose(maps["iteration 0"], maps["iteration 4"])
    # the last step's map is the token norm of the block's attention output before proj
    captured = {}
    attn = model.transformers[0].blocks[-1].attn
    handle = attn.proj.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    expected = captured["in"].norm(dim=-1).reshape(2, 8, 8)
    assert max_err(maps["iteration 4"], expected) < 1e-4
    assert torch.equal(model.saliency(x), maps["iteration 4"])
    assert model.attention_maps(x, stage=1)["iteration 0"].shape == (2, 4, 4)
    if attention == "vars_d":  # any image size: the maps follow its token grid
        assert model.attention_maps(torch.randn(1, 3, 96, 80))["iteration 4"].shape == (1, 12, 10)
    assert attn.record_maps is False and attn.recorded_maps is None


@pytest.mark.parametrize("attention", ["self-att", "perf"])
def test_attention_received_map_sums_to_one(attention):
    torch.manual_seed(0)
    model = timm.create_model("rvt_micro", attention=attention).eval()
    maps = model.attention_maps(torch.randn(2, 3, 64, 64))
    assert list(maps) == ["attention"]
    m = maps["attention"]
    assert m.shape == (2, 8, 8) and (m >= 0).all()
    assert torch.allclose(m.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)


def test_maps_through_the_shared_attention_helpers():
    from bioattn.attention import maps as shared

    torch.manual_seed(0)
    model = timm.create_model("rvt_micro", attention="vars_d", num_step=2).eval()
    x = torch.randn(2, 3, 64, 64)
    assert list(shared.attention_maps(model, x)) == ["iteration 0", "iteration 1", "iteration 2"]
    up = shared.saliency(model, x, size=64)
    assert up.shape == (2, 64, 64) and (up >= 0).all()


def test_vars_s_maps_per_iteration():
    torch.manual_seed(0)
    model = timm.create_model("rvt_micro", attention="vars_s").eval()
    maps = model.attention_maps(torch.randn(2, 3, 64, 64))
    assert list(maps) == ["iteration 0", "iteration 1", "iteration 2", "iteration 3"]
    assert all(m.shape == (2, 8, 8) and (m >= 0).all() for m in maps.values())


# ------------------------------------------------------------------------------------------
# VARS in timm's ViT
# ------------------------------------------------------------------------------------------
def _small_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3)


@pytest.mark.parametrize("attention", ["vars_d", "vars_sd"])
def test_replace_attention_in_vit_trains(attention):
    model = _small_vit()
    qkv = model.blocks[0].attn.qkv.weight.detach().clone()
    replace_attention(model, attention, num_step=3)
    attn = model.blocks[0].attn
    assert isinstance(attn, VARSDAttention) and attn.num_step == 3
    assert torch.equal(attn.qkv.weight[:32], qkv[:32]) and torch.equal(attn.qkv.weight[32:], qkv[64:])
    if attention == "vars_sd":
        assert attn.kernel.shape[2] == 16 + 1  # patches and the class token
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in attn.parameters() if p.requires_grad]
        assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    maps = vit_attention_maps(model.eval(), x[:2])
    assert list(maps)[-1] == "iteration 3" and maps["iteration 3"].shape == (2, 4, 4)


def test_registered_deit_with_vars():
    """The registered DeiT-VARS computes DeiT's forward with the VARS-D attention in every block:
    its logits equal a timm DeiT-Ti built by hand, its attention swapped by replace_attention and
    given the same weights, and they change when the VARS attention's own parameters change."""
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224_vars_d", img_size=32, depth=2, num_classes=4).eval()
    by_hand = VisionTransformer(img_size=32, patch_size=16, embed_dim=192, depth=2, num_heads=3, num_classes=4,
                                dynamic_img_size=True)
    replace_attention(by_hand, "vars_d")
    by_hand.load_state_dict(model.state_dict(), strict=True)
    by_hand.eval()
    x = torch.randn(2, 3, 32, 32)
    calls = []
    hooks = [b.attn.register_forward_hook(lambda *_: calls.append(1)) for b in model.blocks]
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(logits, by_hand(x), rtol=0, atol=0)
        assert len(calls) == len(model.blocks) == 2  # every block's VARS attention ran once
        for hook in hooks:
            hook.remove()
        model.blocks[1].attn.learned_lam.mul_(3.0)  # a stronger shrinkage of the sparse code
        assert (model(x) - logits).abs().max() > 1e-4
        model.blocks[1].attn.learned_lam.div_(3.0)
        model.blocks[0].attn.rand_matrix.copy_(torch.randn_like(model.blocks[0].attn.rand_matrix))
        assert (model(x) - logits).abs().max() > 1e-4  # another dictionary of random features
        assert model.saliency(x).shape == (2, 2, 2)
    model = replace_attention(_small_vit(), "self-att")
    assert isinstance(model.blocks[1].attn, SelfAttention)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_unknown_attention_is_refused():
    with pytest.raises(BioattnError, match="unknown attention 'softmax'.*vars_d"):
        timm.create_model("rvt_micro", attention="softmax")
    with pytest.raises(BioattnError, match="unknown attention"):
        replace_attention(_small_vit(), "vars_x")
    with pytest.raises(BioattnError, match="vars_s"):
        replace_attention(_small_vit(), "vars_s")


def test_image_size_must_fit_the_fixed_token_grid():
    with pytest.raises(BioattnError, match="multiple of 16"):
        timm.create_model("rvt_tiny", attention="vars_sd", img_size=100)
    for attention in ("vars_s", "vars_sd"):
        model = timm.create_model("rvt_micro", attention=attention).eval()
        with pytest.raises(BioattnError, match="needs 64x64 inputs .*8x8 token grid.*got 96x96"):
            model(torch.randn(1, 3, 96, 96))
    flexible = timm.create_model("rvt_micro", attention="vars_d").eval()
    assert flexible(torch.randn(1, 3, 96, 96)).shape == (1, 10)  # the micro models have 10 classes


def test_negative_num_step_is_refused():
    with pytest.raises(BioattnError, match="num_step must be a whole number >= 0, got -1"):
        timm.create_model("rvt_micro", attention="vars_d", num_step=-1)
    with pytest.raises(BioattnError, match="num_step"):
        VARSDAttention(32, 2, num_step=-2)
    with pytest.raises(BioattnError, match="num_step"):
        replace_attention(_small_vit(), "vars_sd", num_step=-1)


def test_vars_attention_refuses_masks_it_cannot_apply():
    x = torch.randn(1, 4, 32)
    with pytest.raises(BioattnError, match="cannot apply an attention mask"):
        VARSDAttention(32, 2)(x, attn_mask=torch.zeros(4, 4))


@pytest.mark.parametrize("attention", ["vars_d", "vars_sd"])
def test_compiled_sparse_coding_gives_the_same_outputs_and_gradients(attention):
    problem = compile_backend_problem()
    if problem:
        pytest.skip(problem)
    from torch._dynamo.utils import counters

    def run(compile_ista: bool):
        torch.manual_seed(0)
        model = timm.create_model("rvt_micro", attention=attention, compile_ista=compile_ista).train()
        logits = model(torch.randn(2, 3, 64, 64))
        logits.square().sum().backward()
        return model, logits

    plain, plain_logits = run(False)
    counters.clear()
    compiled, compiled_logits = run(True)
    assert counters["stats"]["unique_graphs"] >= 1  # the sparse coding ran compiled
    assert all(m.compile_ista for m in compiled.modules() if isinstance(m, VARSDAttention))
    assert rel_err(compiled_logits, plain_logits) < 1e-5
    # every gradient, relative to the largest (a conv bias before batch norm has none but rounding)
    assert rel_err(torch.cat([p.grad.flatten() for p in compiled.parameters()]),
                   torch.cat([p.grad.flatten() for p in plain.parameters()])) < 1e-5
    with pytest.raises(BioattnError, match="compile_ista must be true or false, got 'yes'"):
        VARSDAttention(32, 2, compile_ista="yes")
