"""The label-prompted AbSViT, a declared change of AbSViT's training protocol: its training pass
prompts every image with the classifier row of one of its objects' classes and targets that
class; the trainer hands it both labels of a two-object image; the official model and its
training are unchanged."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from bioattn.config import TrainConfig
from bioattn.distributed import DistInfo
from bioattn.errors import BioattnError
from bioattn.loaders import build_data
from bioattn.models import create_model, prompted_by_labels
from bioattn.models.absvit import AbSViT, PromptedAbSViT
from bioattn.protocol import LabelPrompted, ReadoutModel, capable, compute_loss, forward_readouts, readout_loss
from bioattn.train import train

NAME = "absvit_prompted_micro_patch8_64"
OFFICIAL = "absvit_micro_patch8_64"
# img 32, patch 8, C 48, depth 4, 3 heads, 7 classes
TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, num_classes=7)
PAIR = "embedded:pair,size=32,train=16,val=8,test=4"
LABELS = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 0], [1, 2], [3, 4]])


def build(name: str = NAME, **kw) -> AbSViT:
    torch.manual_seed(0)
    return create_model(name, **dict(TINY, **kw))


def images(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def the_other(labels: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return torch.where(labels[:, 0] == chosen, labels[:, 1], labels[:, 0])


# ------------------------------------------------------------------------------------------
# registration: a named change of protocol, the official network
# ------------------------------------------------------------------------------------------
def test_registered_under_its_own_name_as_a_change_of_protocol():
    cfg = timm.get_pretrained_cfg(NAME)
    assert "not the paper's model" in cfg.description
    assert any("not the paper's model" in note for note in cfg.notes)
    assert cfg.input_size == (3, 64, 64) and cfg.num_classes == 10
    model = create_model(NAME)
    assert isinstance(model, PromptedAbSViT) and model.train_prior_scale == 1.0
    assert "not the paper's model" in PromptedAbSViT.__doc__
    assert prompted_by_labels(NAME) and prompted_by_labels(f"{NAME}.sometag")
    assert not prompted_by_labels(OFFICIAL) and not prompted_by_labels("vit_micro_patch8_64")
    assert create_model(NAME, train_prior_scale=10).train_prior_scale == 10.0
    for bad in (0, -1.0, float("inf"), True, "10"):
        with pytest.raises(BioattnError, match="train_prior_scale must be a positive number"):
            create_model(NAME, train_prior_scale=bad)


def test_same_network_and_state_dict_as_the_official_model():
    official, variant = build(OFFICIAL).eval(), build().eval()
    assert type(official) is AbSViT
    own, theirs = variant.state_dict(), official.state_dict()
    assert list(own) == list(theirs)
    assert all(own[k].shape == theirs[k].shape for k in own)
    variant.load_state_dict(theirs, strict=True)
    x = images()
    with torch.no_grad():
        # without labels the variant is AbSViT: the prompt, or a class prior
        assert torch.equal(variant(x), official(x))
        assert torch.equal(variant(x, prior=LABELS[:, 1], prior_scale=40.0),
                           official(x, prior=LABELS[:, 1], prior_scale=40.0))
        assert torch.equal(forward_readouts(variant, x).readout_logits,
                           forward_readouts(official, x).readout_logits)


# ------------------------------------------------------------------------------------------
# the training pass
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_training_pass_prompts_one_of_the_two_classes_and_targets_it(scale):
    model = build(train_prior_scale=scale).train()
    x = images()
    torch.manual_seed(3)
    output = ReadoutModel(model)(x, labels=LABELS)  # the trainer's call
    chosen = output.extras["prompted_class"]
    assert chosen.shape == (6,)
    assert all(int(c) in row.tolist() for c, row in zip(chosen, LABELS))

    # the prior is the chosen class's classifier row, its mask scaled by train_prior_scale
    with torch.no_grad():
        features = model.forward_feedforward(x)
        mask = model.prior_mask(features, model.head.weight[chosen].detach(), scale)
        assert torch.allclose(output.extras["prior_mask"], mask, atol=1e-6)
        # the same pass as AbSViT's under that class index (the prior top_down_maps forms)
        official_pass = AbSViT.forward_readouts(model, x, prior=chosen, prior_scale=scale)
        assert torch.allclose(output.readout_logits, official_pass.readout_logits, atol=1e-5)
        assert torch.allclose(output.aux_loss, official_pass.aux_loss)

    # the target is the prompted class: every readout against it, plus the variational loss
    criterion = nn.CrossEntropyLoss()
    loss = compute_loss(model, output, LABELS, criterion)
    assert torch.allclose(loss, readout_loss(output, chosen, criterion))
    assert not torch.allclose(loss, readout_loss(output, the_other(LABELS, chosen), criterion))
    expected = sum(criterion(logits, chosen) for logits in output.readout_logits) / 2 + output.aux_loss
    assert torch.allclose(loss, expected)


def test_each_image_draws_either_class_and_never_an_absent_object():
    model = build()
    labels = torch.tensor([[3, 6]]).repeat(4000, 1)
    torch.manual_seed(0)
    chosen = model.prompted_classes(labels)
    assert set(chosen.tolist()) == {3, 6}
    assert abs((chosen == 3).float().mean().item() - 0.5) < 0.04
    # draws differ between passes over the same images
    assert not torch.equal(model.prompted_classes(labels[:64]), model.prompted_classes(labels[:64]))
    assert model.prompted_classes(torch.tensor([[2, -1], [-1, 5]])).tolist() == [2, 5]
    assert model.prompted_classes(torch.tensor([4, 1])).tolist() == [4, 1]  # one class per image
    with pytest.raises(BioattnError, match="at least one labelled object"):
        model.prompted_classes(torch.tensor([[-1, -1]]))
    with pytest.raises(BioattnError, match="must be class indices"):
        model.prompted_classes(torch.zeros(2, 7))
    with pytest.raises(BioattnError, match="give labels for every image"):
        model.forward_readouts(images(6), labels=LABELS[:4])
    with pytest.raises(BioattnError, match="not both"):
        model.forward_readouts(images(6), prior=LABELS[:, 0], labels=LABELS)
    with pytest.raises(BioattnError, match="needs both passes"):
        model.forward_readouts(images(6), readouts=1, labels=LABELS)


def test_a_prompted_step_trains_the_network_and_decoders_but_not_the_prompt():
    model = build().train()
    assert model.has_unused_parameters
    output = model.forward_readouts(images(), labels=LABELS)
    compute_loss(model, output, LABELS, nn.CrossEntropyLoss()).backward()
    assert model.prompt.grad is None
    assert model.head.weight.grad.abs().sum() > 0
    for decoder in model.decoders:
        assert decoder.linear.weight.grad.abs().sum() > 0 and decoder.linear2.weight.grad.abs().sum() > 0
    # both labels without a prompted pass cannot be a target
    plain = model.forward_readouts(images())
    with pytest.raises(BioattnError, match="label-prompted pass"):
        model.compute_loss(plain, LABELS, nn.CrossEntropyLoss())


def test_the_official_model_takes_no_labels():
    official = build(OFFICIAL)
    assert not capable(official, LabelPrompted) and not hasattr(official, "compute_loss")
    with pytest.raises(BioattnError, match="AbSViT takes no labels"):
        forward_readouts(official, images(), labels=LABELS)
    with pytest.raises(BioattnError, match="takes no labels"):
        ReadoutModel(create_model("vit_micro_patch8_64", **TINY))(images(), labels=LABELS)


# ------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------
def _config(model: str, out=None, **kw) -> TrainConfig:
    base = dict(model=model, data=PAIR, img_size=32, epochs=1, batch_size=8, lr=1e-3, warmup_epochs=0,
                progress=False, tensorboard=False, output=None if out is None else str(out))
    return TrainConfig(**dict(base, **kw))


def test_the_prompted_model_trains_on_both_labels_and_validates_on_the_first():
    data = build_data(_config(NAME).resolved(), DistInfo())
    arrays = data.train_set.arrays
    images_, targets = next(iter(data.train_loader))
    assert targets.shape == (8, 2) and targets.dtype == torch.long
    # every row is a training image's two classes, first object first
    rows = {tuple(r) for r in arrays.labels.tolist()}
    assert all(tuple(t) in rows for t in targets.tolist())
    _, val_targets = next(iter(data.val_loader))
    assert val_targets.ndim == 1
    assert data.val_set.arrays.labels[: len(val_targets), 0].tolist() == val_targets.tolist()
    # the official model keeps one class per training image: the first object's
    official = build_data(_config(OFFICIAL).resolved(), DistInfo())
    _, first = next(iter(official.train_loader))
    assert first.ndim == 1
    with pytest.raises(BioattnError, match="--mixup and --cutmix mix the targets"):
        build_data(_config(NAME, mixup=0.8).resolved(), DistInfo())


def test_a_prompted_run_passes_the_labels_to_every_training_step(tmp_path, monkeypatch):
    seen: list[torch.Tensor] = []
    draw = PromptedAbSViT.prompted_classes

    def recorded(self, labels):
        seen.append(labels.clone())
        return draw(self, labels)

    monkeypatch.setattr(PromptedAbSViT, "prompted_classes", recorded)
    result = train(_config(NAME, tmp_path / "run", epochs=1))
    assert len(seen) == 2 and all(s.shape == (8, 2) for s in seen)  # 16 images, batches of 8
    record = result["metrics"]
    assert 0.0 <= record["train_top1"] <= 100.0 and 0.0 <= record["val_top1"] <= 100.0
    assert type(result["model"]) is PromptedAbSViT
