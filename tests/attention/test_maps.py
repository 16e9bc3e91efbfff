"""Attention maps, their figures (``bioattn attend``) and AbSViT's steering score."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import bioattn  # noqa: F401  (registers the models)
from bioattn import cli
from bioattn.attention import plots
from bioattn.attention.maps import attention_maps, display_normalise, saliency, upsample
from bioattn.checkpoint import model_meta, save_checkpoint
from bioattn.data.embedded import EMBEDDED_STD
from bioattn.errors import BioattnError
from bioattn.evaluate.steering import steering_score, steering_score_dataset
from bioattn.models import create_model

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, num_classes=7,
            global_pool="token")   # the golden file's pooling
CLASSES = ["disk", "ring", "square", "triangle", "star", "plus", "heart"]


@pytest.fixture(scope="module")
def reference():
    return load_file(str(REFERENCE / "absvit_token.safetensors"))


@pytest.fixture(scope="module")
def absvit(reference):
    model = create_model("absvit_micro_patch8_64", **TINY)
    model.load_state_dict({k[6:]: v for k, v in reference.items() if k.startswith("state.")})
    return model.eval()


def test_display_normalise_follows_the_official_formula():
    a = torch.tensor([[[0.0, 1.0], [2.0, 10.0]], [[5.0, 5.0], [5.0, 5.0]]])
    out = display_normalise(a)
    threshold = 0.7 * 10 + 0.3 * 0
    assert torch.allclose(out[0], (a[0] - threshold).clamp(min=0))
    assert out[0, 1, 1] == 3.0 and out[0, 0, 0] == 0.0
    assert torch.all(out[1] == 0)  # a flat map shows nothing


def test_absvit_maps_dispatch_order_and_saliency(absvit, reference):
    x = reference["input"]
    maps = attention_maps(absvit, x, priors=[3, torch.tensor(5)], prior_scale=40)
    assert list(maps) == ["bottom-up", "top-down", "class 3", "class 5"]
    assert all(m.shape == (2, 4, 4) for m in maps.values())
    assert torch.allclose(maps["class 3"].flatten(1), reference["attention_class3"], atol=1e-5)
    prior = absvit.head.weight[5].detach()
    by_vector = attention_maps(absvit, x, priors=[prior], prior_scale=40)
    assert list(by_vector)[-1] == "prior 0"
    assert torch.allclose(by_vector["prior 0"], maps["class 5"], atol=1e-6)

    primary = saliency(absvit, x)
    assert torch.allclose(primary, maps["top-down"])
    big = saliency(absvit, x, size=32)
    assert big.shape == (2, 32, 32)
    assert torch.allclose(big, upsample(maps["top-down"], 32))
    assert upsample(maps["top-down"][0], (8, 12)).shape == (8, 12)


def test_plain_timm_vit_gets_the_feedforward_map(reference):
    # timm's own ViT with AbSViT's backbone weights: its map is AbSViT's bottom-up map
    vit = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    state = {k[6:]: v for k, v in reference.items() if k.startswith("state.")}
    state = {k: v for k, v in state.items() if k != "prompt" and not k.startswith("decoders.")}
    vit.load_state_dict(state, strict=True)
    x = reference["input"]
    maps = attention_maps(vit, x)
    assert list(maps) == ["bottom-up"]
    assert torch.allclose(maps["bottom-up"].flatten(1), reference["attention_bottom_up"], atol=1e-5)
    assert torch.allclose(saliency(vit, x), maps["bottom-up"])
    with pytest.raises(BioattnError, match="no top-down prior"):
        attention_maps(vit, x, priors=[1])
    with pytest.raises(BioattnError, match="expects 3x32x32 images, got 3x16x16"):
        attention_maps(vit, torch.randn(1, 3, 16, 16))
    twin = create_model("vit_micro_patch8_64", **TINY).eval()
    twin.load_state_dict(state, strict=True)
    assert torch.allclose(attention_maps(twin, x)["bottom-up"], maps["bottom-up"])


def test_model_without_maps_is_refused():
    with pytest.raises(BioattnError, match="has no attention maps"):
        attention_maps(nn.Linear(3, 3), torch.randn(1, 3))
    with pytest.raises(BioattnError, match="has no attention maps"):
        saliency(nn.Linear(3, 3), torch.randn(1, 3))


# ------------------------------------------------------------------------------------------
# figures and the attend command
# ------------------------------------------------------------------------------------------
def _image(path: Path, size=(50, 40)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def checkpoint_dir(tmp_path, absvit):
    meta = model_meta("absvit_micro_patch8_64", TINY, num_classes=7, classes=CLASSES, img_size=32,
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return save_checkpoint(tmp_path / "ckpt", absvit, meta)


def test_plot_attention_writes_a_figure(tmp_path):
    picture = np.random.default_rng(1).random((30, 45, 3))
    maps = {f"step {i}": torch.rand(4, 6) for i in range(7)}
    out = plots.plot_attention(picture, maps, tmp_path / "fig.png", title="test")
    with Image.open(out) as img:
        width, height = img.size
    assert height > 1.5 * 280 * 30 / 45  # 8 panels in rows of at most 6: two rows
    with pytest.raises(BioattnError, match="cannot write a figure"):
        plots.plot_attention(picture, maps, tmp_path / "fig.bmp")


def test_attention_figures_keep_their_texts_apart():
    from conftest import overlapping_text

    picture = np.random.default_rng(1).random((30, 45, 3))
    for count in (1, 3, 7):
        maps = {f"class {i} (a long class name)": torch.rand(4, 6) for i in range(count)}
        fig = plots.attention_figure(picture, maps, title="absvit_micro_patch8_64")
        assert overlapping_text(fig) == [], count


def test_attend_draws_named_maps_for_priors_by_name_and_index(tmp_path, checkpoint_dir, monkeypatch):
    image = _image(tmp_path / "photo.png")
    drawn = {}

    def capture(picture, maps, out_path, title=None, **kw):
        drawn.update(picture=picture, maps=maps, title=title)
        return Path(out_path)

    monkeypatch.setattr(plots, "plot_attention", capture)
    args = ["attend", "--checkpoint", str(checkpoint_dir), "--image", str(image),
            "--prior", "Triangle", "2", "--out", str(tmp_path / "fig.png")]
    assert cli.main(args) == 0
    assert list(drawn["maps"]) == ["bottom-up", "top-down", "class 3 (triangle)", "class 2 (square)"]
    assert all(m.shape == (4, 4) for m in drawn["maps"].values())
    assert drawn["picture"].shape == (40, 50, 3) and drawn["title"] == "absvit_micro_patch8_64"

    # the maps drawn are the model's maps on the resized, normalised image
    x, _ = plots.load_image(image, (32, 32), (0.5,) * 3, (0.25,) * 3)
    model = bioattn.checkpoint.load_model(checkpoint_dir).eval()
    expected = attention_maps(model, x, priors=[3], prior_scale=40)["class 3"][0]
    assert torch.allclose(drawn["maps"]["class 3 (triangle)"], expected)


def test_attend_cli_end_to_end_and_errors(tmp_path, checkpoint_dir, capsys):
    image = _image(tmp_path / "photo.jpg", size=(70, 64))
    out = tmp_path / "attend.png"
    assert cli.main(["attend", "--checkpoint", str(checkpoint_dir), "--image", str(image),
                     "--prior", "star", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    with Image.open(out) as img:
        assert img.format == "PNG"

    assert cli.main(["attend", "--checkpoint", str(checkpoint_dir), "--image", str(image),
                     "--prior", "zebra", "--out", str(out)]) == 2
    assert "unknown class 'zebra'" in capsys.readouterr().err
    assert cli.main(["attend", "--checkpoint", str(checkpoint_dir), "--image", str(image),
                     "--prior", "9", "--out", str(out)]) == 2
    assert "class index 9 out of range" in capsys.readouterr().err
    assert cli.main(["attend", "--checkpoint", str(checkpoint_dir), "--image", str(tmp_path / "none.png"),
                     "--out", str(out)]) == 2
    assert "image not found" in capsys.readouterr().err

    # no checkpoint: random weights with a warning; a plain ViT shows its feedforward map
    plain = tmp_path / "plain.png"
    assert cli.main(["attend", "--model", "vit_micro_patch8_64", "--image", str(image), "--out", str(plain)]) == 0
    captured = capsys.readouterr()
    assert "warning: no --checkpoint" in captured.err and plain.exists()
    assert cli.main(["attend", "--model", "vit_micro_patch8_64", "--image", str(image),
                     "--prior", "1", "--out", str(plain)]) == 2
    assert "no top-down prior" in capsys.readouterr().err
    assert cli.main(["attend", "--image", str(image), "--out", str(plain)]) == 2


def test_attend_hands_glimpse_models_to_plot_glimpses(tmp_path, monkeypatch):
    calls = {}

    def plot_glimpses(model, image_tensor, out_path, glimpses=None, gif=False, mean=None, std=None,
                      class_names=None):
        calls.update(shape=tuple(image_tensor.shape), glimpses=glimpses, gif=gif, mean=tuple(mean),
                     std=tuple(std), class_names=class_names)
        return Path(out_path)

    monkeypatch.setattr(plots, "plot_glimpses", plot_glimpses)

    class Glimpser(nn.Module):
        pretrained_cfg = {"input_size": (3, 48, 48), "mean": (0.5,) * 3, "std": (0.5,) * 3}

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward_glimpses(self, x, glimpses=None):
            return x

    image = _image(tmp_path / "photo.png")
    out = plots.attend(Glimpser(), image, tmp_path / "g.png", glimpses=5, gif=True,
                       meta={"classes": ["a", "b"]})
    assert out == tmp_path / "g.png"
    assert calls == {"shape": (1, 3, 48, 48), "glimpses": 5, "gif": True, "mean": (0.5,) * 3,
                     "std": (0.5,) * 3, "class_names": ["a", "b"]}
    with pytest.raises(BioattnError, match="takes no --prior"):
        plots.attend(Glimpser(), image, tmp_path / "g.png", priors=["1"])


def test_input_settings_and_prior_names(absvit):
    settings = plots.input_settings(absvit, {"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]})
    assert settings["img_size"] == (32, 32) and settings["mean"] == (0.1, 0.2, 0.3)
    assert plots.input_settings(absvit)["std"] == EMBEDDED_STD  # the micro config's
    assert plots.resolve_priors(["heart", "0", 4], CLASSES) == [6, 0, 4]
    with pytest.raises(BioattnError, match="lists no class names"):
        plots.resolve_priors(["heart"], None)


# ------------------------------------------------------------------------------------------
# steering score
# ------------------------------------------------------------------------------------------
def test_steering_score_with_hand_made_masks(absvit, reference):
    x = reference["input"]
    labels = torch.tensor([[1, 3], [4, 0]])
    full = torch.ones(2, 2, 32, 32, dtype=torch.bool)
    result = steering_score(absvit, x, labels, full)
    assert result["prompted_share"] == pytest.approx(1.0) and result["other_share"] == pytest.approx(1.0)
    assert result["win_rate"] == 0.0 and result["n_pairs"] == 4
    assert result["shift"] == pytest.approx(0.0, abs=1e-6) and result["shift_win_rate"] == 0.0

    # left half belongs to the first object, right half to the second
    halves = torch.zeros(2, 2, 32, 32, dtype=torch.bool)
    halves[:, 0, :, :16] = True
    halves[:, 1, :, 16:] = True
    result = steering_score(absvit, x, labels, halves, prior_scale=40, batch_size=1)
    with torch.no_grad():
        maps = [upsample(m, 32) for m in absvit.top_down_maps(x, [labels[:, 0], labels[:, 1]], 40)]
    own = torch.cat([maps[0][..., :16].sum((1, 2)) / maps[0].sum((1, 2)),
                     maps[1][..., 16:].sum((1, 2)) / maps[1].sum((1, 2))])
    assert result["prompted_share"] == pytest.approx(own.mean().item(), abs=1e-6)
    assert result["prompted_share"] + result["other_share"] == pytest.approx(1.0, abs=1e-6)
    assert result["win_rate"] == pytest.approx((own > 1 - own).float().mean().item())
    # shift: the first object's share under its own prior minus under the other prior, and the
    # same for the second object, averaged per image
    left = [a[..., :16].sum((1, 2)) / a.sum((1, 2)) for a in maps]
    shift = 0.5 * ((left[0] - left[1]) + ((1 - left[1]) - (1 - left[0])))
    assert result["shift"] == pytest.approx(shift.mean().item(), abs=1e-6)
    assert result["shift_win_rate"] == pytest.approx((shift > 0).float().mean().item())
    assert result["shift"] != pytest.approx(0.0, abs=1e-9)

    # the same score from a two-object data set (images from dataset[i], labels/masks from arrays)
    class PairData:
        arrays = types.SimpleNamespace(labels=labels.numpy(), masks=halves.numpy())

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return x[i], int(labels[i, 0])

    by_dataset = steering_score_dataset(absvit, PairData(), prior_scale=40, batch_size=1)
    for key in ("prompted_share", "other_share", "win_rate", "shift", "shift_win_rate"):
        assert by_dataset[key] == pytest.approx(result[key], abs=1e-6)


def test_steering_score_bad_input(absvit, reference):
    x = reference["input"]
    masks = torch.ones(2, 2, 32, 32)
    with pytest.raises(BioattnError, match="top-down priors"):
        steering_score(create_model("vit_micro_patch8_64", **TINY), x, torch.zeros(2, 2, dtype=torch.long), masks)
    with pytest.raises(BioattnError, match=r"labels must be \(B, 2\)"):
        steering_score(absvit, x, torch.zeros(2, dtype=torch.long), masks)
    with pytest.raises(BioattnError, match="masks must be"):
        steering_score(absvit, x, torch.zeros(2, 2, dtype=torch.long), masks[:, 0])
    with pytest.raises(BioattnError, match="out of range"):
        steering_score(absvit, x, torch.full((2, 2), 7), masks)
