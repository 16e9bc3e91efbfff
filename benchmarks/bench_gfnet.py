"""Speed of GFNet-Ti with the global filter and with VARS-S: eval and training images/s.

Builds ``gfnet_ti`` (224 px, 10 classes) with ``mixer='filter'`` and ``mixer='vars_s'`` and times
an eval forward pass and a training step (forward, backward, SGD step) of each, on the CPU and,
when one is available, on the GPU. The two mixers alternate round by round and each keeps its
fastest round, so the ratio holds up on a busy machine; the load average is printed with it.
VARS-S runs three ISTA iterations over a dictionary of five filters per channel.

    python benchmarks/bench_gfnet.py           # a couple of minutes on 2 cores
    python benchmarks/bench_gfnet.py --quick   # well under a minute
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
import torch.nn.functional as F

import bioattn  # noqa: F401  (registers the models)
from bioattn.models import create_model
from timing import ModelRunner, time_rounds

MIXERS = ("filter", "vars_s")


class Runner(ModelRunner):
    """One GFNet-Ti with its eval batch, training batch and optimiser: ``step(mode)`` runs one
    eval forward or one training step."""

    eval_grad_mode = torch.inference_mode

    def __init__(self, mixer: str, x_eval: torch.Tensor, x_train: torch.Tensor, y_train: torch.Tensor,
                 depth: int | None) -> None:
        super().__init__(x_eval.device)
        torch.manual_seed(0)
        kwargs = dict(num_classes=10, **({"depth": depth} if depth else {}))
        self.model = create_model("gfnet_ti", mixer=mixer, **kwargs).to(self.device)
        self.optimiser = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.x, self.x_train, self.y_train = x_eval, x_train, y_train

    def loss(self) -> torch.Tensor:
        return F.cross_entropy(self.model(self.x_train), self.y_train)


def bench(device: torch.device, eval_bs: int, train_bs: int, rounds: int, depth: int | None) -> dict:
    x_eval = torch.randn(eval_bs, 3, 224, 224, device=device)
    x_train = torch.randn(train_bs, 3, 224, 224, device=device)
    y_train = torch.randint(0, 10, (train_bs,), device=device)
    runners = {mixer: Runner(mixer, x_eval, x_train, y_train, depth) for mixer in MIXERS}
    best_eval = time_rounds(runners, "eval", rounds, reduce=min)
    best_train = time_rounds(runners, "train", rounds, reduce=min)
    return {m: (eval_bs / best_eval[m], train_bs / best_train[m]) for m in MIXERS}


def report(device: torch.device, result: dict, note: str) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\n{device.type.upper()} ({name}){note}")
    print(f"{'mixer':8s} {'eval img/s':>11s} {'train img/s':>12s}")
    for mixer, (ev, tr) in result.items():
        print(f"{mixer:8s} {ev:11.1f} {tr:12.1f}")
    (fe, ft), (ve, vt) = result["filter"], result["vars_s"]
    print(f"vars_s costs {fe / ve:.2f}x the filter in eval, {ft / vt:.2f}x in training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, few rounds")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU even if there is one")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else 5
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"gfnet_ti, 224 px; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"load average {load:.1f}")
    depth = 4 if args.quick else None
    note = f", {depth} of the 12 blocks (--quick)" if depth else ""
    eval_bs, train_bs = (4, 2) if args.quick else (16, 8)
    report(torch.device("cpu"), bench(torch.device("cpu"), eval_bs, train_bs, rounds, depth), note)
    if torch.cuda.is_available() and not args.cpu_only:
        gpu = torch.device("cuda")
        report(gpu, bench(gpu, 64 if args.quick else 256, 32 if args.quick else 128, rounds * 2, depth), note)


if __name__ == "__main__":
    main()
