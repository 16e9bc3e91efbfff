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
import sys

import torch
from timm.layers import use_fused_attn

import bioattn  # noqa: F401  (registers the models)
from bioattn.models import create_model
from bioattn.protocol import compute_loss, forward_readouts
from timing import CPU, ModelRunner, add_device_options, count_flops, parse_amp, parse_device, print_header, time_rounds

LIMITS = {"eval": 2.3, "train": 2.8}
GPU_TARGET = 2.1


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


class Runner(ModelRunner):
    """One model with its batch, loss and optimiser: ``step(mode)`` runs one eval forward or
    one training step."""

    def __init__(self, name: str, batch: int, device: torch.device = CPU,
                 amp: torch.dtype | None = None):
        super().__init__(device, amp)
        torch.manual_seed(0)
        self.model = create_model(name).to(device)
        size = self.model.patch_embed.img_size
        self.x = torch.randn(batch, 3, size[0], size[1], device=device)
        self.y = torch.randint(0, self.model.num_classes, (batch,), device=device)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def loss(self) -> torch.Tensor:
        return compute_loss(self.model, forward_readouts(self.model, self.x), self.y, self.criterion)

    def flops(self, mode: str) -> int:
        """FLOPs of one eval forward, or of forward and backward in training."""
        if mode == "eval":
            self.model.eval()
            with torch.no_grad():
                return count_flops(self.model, self.x)
        self.model.train()
        flops = count_flops(lambda: self.loss().backward())
        self.model.zero_grad(set_to_none=True)
        return flops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sizes", default="tiny,micro", help="comma list of: " + ", ".join(SIZES))
    add_device_options(parser)
    args = parser.parse_args(argv)
    device = parse_device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = parse_amp(args.amp)
    unknown = [s for s in args.sizes.split(",") if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {', '.join(unknown)} (choose from {', '.join(SIZES)})")

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, amp {args.amp}, fused attention: {use_fused_attn()}")
    print_header(f"{'size':<14}{'batch':>6}  {'mode':<6}{'ViT img/s':>10}{'AbSViT img/s':>14}"
                 f"{'ratio':>7}{'FLOPs':>7}{'limit':>7}  ok{'official':>10}{'target':>8}")
    all_ok = True
    for key in args.sizes.split(","):
        label, vit_name, absvit_name, batch, rounds = SIZES[key]
        batch = 128 if device.type == "cuda" else batch
        runners = {"vit": Runner(vit_name, batch, device, amp), "absvit": Runner(absvit_name, batch, device, amp)}
        for mode, limit in LIMITS.items():
            full, quick = rounds[mode]
            seconds = time_rounds(runners, mode, quick if args.quick else full, reduce=min)
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
