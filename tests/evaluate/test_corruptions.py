"""Corruptions generated on the fly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from robustness_models import MEAN, STD, TinyCNN, halves_pixels, normalise
from torch.utils.data import DataLoader, TensorDataset

from bioattn.data.pixels import Pixels
from bioattn.errors import BioattnError
from bioattn.evaluate.corruptions import Corrupter, corrupt_image, evaluate_corruptions, image_seed
from bioattn.evaluate.mce import CORRUPTIONS

PIXELS = Pixels(MEAN, STD)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, (n, 1, 1, 3))
    return np.clip(base + rng.integers(-30, 30, (n, size, size, 3)), 0, 255).astype(np.uint8)


def test_uint8_round_trip_through_normalised_tensors():
    images = _images(3, 20)
    x = PIXELS.from_uint8(images)
    assert x.shape == (3, 3, 20, 20)
    assert np.array_equal(PIXELS.to_uint8(x), images)


# glass blur compiles its pixel shuffle on first use (many seconds): tested separately
FAST_CORRUPTIONS = [c for c in CORRUPTIONS if c != "glass_blur"]


def _check_corruption(name: str) -> None:
    img = _images(1, 24)[0]  # below the library's 32 px minimum: upscaled then resized back
    a = corrupt_image(img, name, 3, seed=11)
    b = corrupt_image(img, name, 3, seed=11)
    assert a.shape == img.shape and a.dtype == np.uint8, name
    assert np.array_equal(a, b), name
    assert not np.array_equal(a, img), name


@pytest.mark.slow
def test_glass_blur_runs_on_small_images_deterministically():
    _check_corruption("glass_blur")


def test_every_corruption_runs_on_small_images_deterministically():
    for name in FAST_CORRUPTIONS:
        _check_corruption(name)
    img = _images(1, 24)[0]
    noisy = [corrupt_image(img, "gaussian_noise", 3, seed=s) for s in (1, 2)]
    assert not np.array_equal(*noisy)
    big = _images(1, 40)[0]
    assert corrupt_image(big, "contrast", 5, seed=0).shape == big.shape
    with pytest.raises(BioattnError, match="uint8"):
        corrupt_image(img.astype(np.float32), "fog", 1, seed=0)


def test_process_pool_gives_the_same_images():
    images = _images(5, 32)
    seeds = [image_seed(0, "shot_noise", 2, i) for i in range(5)]
    with Corrupter(0) as serial:
        expected = serial.corrupt(images, "shot_noise", 2, seeds)
    with Corrupter(2) as pool:
        got = pool.corrupt(images, "shot_noise", 2, seeds)
    assert np.array_equal(expected, got)
    assert image_seed(0, "shot_noise", 2, 0) != image_seed(0, "shot_noise", 3, 0)


def _loader(n=10, batch_size=4):
    x, y = halves_pixels(n, size=16, seed=5)
    y = torch.arange(n) % 3
    return DataLoader(TensorDataset(normalise(x), y), batch_size=batch_size)


def test_accuracies_match_a_direct_computation():
    torch.manual_seed(0)
    model = TinyCNN(3).eval()
    loader = _loader()
    corruptions, severities = ["impulse_noise", "fog"], [1, 4]
    r = evaluate_corruptions(model, loader, PIXELS, corruptions, severities, seed=7)
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    raw = PIXELS.to_uint8(x)
    with torch.no_grad():
        assert r["clean_top1"] == pytest.approx(100 * (model(x).argmax(1) == y).float().mean().item())
        for c in corruptions:
            for s in severities:
                imgs = np.stack([corrupt_image(raw[i], c, s, image_seed(7, c, s, i)) for i in range(len(y))])
                acc = 100 * (model(PIXELS.from_uint8(imgs)).argmax(1) == y).float().mean().item()
                assert r["top1"][c][str(s)] == pytest.approx(acc), (c, s)
    assert r["n"] == 10 and r["severities"] == [1, 4]
    means = {c: sum(r["top1"][c].values()) / 2 for c in corruptions}
    assert r["corruption_top1"] == pytest.approx(means)
    assert r["mean_error"] == pytest.approx(100 - sum(means.values()) / 2)
    assert "mce" not in r  # no baseline given


def test_baseline_identical_to_the_model_gives_mce_100():
    torch.manual_seed(1)
    model = TinyCNN(3).eval()
    r = evaluate_corruptions(model, _loader(9, 5), PIXELS, ["gaussian_noise", "pixelate"], [2, 5],
                             baseline=model, seed=3)
    assert r["baseline"]["top1"] == r["top1"]
    assert r["mce"] == pytest.approx(100.0)
    assert all(v == pytest.approx(100.0) for v in r["ce"].values())
    assert all(math.isnan(v) or v == pytest.approx(100.0) for v in r["relative_ce"].values())


def test_bad_corruption_settings():
    model = TinyCNN(3)
    with pytest.raises(BioattnError, match="unknown corruption"):
        evaluate_corruptions(model, _loader(), PIXELS, ["rain"], [1])
    with pytest.raises(BioattnError, match="severities"):
        evaluate_corruptions(model, _loader(), PIXELS, ["fog"], [6])


def test_a_long_corruption_suite_says_its_size_and_how_to_shorten_it(monkeypatch, capsys):
    from bioattn import progress
    from bioattn.evaluate import run_suites

    monkeypatch.setattr(progress, "LONG_TASK_S", 0.0)  # every task counts as long
    monkeypatch.setattr(progress, "ESTIMATE_AFTER_S", 0.0)
    x, y = halves_pixels(10, size=16, seed=5)
    run_suites(TinyCNN(2).eval(), TensorDataset(normalise(x), y), ["corruptions"], mean=MEAN, std=STD,
               corruptions="fog,contrast", severities="1,3", batch_size=4, device="cpu")
    err = capsys.readouterr().err.splitlines()
    announced = [line for line in err if " here; " in line]
    assert len(announced) == 1
    assert announced[0].startswith("corruptions: 2 corruptions x 2 severities x 10 images, about ")
    assert announced[0].endswith("here; --severities 3 for one severity, --corruptions for fewer corruptions, "
                                 "--limit N for fewer images")
    assert err[-1].startswith("corruptions: 40/40 images (")
