"""RS-RNN and its baselines (the glimpse models): dorsal-stream pieces, shapes, the protocol, training, DDP."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import bioattn  # noqa: F401  (registers the models)
from bioattn.distributed import DistInfo, cleanup
from bioattn.errors import BioattnError
from bioattn.models import create_model
from bioattn.models.glimpse import (
    GlimpseModel,
    choose_fixation,
    fixation_density,
    gaussian_blobs,
    inhibition_of_return,
)
from bioattn.models.rsrnn import RSRNN, novelty, pool_evidence
from bioattn.protocol import ModelOutput, ReadoutModel, compute_loss, forward_readouts, has_readouts
from conftest import run_processes

MICRO = ["rsrnn_micro", "retina_gru_micro", "crop_s_micro", "crop_d_micro", "s3ta_micro", "ffcnn_micro"]
IMAGENET = ["rsrnn_resnet18", "retina_gru_resnet18", "crop_s_resnet18", "crop_d_resnet18",
            "s3ta_resnet18", "ffcnn_resnet18"]
# small widths keep the tests quick; the architecture is the registered one
TINY = dict(encoder_widths=(8, 12, 16), num_classes=5)


def _tiny(name: str, **kw) -> GlimpseModel:
    args = dict(TINY)
    args.update(kw)
    return create_model(name, **args)


def _cell_centre(i: int, n: int) -> float:
    return (2 * i + 1) / n - 1


# ------------------------------------------------------------------------------------------
# dorsal stream
# ------------------------------------------------------------------------------------------
def test_inhibition_of_return_suppresses_past_fixations_and_decays_with_distance():
    g = 32
    past = torch.tensor([[[_cell_centre(8, g), _cell_centre(8, g)]],
                         [[_cell_centre(24, g), _cell_centre(20, g)]]])
    sigmas = torch.tensor([[0.2], [0.1]])
    ior = inhibition_of_return(past, sigmas, (g, g))[0]
    assert ior.shape == (g, g)
    assert float(ior[8, 8]) < 1e-6 and float(ior[20, 24]) < 1e-6  # fully suppressed at each fixation
    assert float(ior.min()) >= 0 and float(ior.max()) <= 1
    # moving away from the first fixation along its row, inhibition fades (IOR rises toward 1)
    row = ior[8, 8:20]
    assert bool((row[1:] > row[:-1]).all())
    assert float(ior[31, 0]) > 0.95
    # a wider sigma suppresses a wider neighbourhood
    narrow = inhibition_of_return(past[:1], torch.tensor([[0.1]]), (g, g))[0]
    wide = inhibition_of_return(past[:1], torch.tensor([[0.3]]), (g, g))[0]
    assert float(wide[8, 12]) < float(narrow[8, 12])
    # several fixations combine multiplicatively
    torch.testing.assert_close(ior, (1 - gaussian_blobs(past, sigmas, (g, g))).prod(0)[0])


def test_fixation_density_is_a_normalised_sum_of_blobs():
    fix = torch.tensor([[[-0.5, -0.5]], [[0.5, 0.5]], [[0.5, 0.5]]])
    dens = fixation_density(fix, 0.15, (16, 16))
    assert dens.shape == (1, 16, 16)
    assert float(dens.sum()) == pytest.approx(1.0, abs=1e-5)
    # twice the fixations at (0.5, 0.5): twice the mass there
    assert float(dens[0, 11:13, 11:13].sum()) == pytest.approx(2 * float(dens[0, 3:5, 3:5].sum()), rel=1e-3)


def test_sampler_mode_and_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5) * 1.5
    mode = choose_fixation(logits, sample=False)
    r, c = divmod(int(logits.flatten().argmax()), 5)
    torch.testing.assert_close(mode.fixations[0], torch.tensor([_cell_centre(c, 5), _cell_centre(r, 4)]))
    probs = torch.softmax(logits.flatten(), 0)
    assert float(mode.log_prob[0]) == pytest.approx(float(probs.log().max()), abs=1e-5)
    torch.testing.assert_close(mode.probs.flatten(), probs)

    n = 20000
    gen = torch.Generator().manual_seed(1)
    draws = choose_fixation(logits.expand(n, -1, -1), sample=True, generator=gen)
    cols = ((draws.fixations[:, 0] + 1) * 5 / 2 - 0.5).round().long()
    rows = ((draws.fixations[:, 1] + 1) * 4 / 2 - 0.5).round().long()
    freq = torch.bincount(rows * 5 + cols, minlength=20).float() / n
    assert float((freq - probs).abs().sum()) / 2 < 0.02  # total variation distance
    chosen = torch.log(probs[rows * 5 + cols])
    torch.testing.assert_close(draws.log_prob, chosen, atol=1e-5, rtol=1e-5)


def test_inhibition_of_return_fades_with_later_fixations():
    g = 16
    cells = [(2, 2), (13, 3), (8, 12)]  # (col, row), oldest first
    past = torch.tensor([[[_cell_centre(c, g), _cell_centre(r, g)]] for c, r in cells])
    sigmas = torch.full((3, 1), 0.1)
    blobs = gaussian_blobs(past, sigmas, (g, g))[:, 0]
    for decay in (0.0, 0.25, 0.6):
        ior = inhibition_of_return(past, sigmas, (g, g), decay=decay)[0]
        expected = (1 - blobs[0] * decay ** 2) * (1 - blobs[1] * decay) * (1 - blobs[2])
        torch.testing.assert_close(ior, expected)
        # the newest fixation is fully inhibited, an older one by decay^age
        assert float(ior[12, 8]) < 1e-6
        assert float(ior[3, 13]) == pytest.approx(1 - decay, abs=1e-4)
        assert float(ior[2, 2]) == pytest.approx(1 - decay ** 2, abs=1e-4)
    permanent = inhibition_of_return(past, sigmas, (g, g), decay=1.0)[0]
    torch.testing.assert_close(permanent, inhibition_of_return(past, sigmas, (g, g))[0])
    assert float(permanent[2, 2]) < 1e-6 and float(permanent[3, 13]) < 1e-6


def _fixed_saliency(model, peaks: dict[tuple[int, int], float], background: float = 1.0) -> None:
    """Make ``model`` choose its fixations from a fixed saliency map with the given peaks."""
    def salience(state, fix, hw):
        s = torch.full((fix.shape[0], model.map_size, model.map_size), background)
        for (col, row), value in peaks.items():
            s[:, row, col] = value
        return s
    model._salience = salience


def test_a_fading_inhibition_of_return_lets_a_fixation_return():
    """With a fixed saliency map peaked at A (and a weaker peak at B far away), permanent
    inhibition never lets the model look at A again; a fading one brings it back."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    a, b = (3, 4), (12, 11)
    visits = {}
    for decay in (1.0, 0.25):
        m = _tiny("rsrnn_micro", ior_decay=decay).eval()
        _fixed_saliency(m, {a: 12.0, b: 6.0})
        with torch.no_grad():
            fix = m.forward_glimpses(x, glimpses=8).fixations[:, 0]
        cols = ((fix[:, 0] + 1) * 8).floor().long().tolist()
        rows = ((fix[:, 1] + 1) * 8).floor().long().tolist()
        visits[decay] = [t for t, cell in enumerate(zip(cols, rows)) if cell == a]
    assert visits[1.0] == [1]  # chosen once, after the first glimpse, never again
    assert visits[0.25][0] == 1 and len(visits[0.25]) >= 3


def test_pooled_evidence_is_a_gated_mean_that_counts_each_place_once():
    torch.manual_seed(0)
    feats = torch.randn(4, 2, 6)
    gates = torch.randn(4, 2)
    places = torch.tensor([[[-0.5, -0.5]] * 2, [[0.5, -0.5]] * 2, [[0.5, 0.5]] * 2, [[-0.5, 0.5]] * 2])
    ev = None
    for t in range(4):
        ev = pool_evidence(ev, feats[t], gates[t], places[t], width=0.0625)
        weights = torch.softmax(gates[: t + 1], dim=0)
        torch.testing.assert_close(ev.features, (weights[..., None] * feats[: t + 1]).sum(0))
    # looking again at a place already counted adds (almost) nothing, whatever its gate
    again = pool_evidence(ev, torch.randn(2, 6) * 100, torch.full((2,), 5.0), places[1], width=0.0625)
    torch.testing.assert_close(again.features, ev.features, atol=1e-6, rtol=1e-5)
    # a place next to a counted one is partly new; far from all of them, wholly new
    near = novelty(torch.tensor([[-0.5 + 0.0625, -0.5]]), places[:, :1], 0.0625)
    far = novelty(torch.tensor([[0.0, 0.0]]), places[:, :1], 0.0625)
    assert 0.3 < float(near) < 0.5 and float(far) > 0.999
    assert float(novelty(places[2, :1], places[:, :1], 0.0625)) == 0.0


def test_evidence_readout_averages_the_state_readouts_of_new_places():
    """With the gate at its start (zero), the evidence readout after glimpse t is the mean of the
    state readouts of glimpses 1..t at new places, and a glimpse at a place already seen leaves
    it unchanged; the state readout is the previous RS-RNN's prediction of the hidden state."""
    torch.manual_seed(0)
    evidence = _tiny("rsrnn_micro").eval()
    state = _tiny("rsrnn_micro", readout="state").eval()
    assert not hasattr(state, "evidence_gate")
    missing, unexpected = state.load_state_dict(evidence.state_dict(), strict=False)
    assert unexpected == ["evidence_gate.weight"] and not missing
    x = torch.randn(2, 3, 64, 64)
    path = torch.tensor([[0.0, 0.0], [0.5625, -0.5625], [-0.5625, 0.5625], [0.5625, -0.5625]])
    with torch.no_grad():
        pooled = evidence.forward_glimpses(x, fixations=path).logits
        alone = state.forward_glimpses(x, fixations=path).logits
    for t in range(3):
        torch.testing.assert_close(pooled[t], alone[: t + 1].mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled[3], pooled[2], atol=1e-5, rtol=1e-5)  # glimpse 4 revisits glimpse 2
    assert not torch.allclose(alone[3], alone[1])  # although the state has moved on


def test_training_draws_the_number_of_glimpses_in_range():
    m = _tiny("rsrnn_micro", train_glimpses=(2, 5)).train()
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    counts = [m.forward_readouts(x).readout_logits.shape[0] for _ in range(40)]
    assert set(counts) == {2, 3, 4, 5}
    assert m.forward_readouts(x, readouts=7).readout_logits.shape[0] == 7  # asked for: given
    m.eval()
    with torch.no_grad():
        assert {m.forward_readouts(x).readout_logits.shape[0] for _ in range(5)} == {4}  # num_glimpses
    fixed = _tiny("rsrnn_micro").train()
    assert fixed.train_glimpses is None
    assert {fixed.forward_readouts(x).readout_logits.shape[0] for _ in range(5)} == {4}
    assert _tiny("rsrnn_micro", train_glimpses=(1, 3)).has_unused_parameters
    assert not _tiny("rsrnn_micro", train_glimpses=(2, 6)).has_unused_parameters


def test_defaults_of_looking_longer():
    m = _tiny("rsrnn_micro")
    assert (m.readout, m.ior_decay, m.train_glimpses) == ("evidence", 0.25, None)
    for name in ("retina_gru_micro", "crop_s_micro", "crop_d_micro"):
        baseline = _tiny(name)
        assert (baseline.ior_decay, baseline.train_glimpses) == (1.0, None)


# ------------------------------------------------------------------------------------------
# registration
# ------------------------------------------------------------------------------------------
def test_registered_with_timm():
    names = {name for family in ("rsrnn", "ram", "s3ta") for name in timm.list_models(module=family)}
    assert set(MICRO + IMAGENET) <= names
    m = timm.create_model("rsrnn_micro")
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 64, 64) and cfg["num_classes"] == 10
    assert cfg["classifier"] == "head.fc"
    assert m.get_classifier() is m.head.fc
    assert dict(m.named_modules())[cfg["first_conv"]].in_channels == 3
    assert timm.create_model("crop_d_resnet18").pretrained_cfg["input_size"] == (3, 224, 224)
    with pytest.raises(BioattnError, match="has no weights of its own"):
        timm.create_model("rsrnn_resnet18", pretrained=True)
    with pytest.raises(BioattnError, match="has no weights of its own"):
        create_model("s3ta_resnet18", pretrained=True)


def test_imagenet_sizes_build_and_run():
    x = torch.randn(1, 3, 224, 224)
    for name in IMAGENET:
        m = timm.create_model(name, num_classes=7, num_glimpses=2).eval()
        first = dict(m.named_modules())[m.pretrained_cfg["first_conv"]]
        assert first.in_channels == 3
        with torch.no_grad():
            g = m.forward_glimpses(x)
        assert g.logits.shape == (2, 1, 7), name
        assert g.fixations.shape == (2, 1, 2), name


# ------------------------------------------------------------------------------------------
# the glimpse interface
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MICRO)
def test_shapes_and_protocol(name):
    torch.manual_seed(0)
    m = _tiny(name, num_glimpses=3)
    x = torch.randn(2, 3, 64, 64)
    assert has_readouts(m)
    m.train()
    assert m(x).shape == (2, 5)
    out = m.forward_readouts(x)
    assert isinstance(out, ModelOutput)
    assert out.readout_logits.shape == (3, 2, 5)
    assert out.extras["fixations"].shape == (3, 2, 2)
    torch.testing.assert_close(out.logits, out.readout_logits[-1])
    m.eval()
    logits = m(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)
    with torch.no_grad():
        g = m.forward_glimpses(x, glimpses=7)  # more glimpses than in training
        out = forward_readouts(m, x, readouts=7)
    assert g.logits.shape == (7, 2, 5) and g.fixations.shape == (7, 2, 2) and g.sigmas.shape == (7, 2)
    assert float(g.fixations.abs().max()) <= 1
    torch.testing.assert_close(out.readout_logits, g.logits)
    torch.testing.assert_close(out.extras["fixations"], g.fixations)
    # eval with the mode is deterministic, and the first fixation is the image centre
    with torch.no_grad():
        again = m.forward_glimpses(x, glimpses=7)
    torch.testing.assert_close(again.logits, g.logits)
    if not name.startswith("s3ta"):
        torch.testing.assert_close(g.fixations[0], torch.zeros(2, 2))
    maps = m.attention_maps(x)
    first = next(iter(maps.values()))
    assert first.dim() == 3 and first.shape[0] == 2 and bool((first >= 0).all())
    torch.testing.assert_close(m.saliency(x), first)
    views = m.glimpse_images(x, g.fixations[:3])
    assert all(v.shape[:3] == (3, 2, 3) for v in views)
    # FF-CNN is single-glimpse by default; the glimpse models train with 4 glimpses
    default_glimpses = _tiny(name).train().forward_readouts(x).readout_logits.shape[0]
    assert default_glimpses == (1 if name.startswith("ffcnn") else 4)


def test_rsrnn_maps_per_glimpse():
    m = _tiny("rsrnn_micro", ior_decay=1.0).eval()  # permanent inhibition of return
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        g = m.forward_glimpses(x, glimpses=5, return_maps=True)
    assert set(g.maps) == {"saliency", "inhibition of return", "fixation probability"}
    for v in g.maps.values():
        assert v.shape == (5, 2, 16, 16)
    # the map of step t chose fixation t+1 (the mode at evaluation)
    probs = g.maps["fixation probability"]
    for t in range(4):
        idx = probs[t].flatten(1).argmax(-1)
        rows, cols = idx // 16, idx % 16
        expect = torch.stack([(2 * cols + 1) / 16 - 1, (2 * rows + 1) / 16 - 1], -1).float()
        torch.testing.assert_close(g.fixations[t + 1], expect)
    # the IOR of step t is 0 at every fixation made so far (those after the first lie on cell centres)
    ior = g.maps["inhibition of return"]
    for t in range(5):
        for s in range(1, t + 1):
            f = g.fixations[s, 0]
            col, row = int((f[0] + 1) * 8), int((f[1] + 1) * 8)
            assert float(ior[t, 0, row, col]) < 1e-5
        assert float(ior[t, 0, 7:9, 7:9].max()) < 0.5  # around the first fixation, the image centre
    assert set(m.attention_maps(x)) == {"fixation density", "saliency", "inhibition of return"}


def test_eval_sample_flag():
    x = torch.randn(8, 3, 64, 64)
    m = _tiny("rsrnn_micro", eval_sample=True).eval()
    with torch.no_grad():
        torch.manual_seed(0)
        a = m.forward_glimpses(x, glimpses=4).fixations
        torch.manual_seed(1)
        b = m.forward_glimpses(x, glimpses=4).fixations
    assert not torch.equal(a, b)


def test_replaying_a_scan_path():
    m = _tiny("crop_s_micro").eval()
    x = torch.randn(2, 3, 64, 64)
    path = torch.tensor([[0.0, 0.0], [0.5, -0.5], [-0.75, 0.25]])
    with torch.no_grad():
        g = m.forward_glimpses(x, fixations=path)
    torch.testing.assert_close(g.fixations, path[:, None].expand(-1, 2, -1))
    assert g.log_probs.shape == (2, 2) and bool((g.log_probs <= 0).all())
    r = _tiny("rsrnn_micro").eval()
    with torch.no_grad():
        assert r.forward_glimpses(x, fixations=path).logits.shape == (3, 2, 5)


@pytest.mark.parametrize("name", MICRO)
def test_gradient_reaches_the_input_at_every_glimpse(name):
    m = _tiny(name).eval()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = forward_readouts(m, x, readouts=3)
    for t in (0, 2):
        (grad,) = torch.autograd.grad(out.readout_logits[t, :, 1].sum(), x, retain_graph=True)
        assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MICRO)
def test_trains_an_optimizer_step_under_the_protocol(name):
    torch.manual_seed(0)
    m = _tiny(name).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([0, 1, 2, 3])
    before = {k: p.detach().clone() for k, p in m.named_parameters()}
    out = m.forward_readouts(x)
    loss = compute_loss(m, out, y, torch.nn.CrossEntropyLoss())
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    missing = [k for k, p in m.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    assert not m.has_unused_parameters
    opt.step()
    changed = [k for k, p in m.named_parameters() if not torch.equal(before[k], p.detach())]
    assert len(changed) == len(before)


@pytest.mark.parametrize("name", ["rsrnn_micro", "crop_d_micro"])
def test_trains_under_mixed_precision(name):
    torch.manual_seed(0)
    m = _tiny(name).train()
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.forward_readouts(x)
        loss = compute_loss(m, out, y, torch.nn.CrossEntropyLoss())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert float(out.extras["fixations"].abs().max()) <= 1


def test_soft_targets_and_policy_term():
    torch.manual_seed(0)
    m = _tiny("rsrnn_micro").train()
    x = torch.randn(4, 3, 64, 64)
    soft = torch.softmax(torch.randn(4, 5), -1)
    out = m.forward_readouts(x)

    def soft_ce(logits, target):
        return -(target * F.log_softmax(logits, -1)).sum(-1).mean()

    loss = compute_loss(m, out, soft, soft_ce)
    plain = sum(soft_ce(s, soft) for s in out.readout_logits) / out.readout_logits.shape[0]
    assert torch.isfinite(loss) and float(loss.detach()) != pytest.approx(float(plain.detach()))
    loss.backward()
    assert m.saliency_net[0].weight.grad.abs().sum() > 0
    assert m.sigma_net.weight.grad.abs().sum() > 0


def test_multi_label_policy_term_rewards_lower_binary_cross_entropy(monkeypatch):
    torch.manual_seed(0)
    m = _tiny("rsrnn_micro").train()
    x = torch.randn(4, 3, 64, 64)
    multi_hot = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]]).float()
    out = m.forward_readouts(x)
    seen = []
    real = F.binary_cross_entropy_with_logits

    def spy(logits, target, *args, **kwargs):
        seen.append(kwargs.get("reduction", "mean"))
        return real(logits, target, *args, **kwargs)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", spy)
    loss = compute_loss(m, out, multi_hot, torch.nn.BCEWithLogitsLoss())
    # the rewards are per-image binary cross-entropies, one per readout
    assert seen.count("none") == out.readout_logits.shape[0]
    plain = sum(real(r, multi_hot) for r in out.readout_logits) / out.readout_logits.shape[0]
    assert torch.isfinite(loss) and float(loss.detach()) != pytest.approx(float(plain.detach()))
    loss.backward()
    assert m.saliency_net[0].weight.grad.abs().sum() > 0


def test_policy_gradient_favours_fixations_that_helped():
    """Sample 0's second glimpse cut the loss, sample 1's raised it: the policy term raises the
    log-probability of sample 0's choice and lowers sample 1's."""
    m = RSRNN(num_classes=3, img_size=64, encoder="micro", encoder_widths=(8, 8, 8),
              policy_discount=0.0, entropy_weight=0.0)
    y = torch.tensor([0, 0])
    readout_logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                                [[4.0, 0.0, 0.0], [-4.0, 0.0, 0.0]]])
    log_probs = torch.full((1, 2), -2.0, requires_grad=True)
    out = ModelOutput(logits=readout_logits[-1], readout_logits=readout_logits,
                      extras={"log_probs": log_probs, "entropies": torch.zeros(1, 2)})
    compute_loss(m, out, y, torch.nn.CrossEntropyLoss()).backward()
    assert float(log_probs.grad[0, 0]) < 0 < float(log_probs.grad[0, 1])


@pytest.mark.parametrize("name, kwargs, unused", [
    ("rsrnn_micro", dict(num_glimpses=1), True),
    ("rsrnn_micro", dict(num_glimpses=2), False),
    ("rsrnn_micro", dict(policy_weight=0.0), True),
    ("crop_s_micro", dict(policy_weight=0.0), True),
    ("crop_s_micro", dict(num_glimpses=2), False),
    ("s3ta_micro", dict(num_glimpses=1), False),
    ("ffcnn_micro", dict(), False),
])
def test_unused_parameters_flag_matches_the_gradients(name, kwargs, unused):
    m = _tiny(name, **kwargs).train()
    assert m.has_unused_parameters is unused
    out = m.forward_readouts(torch.randn(2, 3, 64, 64))
    loss = compute_loss(m, out, torch.tensor([0, 1]), torch.nn.CrossEntropyLoss())
    loss.backward()
    assert any(p.grad is None for p in m.parameters()) is unused


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_bad_input():
    m = _tiny("rsrnn_micro").eval()
    x = torch.randn(1, 3, 64, 64)
    for glimpses in (0, -1, 1.5):
        with pytest.raises(BioattnError, match="number of glimpses must be an integer >= 1"):
            m.forward_glimpses(x, glimpses=glimpses)
    with pytest.raises(BioattnError, match="number of glimpses must be an integer >= 1"):
        forward_readouts(_tiny("ffcnn_micro"), x, readouts=0)
    with pytest.raises(BioattnError, match="number of glimpses must be an integer >= 1"):
        _tiny("crop_s_micro", num_glimpses=0)
    with pytest.raises(BioattnError, match="smaller than the retina"):
        m(torch.randn(1, 3, 24, 24))
    with pytest.raises(BioattnError, match="smaller than the retina"):
        _tiny("crop_d_micro")(torch.randn(1, 3, 64, 16))
    with pytest.raises(BioattnError, match="outside the image"):
        m.forward_glimpses(x, fixations=torch.tensor([[0.0, 0.0], [1.5, 0.0]]))
    with pytest.raises(BioattnError, match="outside the image"):
        m.glimpse_images(x, torch.tensor([[[0.0, -1.01]]]))
    with pytest.raises(BioattnError, match="exceeds img_size"):
        _tiny("rsrnn_micro", retina_size=80)
    with pytest.raises(BioattnError, match="crop glimpses are uniform"):
        _tiny("crop_s_micro", retina_falloff=2.0)
    with pytest.raises(BioattnError, match=r"\(B, C, H, W\)"):
        m(torch.randn(3, 64, 64))
    with pytest.raises(BioattnError, match="cannot build"):
        create_model("rsrnn_micro", not_an_argument=1)
    with pytest.raises(BioattnError, match="readout must be one of evidence, state"):
        _tiny("rsrnn_micro", readout="last")
    for decay in (-0.1, 1.5):
        with pytest.raises(BioattnError, match=r"ior_decay must be in \[0, 1\]"):
            _tiny("rsrnn_micro", ior_decay=decay)
    for bad in ((0, 3), (4, 2), (2, 3, 4), (1.5, 3), "2-6"):
        with pytest.raises(BioattnError, match="train_glimpses must be None or"):
            _tiny("crop_s_micro", train_glimpses=bad)


# ------------------------------------------------------------------------------------------
# distributed data parallel
# ------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, port: int, world_size: int, names: list[str]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        for name in names:
            _ddp_two_steps(name, rank, world_size)
    finally:
        # the DDP wrappers are gone with _ddp_two_steps' frames: the group can go (see cleanup)
        cleanup(DistInfo(rank=rank, world_size=world_size, local_rank=rank, device=torch.device("cpu")))


def _ddp_two_steps(name: str, rank: int, world_size: int) -> None:
    """Two SGD steps of ``name`` under DDP with different data on each rank; replicas must agree."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = _tiny(name)
    ddp = DistributedDataParallel(ReadoutModel(model), find_unused_parameters=model.has_unused_parameters)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(100 + rank)  # different data on each rank
    for _ in range(2):
        x = torch.randn(4, 3, 64, 64, generator=gen)
        y = torch.randint(0, 5, (4,), generator=gen)
        out = ddp(x)
        loss = compute_loss(ddp, out, y, torch.nn.CrossEntropyLoss())
        opt.zero_grad()
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    if not torch.allclose(gathered[0], gathered[1], atol=1e-6):
        raise AssertionError(f"{name}: replicas diverged under DDP")


def test_ddp_two_processes():
    run_processes(_ddp_worker, (2, MICRO), nprocs=2)


def test_retina_cnn_is_ff_cnn_on_the_retinal_image_at_the_centre():
    from bioattn.models.rsrnn import RetinaCNN

    torch.manual_seed(0)
    model = timm.create_model("retina_cnn_micro").eval()
    ffcnn = timm.create_model("ffcnn_micro", img_size=32).eval()
    ffcnn.load_state_dict(model.state_dict())  # the same encoder and classifier, no other weights
    rsrnn = timm.create_model("rsrnn_micro").eval()
    x = torch.randn(2, 3, 64, 64)
    retinal = model.retinal_image(x)
    # RS-RNN's retina at the image centre: a 32-pixel image, blurred away from the fovea
    assert isinstance(model, RetinaCNN) and retinal.shape == (2, 3, 32, 32)
    torch.testing.assert_close(retinal, rsrnn.retina(x, torch.zeros(2, 2)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ffcnn(retinal))
        glimpses = model.forward_glimpses(x, glimpses=3)
    # more glimpses repeat the one prediction, fixating the centre
    assert torch.equal(glimpses.logits[0], glimpses.logits[2]) and not glimpses.fixations.any()
    # the periphery is seen through the retina: a change far from the centre moves the input less
    # than the same change at the centre
    corner, centre = x.clone(), x.clone()
    corner[..., :8, :8] += 1.0
    centre[..., 28:36, 28:36] += 1.0
    moved = [float((model.retinal_image(v) - retinal).abs().sum()) for v in (corner, centre)]
    assert moved[0] < moved[1]
