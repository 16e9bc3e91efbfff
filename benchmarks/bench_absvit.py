"""Cost of AbSViT's top-down pass relative to its feedforward ViT twin.

Measures, in one run on the same machine, images/s of an eval forward and of a training step
(forward, loss, backward, AdamW step) for a ViT and the AbSViT of the same size:
Tiny/16 at 224 (batch 32) and the micro size at 64 (batch 64). Rounds of the two models
alternate and the fastest round of each is kept (the one least disturbed by other processes),
so that load from elsewhere hits both alike. The FLOP ratio (counted by torch, independent of
machine load) is printed beside the timed one.

Limits checked on any device: AbSViT eval forward at most 2.3x the ViT's time, training step at
most 2.8x. Printed beside them: the ratios of the authors' code on an H200 (bf16, batch 128,
224 px: Ti/S/B eval 2.33x/2.31x/2.08x, train 2.14x/2.02x/2.10x) and bioattn's target on a GPU
(at most 2.1x, eval and training).

    python benchmarks/bench_absvit.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_absvit.py --quick    # fewer rounds
    python benchmarks/bench_absvit.py --device cuda --amp bf16 --sizes tiny,small,base
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch
from timm.layers import use_fused_attn
from torch.utils.flop_counter import FlopCounterMode

import bioattn  # noqa: F401  (registers the models)
from bioattn.models import create_model
from bioattn.protocol import compute_loss, forward_readouts

LIMITS = {"eval": 2.3, "train": 2.8}
CPU = torch.device("cpu")
GPU_TARGET = 2.1
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


# key: (label, ViT name, AbSViT name, CPU batch, timed rounds {mode: (full, quick)}); 128 images on CUDA
SIZES = {
    "tiny": ("tiny/16 @224", "vit_tiny_patch16_224", "absvit_tiny_patch16_224", 32,
             {"eval": (3, 2), "train": (2, 1)}),
    "small": ("small/16 @224", "vit_small_patch16_224", "absvit_small_patch16_224", 16,
              {"eval": (3, 2), "train": (2, 1)}),
    "base": ("base/16 @224", "vit_base_patch16_224", "absvit_base_patch16_224", 8,
             {"eval": (3, 2), "train": (2, 1)}),
    "micro": ("micro/8 @64", "vit_micro_patch8_64", "absvit_micro_patch8_64", 64,
              {"eval": (20, 6), "train": (10, 4)}),
}
# time ratios AbSViT / ViT of the authors' code on an H200 (bf16, batch 128, 224 px)
OFFICIAL = {"tiny": {"eval": 2.33, "train": 2.14}, "small": {"eval": 2.31, "train": 2.02},
            "base": {"eval": 2.08, "train": 2.10}}


class Runner:
    """One model with its batch, loss and optimiser: ``step(mode)`` runs one eval forward or
    one training step."""

    def __init__(self, name: str, batch: int, device: torch.device = CPU,
                 amp: torch.dtype | None = None):
        torch.manual_seed(0)
        self.device = device
        self.amp = amp
        self.model = create_model(name).to(device)
        size = self.model.patch_embed.img_size
        self.x = torch.randn(batch, 3, size[0], size[1], device=device)
        self.y = torch.randint(0, self.model.num_classes, (batch,), device=device)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, mode: str) -> None:
        if mode == "eval":
            self.model.eval()
            with torch.no_grad(), self.autocast():
                self.model(self.x)
            return
        self.model.train()
        with self.autocast():
            loss = compute_loss(self.model, forward_readouts(self.model, self.x), self.y, self.criterion)
        self.optimiser.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
        else:
            loss.backward()
            self.optimiser.step()

    def flops(self, mode: str) -> int:
        """FLOPs of one eval forward, or of forward and backward in training."""
        with FlopCounterMode(display=False) as counter:
            if mode == "eval":
                self.model.eval()
                with torch.no_grad():
                    self.model(self.x)
            else:
                self.model.train()
                compute_loss(self.model, forward_readouts(self.model, self.x), self.y, self.criterion).backward()
                self.model.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def fastest_seconds(runners: dict[str, Runner], mode: str, rounds: int) -> dict[str, float]:
    """One warm-up round, then ``rounds`` alternating rounds; each runner's fastest time."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(rounds + 1):
        for name, runner in runners.items():
            runner.sync()
            start = time.perf_counter()
            runner.step(mode)
            runner.sync()
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sizes", default="tiny,micro", help="comma list of: " + ", ".join(SIZES))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=tuple(AMP), default="none",
                        help="autocast type: bf16, fp16 (with loss scaling) or none (default)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    amp = AMP[args.amp]
    unknown = [s for s in args.sizes.split(",") if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {', '.join(unknown)} (choose from {', '.join(SIZES)})")

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, amp {args.amp}, fused attention: {use_fused_attn()}")
    header = (f"{'size':<14}{'batch':>6}  {'mode':<6}{'ViT img/s':>10}{'AbSViT img/s':>14}"
              f"{'ratio':>7}{'FLOPs':>7}{'limit':>7}  ok{'official':>10}{'target':>8}")
    print(header)
    print("-" * len(header))
    all_ok = True
    for key in args.sizes.split(","):
        label, vit_name, absvit_name, batch, rounds = SIZES[key]
        batch = 128 if device.type == "cuda" else batch
        runners = {"vit": Runner(vit_name, batch, device, amp), "absvit": Runner(absvit_name, batch, device, amp)}
        for mode, limit in LIMITS.items():
            full, quick = rounds[mode]
            seconds = fastest_seconds(runners, mode, quick if args.quick else full)
            ratio = seconds["absvit"] / seconds["vit"]
            flop_ratio = runners["absvit"].flops(mode) / runners["vit"].flops(mode)
            ok = ratio <= limit
            all_ok &= ok
            official = OFFICIAL.get(key, {}).get(mode)
            print(f"{label:<14}{batch:>6}  {mode:<6}{batch / seconds['vit']:>10.1f}"
                  f"{batch / seconds['absvit']:>14.1f}{ratio:>7.2f}{flop_ratio:>7.2f}{limit:>7.1f}"
                  f"  {'yes' if ok else 'NO '}{official if official else '-':>10}"
                  f"{GPU_TARGET if key != 'micro' else '-':>8}")
    print("ratio: AbSViT / ViT time per batch (fastest of alternating rounds); FLOPs: AbSViT / ViT counted "
          "FLOPs; official: the authors' code on an H200 (bf16, batch 128); target: bioattn's goal on a GPU")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
