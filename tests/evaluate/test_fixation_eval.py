"""Scoring model maps against human fixations on a small synthetic data set."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bioattn.attention.metrics import METRICS
from bioattn.errors import BioattnError
from bioattn.evaluate.human_fixations import centre_bias_map, evaluate_fixations

H, W = 24, 32
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)
# off-centre blobs, so that the true density and the centre baseline differ clearly
CENTRES = [(5, 6), (18, 25), (6, 26), (17, 7)]


def _density(cy: int, cx: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.round(255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))).astype(np.uint8)


def make_tree(root: Path, n: int = len(CENTRES)) -> Path:
    """images/ hold the density map rendered in grey, so a map_fn can read it back from x."""
    for k, (cy, cx) in enumerate(CENTRES[:n]):
        dens = _density(cy, cx)
        pts = np.zeros((H, W), dtype=np.uint8)
        for dy, dx in ((0, 0), (1, -1), (-1, 2), (2, 1)):
            pts[cy + dy, cx + dx] = 255
        for sub, array in (("images", np.repeat(dens[..., None], 3, axis=2)), ("fixations", pts),
                           ("maps", dens)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / sub / f"img{k}.png")
    return root


def image_map_fn(model, x, size):
    """The map is the (un-normalised) red channel of the input: the density map itself."""
    assert x.shape[-2:] == tuple(size)
    return x[:, 0] * STD[0] + MEAN[0]


def centre_map_fn(model, x, size):
    return torch.from_numpy(centre_bias_map(size))[None]


MODEL = nn.Identity()


def test_density_as_map_scores_near_perfect(tmp_path):
    root = make_tree(tmp_path)
    result = evaluate_fixations(MODEL, root, (H, W), MEAN, STD, "cpu", map_fn=image_map_fn,
                                n_splits=20)
    assert result["n_images"] == 4 and result["n_unmatched"] == 0
    model = result["model"]
    assert list(model) == list(METRICS)
    assert model["cc"] > 0.9999
    assert model["sim"] > 0.999
    assert model["kl"] < 1e-4
    assert model["nss"] > 4.0
    assert model["auc_judd"] > 0.99 and model["auc_borji"] > 0.97 and model["sauc"] > 0.9
    assert all(v == 0 for v in result["model_n_nan"].values())
    centre = result["centre"]
    # the blobs are off-centre, so the centre baseline is far worse on every metric
    assert centre["cc"] < 0.3 and centre["sim"] < 0.5 and centre["kl"] > 1.0
    assert model["nss"] > centre["nss"] + 3 and model["auc_judd"] > centre["auc_judd"] + 0.2
    assert result["settings"]["img_size"] == [H, W]


def test_model_map_is_upsampled_from_the_input_size(tmp_path):
    root = make_tree(tmp_path)
    seen = []

    def fn(model, x, size):
        seen.append(tuple(x.shape))
        return image_map_fn(model, x, size)

    result = evaluate_fixations(MODEL, root, 12, MEAN, STD, map_fn=fn, n_splits=10, limit=2)
    assert seen == [(1, 3, 12, 12)] * 2
    assert result["n_images"] == 2
    # squashed to 12x12 and stretched back: still close to the density map
    assert result["model"]["cc"] > 0.95 and result["model"]["auc_judd"] > 0.95


def test_centre_map_scores_like_the_centre_baseline(tmp_path):
    # at the fixation maps' own size the map goes through unchanged, and both are scored with
    # the same negatives, so every score is identical
    root = make_tree(tmp_path)
    result = evaluate_fixations(MODEL, root, (H, W), MEAN, STD, map_fn=centre_map_fn,
                                n_splits=20, per_image=True)
    for key in METRICS:
        assert result["model"][key] == pytest.approx(result["centre"][key], abs=1e-9)
    assert [row["stem"] for row in result["per_image"]] == ["img0", "img1", "img2", "img3"]
    for row in result["per_image"]:
        assert row["model"] == pytest.approx(row["centre"], abs=1e-9)
        assert not math.isnan(row["model"]["sauc"])


def test_single_image_has_no_shuffled_auc(tmp_path):
    root = make_tree(tmp_path, n=1)
    result = evaluate_fixations(MODEL, root, (H, W), MEAN, STD, map_fn=image_map_fn, n_splits=5)
    assert math.isnan(result["model"]["sauc"])
    assert result["model_n_nan"]["sauc"] == 1 and result["centre_n_nan"]["sauc"] == 1
    assert result["model_n_nan"]["cc"] == 0


def test_results_are_reproducible_and_seeded(tmp_path):
    root = make_tree(tmp_path)
    kw = dict(map_fn=centre_map_fn, n_splits=5)
    a = evaluate_fixations(MODEL, root, (H, W), MEAN, STD, seed=1, **kw)
    b = evaluate_fixations(MODEL, root, (H, W), MEAN, STD, seed=1, **kw)
    c = evaluate_fixations(MODEL, root, (H, W), MEAN, STD, seed=2, **kw)
    assert a == b
    assert a["model"]["auc_judd"] == c["model"]["auc_judd"]  # deterministic metric
    assert a["model"]["auc_borji"] != c["model"]["auc_borji"]  # drawn negatives


def test_unmatched_files(tmp_path):
    root = make_tree(tmp_path)
    (root / "maps" / "img2.png").unlink()
    with pytest.raises(BioattnError, match=r"1 unmatched file\(s\).*img2 \(no density map\)"):
        evaluate_fixations(MODEL, root, (H, W), MEAN, STD, map_fn=image_map_fn)
    result = evaluate_fixations(MODEL, root, (H, W), MEAN, STD, map_fn=image_map_fn, n_splits=5,
                                allow_unmatched=True)
    assert result["n_images"] == 3 and result["n_unmatched"] == 1


def test_bad_arguments_and_maps(tmp_path):
    root = make_tree(tmp_path, n=2)
    with pytest.raises(BioattnError, match="img_size"):
        evaluate_fixations(MODEL, root, (0, 4), MEAN, STD, map_fn=image_map_fn)
    with pytest.raises(BioattnError, match="mean must have 3 values"):
        evaluate_fixations(MODEL, root, 8, (0.5,), STD, map_fn=image_map_fn)
    with pytest.raises(BioattnError, match="limit"):
        evaluate_fixations(MODEL, root, 8, MEAN, STD, map_fn=image_map_fn, limit=0)

    def nan_map(model, x, size):
        return torch.full((1, *size), float("nan"))

    with pytest.raises(BioattnError, match="img0: saliency map contains nan"):
        evaluate_fixations(MODEL, root, 8, MEAN, STD, map_fn=nan_map)


def test_centre_bias_map():
    # sigma = 10/21 of the shorter side (21) = 10 pixels; centre at (10, 20)
    g = centre_bias_map((21, 41), sigma=10 / 21)
    assert g.shape == (21, 41)
    assert g[10, 20] == pytest.approx(1.0) and g.max() == g[10, 20]
    assert g[10, 30] == pytest.approx(math.exp(-0.5), abs=1e-12)  # 10 px right
    assert g[0, 20] == pytest.approx(math.exp(-0.5), abs=1e-12)  # 10 px up: isotropic
    np.testing.assert_allclose(g, g[::-1, ::-1], atol=1e-15)
    with pytest.raises(BioattnError, match="sigma"):
        centre_bias_map((4, 4), sigma=0)
