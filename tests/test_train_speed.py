"""The trainer's speed settings, checked on the CPU: progress read at sync points, gradient
accumulation, gradient checkpointing, torch.compile, the choice of fused optimizer and mixed
precision, timm's prefetching loader, JPEG batches decoded on the device, and the seeding of
persistent loader workers."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.loader import PrefetchLoader
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader, Dataset

from bioattn import checkpoint as ckpt
from bioattn.data.on_device import DecodeOnDevice
from bioattn.data.subsets import base_dataset
from bioattn.distributed import DistInfo
from bioattn.errors import BioattnError
from bioattn.loaders import EpochSeeded, build_data, loader_kind
from bioattn.randomness import seed_everything
from bioattn.tasks.registry import get_task
from bioattn.train import TrainConfig, amp_dtype, fused_optimizer_args, train
from conftest import compile_backend_problem


def _config(data, out, **kw) -> TrainConfig:
    base = dict(model="test_vit", data=str(data), output=str(out), img_size=32, epochs=1,
                batch_size=8, lr=1e-3, warmup_epochs=0, progress=False, tensorboard=False, recipe="small")
    base.update(kw)
    return TrainConfig(**base)


def _assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module, atol: float) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert set(pa) == set(pb)
    for name in pa:
        assert torch.allclose(pa[name], pb[name], atol=atol, rtol=0), name


# ------------------------------------------------------------------------------------------
# the epoch loop
# ------------------------------------------------------------------------------------------
def test_progress_is_read_only_every_sync_every_steps_and_at_the_end(image_folder, tmp_path, monkeypatch):
    import bioattn.train as tr

    updates = []
    real = tr.Progress.update

    def record(self, task, advance=1, info=None):
        updates.append((advance, info))
        return real(self, task, advance, info)

    monkeypatch.setattr(tr.Progress, "update", record)
    # 24 images in batches of 4: 6 steps, read after the 4th and the 6th
    train(_config(image_folder, tmp_path / "run", batch_size=4, sync_every=4, progress=True))
    assert [advance for advance, _ in updates] == [4, 2]
    assert all("img/s" in info and "data wait" in info for _, info in updates)


def test_gradient_accumulation_trains_as_the_large_batch(image_folder, tmp_path):
    # test_vit has no batch norm and the small recipe no dropout: 2 x 8 accumulated is one batch of
    # 16. SGD's update is linear in the gradient (AdamW's divides by its size, which magnifies the
    # rounding of gradients near zero), so the two runs agree to float precision.
    sgd = dict(opt="sgd", lr=0.05, epochs=2)
    large = train(_config(image_folder, tmp_path / "large", batch_size=16, **sgd))
    accumulated = train(_config(image_folder, tmp_path / "accumulated", batch_size=8, grad_accum=2, **sgd))
    _assert_same_parameters(large["model"], accumulated["model"], atol=1e-6)
    assert large["metrics"]["step"] == accumulated["metrics"]["step"] == 2
    small = train(_config(image_folder, tmp_path / "small", batch_size=8, **sgd))
    assert small["metrics"]["step"] == 6
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in
               zip(small["model"].parameters(), accumulated["model"].parameters()))


def test_gradient_accumulation_scales_the_learning_rate_and_needs_a_whole_step(image_folder, tmp_path):
    train(_config(image_folder, tmp_path / "run", batch_size=4, grad_accum=3, lr=None, base_lr=5.12e-2,
                  sched="constant"))
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert record["lr"] == pytest.approx(5.12e-2 * 4 * 3 / 512)
    with pytest.raises(BioattnError, match=r"fewer than one global batch \(8 x 4 accumulated x 1 processes\)"):
        train(_config(image_folder, tmp_path / "too_big", batch_size=8, grad_accum=4))


@pytest.mark.parametrize("model", ["absvit_micro_patch8_64", "rvt_micro"])
def test_gradient_checkpointing_trains_to_the_same_weights(image_folder, tmp_path, model):
    # AbSViT recomputes the blocks of both passes; RVT's blocks hold batch norms, whose running
    # statistics the recomputation must not update a second time
    plain = train(_config(image_folder, tmp_path / "plain", model=model))
    recomputed = train(_config(image_folder, tmp_path / "recomputed", model=model, grad_checkpointing=True))
    assert recomputed["model"].grad_checkpointing and not plain["model"].grad_checkpointing
    expected, got = plain["model"].state_dict(), recomputed["model"].state_dict()
    assert set(expected) == set(got)
    for name in expected:
        assert torch.allclose(expected[name].double(), got[name].double(), atol=1e-6, rtol=0), name
    assert plain["metrics"]["train_loss"] == pytest.approx(recomputed["metrics"]["train_loss"], abs=1e-6)


def test_gradient_checkpointing_is_refused_for_a_model_without_it(image_folder, tmp_path):
    with pytest.raises(BioattnError, match="--grad-checkpointing: rsrnn_micro has no gradient checkpointing"):
        train(_config(image_folder, tmp_path / "run", model="rsrnn_micro", img_size=None, grad_checkpointing=True))


def test_compiled_model_trains_an_epoch(image_folder, tmp_path):
    problem = compile_backend_problem()
    if problem:
        pytest.skip(problem)
    from torch._dynamo.utils import counters

    counters.clear()
    result = train(_config(image_folder, tmp_path / "run", compile=True))
    assert counters["stats"]["unique_graphs"] >= 1  # the training step ran compiled
    assert math.isfinite(result["metrics"]["train_loss"]) and result["metrics"]["train_loss"] > 0
    assert ckpt.read_meta(tmp_path / "run" / "last")["epoch"] == 1


# ------------------------------------------------------------------------------------------
# choices made per device
# ------------------------------------------------------------------------------------------
def test_mixed_precision_type_resolves_per_device():
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert TrainConfig(model="m").amp_dtype == "auto"
    assert amp_dtype("auto", gpu, bf16_supported=True) == torch.bfloat16
    assert amp_dtype("auto", gpu, bf16_supported=False) == torch.float16
    assert amp_dtype("float16", gpu, bf16_supported=True) == torch.float16
    assert amp_dtype("bfloat16", gpu, bf16_supported=False) == torch.bfloat16
    assert amp_dtype("auto", cpu) == torch.bfloat16  # asks nothing of CUDA
    with pytest.raises(BioattnError, match="--amp-dtype must be one of auto, float16, bfloat16; got 'half'"):
        TrainConfig(model="m", amp_dtype="half")


def test_fused_optimizer_is_chosen_on_gpus_for_torch_optimizers_with_a_fused_kernel():
    assert fused_optimizer_args("adamw", "cuda") == {"fused": True}
    assert fused_optimizer_args("AdamW", "cuda") == {"fused": True}
    assert fused_optimizer_args("sgd", "cuda") == {"fused": True}
    assert fused_optimizer_args("adamw", "cpu") == {}
    assert fused_optimizer_args("lamb", "cuda") == {}  # timm's own
    assert fused_optimizer_args("lookahead_adamw", "cuda") == {}
    # the arguments pass through timm's factory to torch (whose fused AdamW also runs on the CPU)
    opt = create_optimizer_v2(torch.nn.Linear(2, 2), opt="adamw", lr=1e-3, **fused_optimizer_args("adamw", "cuda"))
    assert opt.defaults["fused"] is True


def test_loader_kind_follows_the_device_and_the_data(image_folder):
    task = get_task("classification")
    folder = TrainConfig(model="m", data=str(image_folder))
    embedded = TrainConfig(model="m", data="embedded")
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert loader_kind(folder, task, gpu) == "prefetch"
    assert loader_kind(folder, task, cpu) == "plain"
    assert loader_kind(dataclasses.replace(folder, prefetch=False), task, gpu) == "plain"
    assert loader_kind(dataclasses.replace(folder, prefetch=True), task, cpu) == "prefetch"
    assert loader_kind(embedded, task, gpu) == "plain"
    assert loader_kind(dataclasses.replace(folder, decode="gpu"), task, gpu) == "decode"
    with pytest.raises(BioattnError, match="--prefetch on loads 8-bit images of an image-folder data set"):
        loader_kind(dataclasses.replace(embedded, prefetch=True), task, cpu)
    with pytest.raises(BioattnError, match="--decode gpu decodes the JPEG files of an image-folder data set"):
        loader_kind(dataclasses.replace(embedded, decode="gpu"), task, cpu)


# ------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------
def _first_epoch(cfg: TrainConfig) -> tuple[object, list[tuple[torch.Tensor, torch.Tensor]]]:
    data = build_data(cfg.resolved(), DistInfo())
    seed_everything(3)
    data.sampler.set_epoch(0)
    return data.train_loader, [(x.clone(), y.clone()) for x, y in data.train_loader]


def test_prefetching_loader_gives_the_plain_loaders_batches_on_the_cpu(image_folder):
    # the deit recipe's RandAugment, crops and flips draw alike; the batch is normalised on the device
    settings = dict(model="test_vit", data=str(image_folder), img_size=32, batch_size=8, reprob=0.0)
    plain_loader, plain = _first_epoch(TrainConfig(**settings, prefetch=False))
    fetched_loader, fetched = _first_epoch(TrainConfig(**settings, prefetch=True))
    assert isinstance(fetched_loader, PrefetchLoader) and not isinstance(plain_loader, PrefetchLoader)
    assert len(plain) == len(fetched) == 3
    for (a, ya), (b, yb) in zip(plain, fetched):
        assert torch.equal(ya, yb)
        assert b.dtype == torch.float32 and b.shape == a.shape == (8, 3, 32, 32)
        assert torch.allclose(a, b, atol=1e-5)


def _jpeg_folder(root, per_class: int = 8, extra=None):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    for split in ("train", "val"):
        for ci, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                base = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1) + 60 * ci + 5 * i
                pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.jpg", quality=95)
    # one PNG among the JPEGs: the loader's workers decode it
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(root / "train" / "a" / "a_png.png")
    return root


def test_jpeg_batches_decoded_on_the_device_match_the_pil_path(tmp_path):
    data = _jpeg_folder(tmp_path / "jpegs")
    # without crop and RandAugment both paths resize the shorter side and take the centre
    settings = dict(model="test_vit", data=str(data), img_size=32, batch_size=6, aa="none",
                    random_resized_crop=False, reprob=0.0, repeated_aug=False)
    _, pil = _first_epoch(TrainConfig(**settings, decode="cpu"))
    loader, device = _first_epoch(TrainConfig(**settings, decode="gpu"))
    assert isinstance(loader, DecodeOnDevice)
    assert len(pil) == len(device) == 2
    for (a, ya), (b, yb) in zip(pil, device):
        assert torch.equal(ya, yb)
        assert b.dtype == torch.float32 and b.shape == a.shape == (6, 3, 32, 32)
        # the decoders agree; the two bicubic resamplers differ by a few 8-bit levels
        assert (a - b).abs().mean() < 0.02 and (a - b).abs().max() < 0.3


def test_jpeg_batches_decoded_on_the_device_take_the_augmentation_recipe(tmp_path):
    data = _jpeg_folder(tmp_path / "jpegs")
    settings = dict(model="test_vit", data=str(data), img_size=32, batch_size=6, aa="none", color_jitter=0.4,
                    hflip=0.5, random_resized_crop=True, repeated_aug=False)
    cfg = TrainConfig(**settings, reprob=0.0, decode="gpu").resolved()
    normalisation = build_data(cfg, DistInfo()).input
    mean = torch.tensor(normalisation.mean).view(1, 3, 1, 1)
    std = torch.tensor(normalisation.std).view(1, 3, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std
    _, first = _first_epoch(cfg)
    _, again = _first_epoch(cfg)
    for (x, _), (y, _) in zip(first, again):
        assert torch.equal(x, y)  # every draw comes from the seeded generators
        assert x.shape == (6, 3, 32, 32) and torch.isfinite(x).all()
        assert (x >= low - 1e-5).all() and (x <= high + 1e-5).all()
    _, erased = _first_epoch(TrainConfig(**settings, reprob=1.0, decode="gpu"))
    # random erasing fills with normal noise, which leaves the image range
    assert all(((x < low - 1e-3) | (x > high + 1e-3)).any() for x, _ in erased)


def test_batches_of_jpegs_decoded_on_the_device_skip_and_count_a_corrupt_file(tmp_path):
    # the trainer runs this path on a GPU only; its batches are built the same way on the CPU here
    data = _jpeg_folder(tmp_path / "jpegs")
    bad = data / "train" / "b" / "b_bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    settings = dict(aa="none", decode="gpu", batch_size=6, epochs=1)
    info = DistInfo(device=torch.device("cpu"))

    refused = build_data(_config(data, tmp_path / "refused", **settings).resolved(), info)
    with pytest.raises(BioattnError, match="cannot decode image .*b_bad.jpg"):
        for _ in refused.train_loader:
            pass
    skipping = build_data(_config(data, tmp_path / "run", skip_bad_images=True, **settings).resolved(), info)
    assert isinstance(skipping.train_loader, DecodeOnDevice)
    for images, targets in skipping.train_loader:
        assert bool(torch.isfinite(images).all()) and len(images) == len(targets)
    assert base_dataset(skipping.train_set).skipped() == 1

    # the trainer itself refuses this path off the GPU
    with pytest.raises(BioattnError, match="--decode gpu decodes the images on the GPU"):
        train(_config(data, tmp_path / "cpu", **settings))


def test_decoding_on_the_device_refuses_randaugment(tmp_path):
    data = _jpeg_folder(tmp_path / "jpegs")
    with pytest.raises(BioattnError, match="--decode gpu does not run RandAugment .*pass --aa none"):
        TrainConfig(model="m", data=str(data), decode="gpu").resolved()  # the deit recipe's RandAugment
    with pytest.raises(BioattnError, match="leave out --prefetch on"):
        TrainConfig(model="m", data=str(data), decode="gpu", aa="none", prefetch=True)


class _Draws(Dataset):
    """Each item: a draw from Python's, numpy's and torch's generators."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([random.random(), float(np.random.rand()), float(torch.rand(()))])


def test_persistent_workers_draw_each_epoch_from_its_own_seed():
    def epochs(seeds):
        draws = EpochSeeded(_Draws())
        loader = DataLoader(draws, batch_size=2, num_workers=1, persistent_workers=True)
        out = []
        for seed in seeds:
            draws.set_seed(seed)
            out.append(torch.cat(list(loader)))
        return out

    first, second = epochs([11, 12])
    (resumed,) = epochs([12])
    assert torch.equal(second, resumed)  # as if the workers had started at this epoch
    assert not torch.equal(first, second)
