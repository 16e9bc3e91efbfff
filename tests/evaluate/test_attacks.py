"""Attacks: agreement with torchattacks, eps-ball property, step targeting, EOT."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from robustness_models import (
    MEAN,
    STD,
    GlimpseToy,
    TinyCNN,
    halves_pixels,
    normalise,
    trained_halves_cnn,
    uniform_pixels,
)
from torch.utils.data import DataLoader, TensorDataset

from bioattn.data.pixels import Pixels
from bioattn.errors import BioattnError
from bioattn.evaluate.attacks import AttackRun, autoattack, evaluate_attack, fgsm, gradient_passes, pgd
from bioattn.evaluate.runtime import PixelModel

PIXELS = Pixels(MEAN, STD)


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def trained():
    model = PixelModel(trained_halves_cnn(), PIXELS).eval()
    x, y = halves_pixels(200, seed=3)
    return model, x, y


def test_fgsm_matches_torchattacks(trained):
    model, x, y = trained
    eps = 4 / 255
    ours = fgsm(model, x, y, eps=eps)
    theirs = torchattacks.FGSM(model, eps=eps)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_without_random_start_matches_torchattacks(norm):
    # an untrained model: no vanishing gradients, whose normalisation would depend on
    # torchattacks' division guard
    torch.manual_seed(0)
    model = PixelModel(TinyCNN(3), PIXELS).eval()
    x = torch.rand(32, 3, 16, 16)
    y = torch.randint(0, 3, (32,))
    if norm == "Linf":
        eps, step = 4 / 255, 1 / 255
        theirs = torchattacks.PGD(model, eps=eps, alpha=step, steps=5, random_start=False)(x, y)
    else:
        eps, step = 0.5, 0.1
        theirs = torchattacks.PGDL2(model, eps=eps, alpha=step, steps=5, random_start=False)(x, y)
    ours = pgd(model, x, y, eps=eps, step_size=step, iters=5, norm=norm, random_start=False)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_pgd_random_start_accuracy_agrees_with_torchattacks(trained):
    model, x, y = trained
    eps = 6 / 255
    torch.manual_seed(0)
    ours = _accuracy(model, pgd(model, x, y, eps=eps, step_size=eps / 4, iters=5), y)
    torch.manual_seed(1)
    theirs = _accuracy(model, torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=5)(x, y), y)
    clean = _accuracy(model, x, y)
    assert clean - ours > 20  # the attack bites at this eps ...
    assert abs(ours - theirs) <= 6  # ... and both implementations agree within sampling noise


def test_pgd_lowers_accuracy_of_trained_model_well_below_clean(trained):
    x, y = halves_pixels(128, seed=4)
    loader = DataLoader(TensorDataset(normalise(x), y), batch_size=50)
    r = evaluate_attack(trained_halves_cnn(), loader, PIXELS, AttackRun("pgd", eps=8 / 255))
    assert r["n"] == 128
    assert r["clean_top1"] >= 95
    assert r["top1"] <= 20
    assert r["max_linf"] <= 8 / 255 + 1e-6
    assert r["step_size"] == pytest.approx(4 / 255) and r["iters"] == 5


def test_attacks_stay_in_eps_ball_and_unit_range():
    """Property test over random models, inputs and settings."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(12):
        torch.manual_seed(trial)
        model = PixelModel(TinyCNN(int(torch.randint(2, 5, (1,), generator=gen))), PIXELS).eval()
        x = torch.rand(6, 3, 16, 16, generator=gen)
        x[0] = 0.0  # pixels on the border of [0, 1]
        x[1] = 1.0
        y = torch.randint(0, model.model.num_classes, (6,), generator=gen)
        norm = ["Linf", "L2"][trial % 2]
        eps = float(torch.rand(1, generator=gen)) * (0.1 if norm == "Linf" else 2.0)
        kind = trial % 3
        if kind == 0:
            adv = fgsm(model, x, y, eps=eps, norm=norm)
        else:
            adv = pgd(model, x, y, eps=eps, step_size=eps * 0.7, iters=3, norm=norm,
                      random_start=kind == 1, restarts=1 + trial % 2, eot=1 + (trial % 4 == 1))
        delta = (adv - x).flatten(1)
        assert adv.min() >= 0 and adv.max() <= 1
        if norm == "Linf":
            assert delta.abs().max() <= eps + 1e-6
        else:
            assert (delta.norm(dim=1) <= eps * (1 + 1e-5) + 1e-6).all()
    model = PixelModel(TinyCNN(3), PIXELS).eval()
    x = torch.rand(4, 3, 16, 16, generator=gen)
    y = torch.randint(0, 3, (4,), generator=gen)
    adv = autoattack(model, x, y, eps=2 / 255, n_classes=3)
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 2 / 255 + 1e-6


def test_restarts_keep_every_example_the_first_restart_fooled(trained):
    model, x, y = trained
    torch.manual_seed(5)
    one = pgd(model, x, y, eps=2 / 255, iters=3, restarts=1)
    torch.manual_seed(5)
    three = pgd(model, x, y, eps=2 / 255, iters=3, restarts=3)
    with torch.no_grad():
        fooled_one = model(one).argmax(1) != y
        fooled_three = model(three).argmax(1) != y
    assert fooled_one.any()
    assert (fooled_three | ~fooled_one).all()
    assert fooled_three.sum() >= fooled_one.sum()


def test_attack_targets_the_chosen_readout():
    """Readout t of the toy sees only patch t: attacking readout 1 breaks readout 1 only."""
    x, y = uniform_pixels(32)
    loader = DataLoader(TensorDataset(normalise(x), y), batch_size=16)
    model = GlimpseToy(stochastic=False)
    first = evaluate_attack(model, loader, PIXELS, AttackRun("pgd", eps=0.04, attack_readout=1))
    assert first["per_readout_clean_top1"] == [100.0] * 4
    assert first["per_readout_top1"][0] == 0.0
    assert first["per_readout_top1"][1:] == [100.0] * 3
    assert first["attacked_readout_top1"] == 0.0 and first["top1"] == 100.0
    last = evaluate_attack(model, loader, PIXELS, AttackRun("fgsm", eps=0.04, readouts=6))
    assert len(last["per_readout_top1"]) == 6
    assert last["per_readout_top1"][:5] == [100.0] * 5 and last["per_readout_top1"][5] == 0.0
    with pytest.raises(BioattnError, match="attack readout 9 is outside"):
        evaluate_attack(model, loader, PIXELS, AttackRun("pgd", eps=0.04, attack_readout=9))


def test_eot_changes_the_estimate_on_random_fixations():
    """Without EOT each gradient only reaches the patch one random glimpse looked at, so PGD
    looks much weaker than it is; averaging over fixations reveals the model is not robust."""
    x, y = uniform_pixels(64, seed=1)
    loader = DataLoader(TensorDataset(normalise(x), y), batch_size=64)
    model = GlimpseToy(stochastic=True)
    plain = evaluate_attack(model, loader, PIXELS, AttackRun("pgd", eps=0.04, eot=1, seed=0))
    eot = evaluate_attack(model, loader, PIXELS, AttackRun("pgd", eps=0.04, eot=24, seed=0))
    assert plain["clean_top1"] == 100.0 and eot["clean_top1"] == 100.0
    assert plain["top1"] >= 50
    assert eot["top1"] <= 15
    assert eot["eot"] == 24 and plain["eot"] == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": -0.01}, "eps must be"),
    ({"eps": 0.01, "norm": "L1"}, "unknown attack norm"),
    ({"eps": 0.01, "iters": 0}, "iterations"),
    ({"eps": 0.01, "eot": 0}, "EOT"),
])
def test_bad_attack_settings_raise(kwargs, message):
    model = PixelModel(TinyCNN(2), PIXELS)
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    with pytest.raises(BioattnError, match=message):
        pgd(model, x, y, **kwargs)


def test_zero_eps_returns_the_clean_images(trained):
    model, x, y = trained
    assert torch.equal(pgd(model, x, y, eps=0.0), x)
    assert torch.equal(fgsm(model, x, y, eps=0.0), x)


def test_autoattack_is_at_least_as_strong_as_pgd():
    # a budget at which the first part breaks every example, so the slow parts never run
    x, y = halves_pixels(16, seed=6)
    loader = DataLoader(TensorDataset(normalise(x), y), batch_size=16)
    model = trained_halves_cnn()
    aa = evaluate_attack(model, loader, PIXELS, AttackRun("autoattack", eps=16 / 255))
    ref = evaluate_attack(model, loader, PIXELS, AttackRun("pgd", eps=16 / 255, iters=2))
    assert aa["parts"] == ["apgd-ce", "fab-t", "square"]  # two classes: no DLR-based parts
    assert aa["max_linf"] <= 16 / 255 + 1e-6
    assert aa["clean_top1"] == ref["clean_top1"] >= 90
    assert aa["top1"] <= ref["top1"]
    assert aa["top1"] <= 10


def test_attacks_report_every_gradient_pass(trained):
    model, x, y = trained
    passes = []
    pgd(model, x[:8], y[:8], eps=4 / 255, iters=3, restarts=2, eot=2, on_pass=passes.append)
    assert passes == [1] * 12 == [1] * gradient_passes("pgd", 3, restarts=2, eot=2)
    passes.clear()
    fgsm(model, x[:8], y[:8], eps=4 / 255, on_pass=passes.append)
    assert passes == [1] * gradient_passes("fgsm")
    assert gradient_passes("autoattack") is None

    calls = []
    loader = DataLoader(TensorDataset(normalise(x[:12]), y[:12]), batch_size=8)
    evaluate_attack(model.model, loader, PIXELS, AttackRun("pgd", eps=4 / 255, iters=2),
                    progress=lambda n, info=None: calls.append((n, info)))
    assert sum(n for n, _ in calls) == 2 * gradient_passes("pgd", 2)  # two batches
    assert [info for _, info in calls if info] == ["eps=4/255, images 1-8 of 12", "eps=4/255, images 9-12 of 12"]
