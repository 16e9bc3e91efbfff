"""Speed of the trainer's step against the model's own: where a training step's time goes.

For each model, on an image folder of generated JPEGs of ImageNet's typical size (375 x 500), it
times

* the full trainer step: ``bioattn.train.train_one_epoch`` over the folder (loader workers,
  decoding and augmentation, transfer, mixup, forward, backward, optimizer step, EMA,
  schedule), one warm-up epoch then one timed epoch;
* the model alone: the same model, loss, optimizer and precision on one batch held in device
  memory, forward + backward + optimizer step;

and prints both rates, the share of the trainer's step time spent outside the model (loading,
augmenting, copying, waiting) and the time 300 ImageNet epochs (1,281,167 images) would take on
8 devices at the trainer's measured rate per device.

    python benchmarks/bench_train.py                                 # micro models (64 px) on the CPU
    python benchmarks/bench_train.py --size tiny --device cuda --amp bf16 --workers 8
    python benchmarks/bench_train.py --device cuda --decode gpu      # JPEGs decoded on the GPU
    python benchmarks/bench_train.py --data embedded                 # the embedded data, every micro family

With ``--data embedded`` the trainer reads the embedded data set (64-px images in memory, the
demo's ``small`` recipe unless ``--recipe deit``) through its in-memory batches (``--in-memory
off``: one image at a time through a data loader), for the micro model of every family.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bioattn.config import TrainConfig, parse_model_entry, split_model_list
from bioattn.distributed import DistInfo
from bioattn.loaders import build_data
from bioattn.progress import Progress
from bioattn.protocol import compute_loss
from bioattn.train import build_trainee, train_one_epoch
from timing import print_header, sync

IMAGENET_TRAIN_IMAGES = 1_281_167
EPOCHS = 300
DEVICES = 8
MODELS = {
    "micro": "vit_micro_patch8_64,absvit_micro_patch8_64,rvt_micro[attention=vars_d]",
    "embedded": "vit_micro_patch8_64,absvit_micro_patch8_64,rvt_micro,rvt_micro[attention=vars_d],"
                "gfnet_micro,rsrnn_micro",
    "tiny": "vit_tiny_patch16_224,absvit_tiny_patch16_224,rvt_tiny[attention=vars_d]",
}
AMP = {"bf16": ("bfloat16", True), "fp16": ("float16", True), "none": ("auto", False)}


def write_jpegs(root: Path, images: int, classes: int = 10) -> Path:
    """``images`` JPEGs of 375 x 500 pixels (smooth colour fields with noise) in ``classes``
    class folders, under ``root/train`` and (a few) ``root/val``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for split, count in (("train", images), ("val", classes)):
        for i in range(count):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            a, b, c = rng.uniform(0.2, 1.0, 3)
            base = np.stack([xx * a * 0.4, yy * b * 0.6, (xx + yy) * c * 0.25], axis=-1)
            pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def model_alone(t, data, cfg: TrainConfig, device: torch.device, steps: int) -> float:
    """Images/s of forward, backward and optimizer step on one batch held on the device."""
    size = data.input.img_size
    x = torch.randn(cfg.batch_size, 3, size, size, device=device)
    y = torch.randint(0, len(data.classes), (cfg.batch_size,), device=device)
    if t.mixup is not None:
        x, y = t.mixup(x, y)
    t.train_model.train()

    def step() -> None:
        with torch.autocast(**t.autocast):
            loss = compute_loss(t.train_model, t.train_model(x), y, t.criterion)
        if t.scaler is not None:
            t.scaler(loss, t.optimizer)
        else:
            loss.backward()
            t.optimizer.step()
        t.optimizer.zero_grad(set_to_none=True)

    for _ in range(6):  # warm-up: on the CPU the first steps are several times slower (allocation)
        step()
    if device.type == "cuda":
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        return steps * cfg.batch_size / (time.perf_counter() - start)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return cfg.batch_size / float(np.median(seconds))  # the median step: robust to other work on the CPU


def bench_model(entry: str, data: str, args: argparse.Namespace, run_dir: Path) -> dict:
    name, model_args = parse_model_entry(entry)
    amp_dtype, amp = AMP[args.amp]
    recipe = {"recipe": args.recipe}
    if args.decode == "gpu":
        recipe["aa"] = "none"  # RandAugment runs on PIL images only
    if args.in_memory is not None:
        recipe["in_memory"] = args.in_memory == "on"
    cfg = TrainConfig(model=name, model_args=model_args, data=data, batch_size=args.batch_size,
                      epochs=2, workers=args.workers, device=args.device, amp=amp, amp_dtype=amp_dtype,
                      decode=args.decode, compile=args.compile, sync_every=args.sync_every,
                      progress=False, tensorboard=False, **recipe).resolved()
    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    info = DistInfo(device=device)
    data = build_data(cfg, info)
    t = build_trainee(cfg, data, info)
    with Progress(False) as progress:
        _, steps = train_one_epoch(cfg, data, t, 0, 0, run_dir, progress, info)  # warm-up
        totals, _ = train_one_epoch(cfg, data, t, 1, steps, run_dir, progress, info)
    alone = model_alone(t, data, cfg, device, args.steps)
    trainer = totals["img_per_s"]
    return dict(model=entry, trainer=trainer, alone=alone, outside=max(0.0, 1.0 - trainer / alone),
                data_wait=totals["data_wait"],
                hours=EPOCHS * IMAGENET_TRAIN_IMAGES / (DEVICES * trainer) / 3600)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(MODELS), default="micro", help="micro (64 px) or tiny (224 px)")
    parser.add_argument("--models", default=None, help="comma-separated NAME or NAME[KEY=VALUE,...] "
                        "(default: the size's ViT, AbSViT and RVT with VARS-D)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=tuple(AMP), default=None, help="bf16 (default on CUDA), fp16 or none")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader workers")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 (micro) or 128 (tiny) on CUDA, "
                        "32 (micro) or 8 (tiny) on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per epoch (default 20 on CUDA, 6 on "
                        "the CPU)")
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu", help="where JPEGs are decoded")
    parser.add_argument("--data", choices=("jpeg", "embedded"), default="jpeg",
                        help="generated JPEGs of ImageNet's size in an image folder, or the embedded data")
    parser.add_argument("--in-memory", choices=("on", "off"), default=None,
                        help="embedded data: in-memory batches (default on) or a data loader")
    parser.add_argument("--recipe", choices=("deit", "small"), default=None,
                        help="augmentation recipe (default: deit for JPEGs, small for the embedded data)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--sync-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.amp = args.amp or ("bf16" if cuda else "none")
    embedded = args.data == "embedded"
    if embedded and args.size != "micro":
        parser.error("--data embedded: the embedded images are 64 px, for the micro models (--size micro)")
    args.recipe = args.recipe or ("small" if embedded else "deit")
    args.batch_size = args.batch_size or {("micro", True): 64, ("tiny", True): 128,
                                          ("micro", False): 32, ("tiny", False): 8}[(args.size, cuda)]
    args.steps = args.steps or (20 if cuda else 6)
    entries = split_model_list(args.models or MODELS["embedded" if embedded else args.size])
    device_name = torch.cuda.get_device_name(0) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {device_name}; amp {args.amp}, batch {args.batch_size}, "
          f"{args.steps} steps per epoch, {args.workers} workers, "
          f"{'embedded data' + (', loader' if args.in_memory == 'off' else ', in memory') if embedded else 'JPEGs'}, "
          f"decode on {args.decode}, recipe {args.recipe}"
          f"{', compiled' if args.compile else ''}")
    header = (f"{'model':<34}{'trainer img/s':>14}{'model img/s':>13}{'outside model':>15}{'data wait':>11}"
              f"{'300 ep x 8 dev':>16}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = args.batch_size * args.steps
        data = (f"embedded:train={images},val=16,test=16" if embedded
                else str(write_jpegs(Path(tmp) / "data", images)))
        for entry in entries:
            rows.append(bench_model(entry, data, args, Path(tmp) / "run"))
    print_header(header)
    for r in rows:
        print(f"{r['model']:<34}{r['trainer']:>14.1f}{r['alone']:>13.1f}{100 * r['outside']:>14.0f}%"
              f"{100 * r['data_wait']:>10.0f}%{r['hours']:>15.1f}h")
    print("outside model: share of the trainer's step time not spent in the model's forward, backward and "
          "optimizer step; data wait: share spent waiting for the loader; last column: 300 ImageNet epochs "
          f"({IMAGENET_TRAIN_IMAGES:,} images) on {DEVICES} devices at the trainer's rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
