"""Cost of AbSViT's top-down pass relative to its feedforward ViT twin.

Measures, in one run on the same machine, images/s of an eval forward and of a training step
(forward, loss, backward, AdamW step) for a ViT and the AbSViT of the same size:
Tiny/16 at 224 (batch 32) and the micro size at 64 (batch 64). Rounds of the two models
alternate and the fastest round of each is kept (the one least disturbed by other processes),
so that load from elsewhere hits both alike. The FLOP ratio (counted by torch, independent of
machine load) is printed beside the timed one.

Targets: AbSViT eval forward at most 2.3x the ViT's time, training step at most 2.8x.

    python benchmarks/bench_absvit.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_absvit.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from timm.layers import use_fused_attn
from torch.utils.flop_counter import FlopCounterMode

import bioattn  # noqa: F401  (registers the models)
from bioattn.models import create_model
from bioattn.protocol import compute_loss

LIMITS = {"eval": 2.3, "train": 2.8}


# label, ViT name, AbSViT name, batch, timed rounds {mode: (full, quick)}
SIZES = [
    ("tiny/16 @224", "vit_tiny_patch16_224", "absvit_tiny_patch16_224", 32, {"eval": (3, 2), "train": (2, 1)}),
    ("micro/8 @64", "vit_micro_patch8_64", "absvit_micro_patch8_64", 64, {"eval": (20, 6), "train": (10, 4)}),
]


class Runner:
    """One model with its batch, loss and optimiser: ``step(mode)`` runs one eval forward or
    one training step."""

    def __init__(self, name: str, batch: int):
        torch.manual_seed(0)
        self.model = create_model(name)
        size = self.model.patch_embed.img_size
        self.x = torch.randn(batch, 3, size[0], size[1])
        self.y = torch.randint(0, self.model.num_classes, (batch,))
        self.criterion = torch.nn.CrossEntropyLoss()
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def step(self, mode: str) -> None:
        if mode == "eval":
            self.model.eval()
            with torch.no_grad():
                self.model(self.x)
            return
        self.model.train()
        loss = compute_loss(self.model, self.model.forward_readouts(self.x), self.y, self.criterion)
        self.optimiser.zero_grad(set_to_none=True)
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
                compute_loss(self.model, self.model.forward_readouts(self.x), self.y, self.criterion).backward()
                self.model.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def fastest_seconds(runners: dict[str, Runner], mode: str, rounds: int) -> dict[str, float]:
    """One warm-up round, then ``rounds`` alternating rounds; each runner's fastest time."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(rounds + 1):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.step(mode)
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fused attention: {use_fused_attn()}")
    header = (f"{'size':<14}{'batch':>6}  {'mode':<6}{'ViT img/s':>10}{'AbSViT img/s':>14}"
              f"{'ratio':>7}{'FLOPs':>7}{'limit':>7}  ok")
    print(header)
    print("-" * len(header))
    all_ok = True
    for label, vit_name, absvit_name, batch, rounds in SIZES:
        runners = {"vit": Runner(vit_name, batch), "absvit": Runner(absvit_name, batch)}
        for mode, limit in LIMITS.items():
            full, quick = rounds[mode]
            seconds = fastest_seconds(runners, mode, quick if args.quick else full)
            ratio = seconds["absvit"] / seconds["vit"]
            flop_ratio = runners["absvit"].flops(mode) / runners["vit"].flops(mode)
            ok = ratio <= limit
            all_ok &= ok
            print(f"{label:<14}{batch:>6}  {mode:<6}{batch / seconds['vit']:>10.1f}"
                  f"{batch / seconds['absvit']:>14.1f}{ratio:>7.2f}{flop_ratio:>7.2f}{limit:>7.1f}"
                  f"  {'yes' if ok else 'NO'}")
    print("ratio: AbSViT / ViT time per batch (fastest of alternating rounds); "
          "FLOPs: AbSViT / ViT counted FLOPs")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
