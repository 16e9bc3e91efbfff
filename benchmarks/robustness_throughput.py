"""Throughput of the robustness suites' slow parts: images per second for each corruption
generated on the fly (serial and with a process pool), and for PGD on a small timm model.

    python benchmarks/robustness_throughput.py --size 224 --images 64 --workers 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def corruption_rates(size: int, images: int, workers: int) -> dict[str, float]:
    from bioattn.evaluate.corruptions import Corrupter, image_seed, warm_up
    from bioattn.evaluate.mce import CORRUPTIONS

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    warm_up(CORRUPTIONS)
    print(f"glass_blur compile: {time.perf_counter() - t0:.1f} s (once per process, before forking)")
    rates = {}
    with Corrupter(workers, CORRUPTIONS) as corrupter:
        corrupter.corrupt(batch[:max(1, workers)], "contrast", 1, list(range(max(1, workers))))  # start workers
        for name in CORRUPTIONS:
            seeds = [image_seed(0, name, 3, i) for i in range(images)]
            t0 = time.perf_counter()
            corrupter.corrupt(batch, name, 3, seeds)
            rates[name] = images / (time.perf_counter() - t0)
    return rates


def pgd_rate(size: int, images: int, device: str) -> float:
    import timm
    import torch

    from bioattn.evaluate.attacks import pgd
    from bioattn.evaluate.runtime import PixelModel, Pixels

    model = timm.create_model("resnet18", num_classes=1000).to(device).eval()
    wrapped = PixelModel(model, Pixels((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    x = torch.rand(images, 3, size, size, device=device)
    y = torch.randint(0, 1000, (images,), device=device)
    pgd(wrapped, x[:2], y[:2], iters=1)
    t0 = time.perf_counter()
    pgd(wrapped, x, y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-pgd", action="store_true")
    args = p.parse_args()
    rates = corruption_rates(args.size, args.images, args.workers)
    for name, rate in rates.items():
        print(f"{name:<18} {rate:8.1f} images/s  ({args.workers} workers, {args.size} px)")
    total = sum(args.images / r for r in rates.values()) / args.images
    print(f"all 15 corruptions, one severity: {total * 1000:.1f} ms per image")
    if not args.skip_pgd:
        rate = pgd_rate(args.size, args.images, args.device)
        print(f"PGD-5 resnet18 {args.size} px on {args.device}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
