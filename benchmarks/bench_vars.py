"""Speed of the RVT backbone with each attention: eval and training images/s, plus a profile.

Measures ``rvt_tiny`` (224 px) and ``rvt_micro`` (64 px), and ``rvt_small`` with ``--sizes``,
with ``self-att``, ``perf``, ``vars_s``, ``vars_d`` and ``vars_sd`` in one run (``--compile-ista``
adds VARS-D and VARS-SD with their sparse coding compiled), then profiles one forward pass of the
tiny model with self-attention and with VARS-D (torch.profiler, top operators by self time).

Timings interleave the attentions round by round and keep each one's fastest round, which
makes the ratios robust to other work on the machine; the load average is printed with them.
Next to the measured time ratios to self-attention it prints the reference ratios of the
authors' code measured on an H200 (bf16, batch 128, 224 px) and the targets for bioattn's
VARS (VARS-D at most 1.5x self-attention, VARS-SD at most 2.2x, eval and training).

    python benchmarks/bench_vars.py              # a few minutes on 2 idle cores
    python benchmarks/bench_vars.py --quick      # about a minute
    python benchmarks/bench_vars.py --threads 1  # steadier ratios on a busy machine
    python benchmarks/bench_vars.py --device cuda --amp bf16 --sizes tiny,small --compile-ista
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bioattn.models.rvt import _RVT_ARCHS, RVT
from bioattn.models.vars import ATTENTIONS
from timing import CPU, ModelRunner, add_device_options, parse_amp, parse_device, print_header, sync, time_rounds

SIZES = {
    # name: (architecture, image size, eval batch, train batch) on the CPU; 128 and 128 on CUDA
    "tiny": ("rvt_tiny", 224, 8, 4),
    "small": ("rvt_small", 224, 8, 4),
    "micro": ("rvt_micro", 64, 64, 64),
}
# time ratios to self-attention of the authors' code on an H200 (bf16, batch 128, 224 px):
# (architecture, attention) -> (eval, train); None: not measured
REFERENCE = {
    ("rvt_tiny", "vars_d"): (2.72, 2.55), ("rvt_small", "vars_d"): (2.17, 2.19),
    ("rvt_tiny", "vars_sd"): (2.72, None), ("rvt_small", "vars_sd"): (3.44, None),
}
TARGETS = {"vars_d": 1.5, "vars_sd": 2.2}
COMPILED = " (compiled)"
WARMUP = 2  # untimed rounds per mode (they also compile)


def build(arch: str, attention: str, device: torch.device, num_classes: int = 10) -> RVT:
    torch.manual_seed(0)
    compile_ista = attention.endswith(COMPILED)
    attention = attention.removesuffix(COMPILED)
    model = RVT(num_classes=num_classes, attention=attention, **_RVT_ARCHS[arch],
                **({"compile_ista": True} if compile_ista else {}))
    return model.to(device)


class Runner(ModelRunner):
    """One RVT with its eval batch, training batch and optimiser: ``step(mode)`` runs one eval
    forward or one training step under the chosen precision."""

    eval_grad_mode = torch.inference_mode

    def __init__(self, model: RVT, x_eval: torch.Tensor, x_train: torch.Tensor, y_train: torch.Tensor,
                 device: torch.device, amp: torch.dtype | None) -> None:
        super().__init__(device, amp)
        self.model = model
        self.x, self.x_train, self.y_train = x_eval, x_train, y_train
        self.optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def loss(self) -> torch.Tensor:
        return F.cross_entropy(self.model(self.x_train), self.y_train)


def bench_size(name: str, attentions: list[str], rounds: int, scale: float, device: torch.device,
               amp: torch.dtype | None) -> list[dict]:
    arch, size, eval_bs, train_bs = SIZES[name]
    if device.type == "cuda":
        eval_bs = train_bs = 128
    eval_bs = max(2, int(eval_bs * scale))
    train_bs = max(2, int(train_bs * scale))
    x_eval = torch.randn(eval_bs, 3, size, size, device=device)
    x_train = torch.randn(train_bs, 3, size, size, device=device)
    y_train = torch.randint(0, 10, (train_bs,), device=device)
    runners = {a: Runner(build(arch, a, device), x_eval, x_train, y_train, device, amp) for a in attentions}
    best_eval = time_rounds(runners, "eval", rounds, reduce=min, warmup=WARMUP)
    best_train = time_rounds(runners, "train", rounds, reduce=min, warmup=WARMUP)
    rows = []
    ref = best_eval.get("self-att")
    ref_train = best_train.get("self-att")
    for a in attentions:
        base = a.removesuffix(COMPILED)
        rows.append(dict(
            size=f"{arch} ({size}px)", attention=a,
            params=sum(p.numel() for p in runners[a].model.parameters()) / 1e6,
            eval_ips=eval_bs / best_eval[a], train_ips=train_bs / best_train[a],
            eval_ratio=best_eval[a] / ref if ref else float("nan"),
            train_ratio=best_train[a] / ref_train if ref_train else float("nan"),
            reference=REFERENCE.get((arch, base), (None, None)), target=TARGETS.get(base),
        ))
    return rows


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_table(rows: list[dict]) -> None:
    head = (f"{'model':<20} {'attention':<20} {'params':>8} {'eval img/s':>11} {'train img/s':>12} "
            f"{'eval / self-att':>16} {'train / self-att':>17} {'official eval':>14} {'official train':>15} "
            f"{'target':>7}")
    print_header(head)
    for r in rows:
        ref_eval, ref_train = r["reference"]
        print(f"{r['size']:<20} {r['attention']:<20} {r['params']:>7.2f}M {r['eval_ips']:>11.1f} "
              f"{r['train_ips']:>12.1f} {r['eval_ratio']:>15.2f}x {r['train_ratio']:>16.2f}x "
              f"{_ratio(ref_eval):>14} {_ratio(ref_train):>15} {_ratio(r['target']):>7}")


def profile_forward(arch: str, size: int, batch: int, attention: str, rows: int,
                    device: torch.device = CPU) -> None:
    model = build(arch, attention, device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode():
        model(x)
        with profile(activities=activities) as prof:
            model(x)
            sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile: {arch} {attention}, one forward pass of {batch} images")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=44))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller batches")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--sizes", default="tiny,micro", help="comma list of: tiny, small, micro")
    parser.add_argument("--attentions", default=",".join(ATTENTIONS))
    parser.add_argument("--compile-ista", action="store_true",
                        help="also time vars_d and vars_sd with their sparse coding compiled")
    add_device_options(parser)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    torch.set_num_threads(args.threads)
    amp = parse_amp(args.amp)
    attentions = args.attentions.split(",")
    if args.compile_ista:
        attentions += [a + COMPILED for a in ("vars_d", "vars_sd") if a in attentions]
    rounds, scale = (1, 0.5) if args.quick else (2, 1.0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"torch {torch.__version__}, {where}, amp {args.amp}, load average {os.getloadavg()[0]:.1f} at start")
    start = time.perf_counter()
    rows = []
    for name in args.sizes.split(","):
        rows += bench_size(name, attentions, rounds, scale, device, amp)
    print()
    print_table(rows)
    print(f"\n(best of {rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} at end; official: the "
          "authors' code on an H200, bf16, batch 128; target: bioattn's goal on a GPU, eval and training)")
    if not args.no_profile:
        batch = 2 if args.quick else 4
        for attention in ("self-att", "vars_d"):
            profile_forward("rvt_tiny", 224, batch, attention, rows=10, device=device)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
