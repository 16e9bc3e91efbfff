"""Training speed of the micro glimpse models (RS-RNN and its baselines) on 64x64 images.

Times a training step (forward, protocol loss, backward, AdamW step) on a batch of 128 images for
each micro model with its default number of glimpses (4; FF-CNN 1), keeps the fastest of several
rounds (the one least disturbed by other processes; models alternate so that load hits all
alike), and converts it into seconds per epoch of 20k images.

Targets: an rsrnn_micro epoch of 20k images within 120 s, and its step at most 5x FF-CNN's
(it runs the encoder on four 32x32 glimpses plus a ConvGRU, FF-CNN once on the 64x64 image).

    python benchmarks/bench_rsrnn.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_rsrnn.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import sys

import torch

import bioattn  # noqa: F401  (registers the models)
from bioattn.models import create_model
from bioattn.protocol import compute_loss
from timing import ModelRunner, time_rounds

MODELS = ["rsrnn_micro", "retina_gru_micro", "crop_s_micro", "crop_d_micro", "s3ta_micro", "ffcnn_micro"]
BATCH = 128
EPOCH = 20000
EPOCH_LIMIT_S = 120.0
RATIO_LIMIT = 5.0


class Runner(ModelRunner):
    """One micro model with its optimiser, on the CPU: ``step("train")`` runs one training step
    on the shared batch."""

    def __init__(self, name: str, x: torch.Tensor, y: torch.Tensor, criterion: torch.nn.Module) -> None:
        super().__init__()
        self.model = create_model(name).train()
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x, self.y, self.criterion = x, y, criterion

    def loss(self) -> torch.Tensor:
        return compute_loss(self.model, self.model.forward_readouts(self.x), self.y, self.criterion)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else 8
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 64, 64)
    y = torch.randint(0, 10, (BATCH,))
    criterion = torch.nn.CrossEntropyLoss()
    runners = {name: Runner(name, x, y, criterion) for name in MODELS}
    best = time_rounds(runners, "train", rounds, reduce=min)
    print(f"{torch.get_num_threads()} threads, batch {BATCH}, fastest of {rounds} rounds")
    for name in MODELS:
        epoch = best[name] * EPOCH / BATCH
        print(f"{name:<18} {1000 * best[name]:8.0f} ms/step  {BATCH / best[name]:7.0f} img/s  "
              f"{epoch:6.0f} s per 20k-image epoch")
    epoch = best["rsrnn_micro"] * EPOCH / BATCH
    ratio = best["rsrnn_micro"] / best["ffcnn_micro"]
    ok = epoch <= EPOCH_LIMIT_S and ratio <= RATIO_LIMIT
    print(f"rsrnn_micro: {epoch:.0f} s/epoch (target <= {EPOCH_LIMIT_S:.0f}), "
          f"{ratio:.1f}x FF-CNN's step (target <= {RATIO_LIMIT:.0f}x): {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
