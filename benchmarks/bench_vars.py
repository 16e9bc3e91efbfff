"""Speed of VARS against its self-attention twins: eval and training images/s, plus a profile.

Two tables:

* the RVT backbone with each attention: ``rvt_tiny`` (224 px), and ``rvt_small`` with ``--sizes``,
  with ``self-att``, ``perf``, ``vars_s``, ``vars_d`` and ``vars_sd`` in one run (``--compile-ista``
  adds VARS-D and VARS-SD with their sparse coding compiled), beside the reference ratios of the
  authors' code measured on an H200 (bf16, batch 128, 224 px) and the targets for bioattn's VARS
  (VARS-D at most 1.5x self-attention, VARS-SD at most 2.2x, eval and training);
* the zoo's micro models as they train (``--twins``; 64 px, batch 128): ``rvt_micro`` with
  ``vars_s``, ``vars_d`` and ``vars_sd`` against its self-attention, the DeiT-style ViT with VARS-D
  in the micro ViT's layout against ``vit_micro_patch8_64``, and ``gfnet_micro`` with the
  ``vars_s`` mixer against the global filter; each VARS model's time ratio to its twin is printed
  beside the ratio of the FLOPs of a training step (matrix products and convolutions), so that a
  time ratio well above the FLOP ratio points at work that is not arithmetic.

Then it profiles one forward pass of the tiny RVT with self-attention and with VARS-D
(torch.profiler, top operators by self time).

Timings interleave the models round by round and keep each one's fastest round, which makes
the ratios robust to other work on the machine; the load average is printed with them.
``--clock cpu`` times by the process's CPU time instead of the wall clock: with ``--threads 1``
the time a step computes, unaffected by other processes taking the cores (on an idle machine
both clocks agree).

    python benchmarks/bench_vars.py              # a few minutes on 2 idle cores
    python benchmarks/bench_vars.py --quick      # about a minute
    python benchmarks/bench_vars.py --sizes '' --threads 1 --clock cpu   # the micro twins, on a busy machine
    python benchmarks/bench_vars.py --device cuda --amp bf16 --sizes tiny,small --compile-ista
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import timm
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import bioattn  # noqa: F401  (registers the models with timm)
from bioattn.models.rvt import _RVT_ARCHS, RVT
from bioattn.models.vars import ATTENTIONS
from timing import (
    CPU,
    ModelRunner,
    add_device_options,
    count_flops,
    parse_amp,
    parse_device,
    print_header,
    sync,
    time_rounds,
)

SIZES = {
    # name: (architecture, image size, eval batch, train batch) on the CPU; 128 and 128 on CUDA
    "tiny": ("rvt_tiny", 224, 8, 4),
    "small": ("rvt_small", 224, 8, 4),
    "micro": ("rvt_micro", 64, 64, 64),
}
# the micro layout of the zoo's ViTs (vit_micro_patch8_64), here with VARS-D in every block
MICRO_VIT = dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3, global_pool="avg")
# twin group: [(label, timm name, model arguments)], the first the twin the others are compared with
TWINS = {
    "rvt_micro": [("self-att", "rvt_micro", {}), ("vars_s", "rvt_micro", dict(attention="vars_s")),
                  ("vars_d", "rvt_micro", dict(attention="vars_d")),
                  ("vars_sd", "rvt_micro", dict(attention="vars_sd"))],
    "vit_micro": [("self-att", "vit_micro_patch8_64", {}),
                  ("vars_d", "deit_tiny_patch16_224_vars_d", MICRO_VIT)],
    "gfnet_micro": [("filter", "gfnet_micro", {}), ("vars_s", "gfnet_micro", dict(mixer="vars_s"))],
}
TWIN_IMAGE_SIZE = 64
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

    def timed(self, fn, *args) -> float:
        if CLOCK["clock"] == "cpu" and self.device.type == "cpu":
            start = time.process_time()
            fn(*args)
            return time.process_time() - start
        return super().timed(fn, *args)


# how steps are timed: "wall" (perf_counter) or "cpu" (the process's CPU time; --clock)
CLOCK = {"clock": "wall"}


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


def bench_twins(groups: list[str], rounds: int, batch: int, device: torch.device,
                amp: torch.dtype | None) -> list[dict]:
    """Eval and training images/s of each model of the twin ``groups`` at ``batch`` images of
    64 px, the time ratios to the group's twin and the FLOP ratio of a training step."""
    x = torch.randn(batch, 3, TWIN_IMAGE_SIZE, TWIN_IMAGE_SIZE, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows = []
    for group in groups:
        runners, flops = {}, {}
        for label, name, kwargs in TWINS[group]:
            torch.manual_seed(0)
            model = timm.create_model(name, num_classes=10, **kwargs).to(device)
            runner = Runner(model, x, x, y, device, amp)
            runners[label] = runner
            model.train()
            flops[label] = count_flops(lambda r=runner: r.loss().backward())
            model.zero_grad(set_to_none=True)
        best_eval = time_rounds(runners, "eval", rounds, reduce=min, warmup=WARMUP)
        best_train = time_rounds(runners, "train", rounds, reduce=min, warmup=WARMUP)
        twin = TWINS[group][0][0]
        for label, name, _ in TWINS[group]:
            rows.append(dict(
                group=group, model=name, attention=label, eval_ips=batch / best_eval[label],
                train_ips=batch / best_train[label], eval_ratio=best_eval[label] / best_eval[twin],
                train_ratio=best_train[label] / best_train[twin], flop_ratio=flops[label] / flops[twin],
            ))
    return rows


def print_twins(rows: list[dict], batch: int) -> None:
    head = (f"{'group':<12} {'model':<29} {'attention':<10} {'eval img/s':>11} {'train img/s':>12} "
            f"{'eval / twin':>12} {'train / twin':>13} {'FLOPs / twin':>13}")
    print(f"\nthe zoo's micro models and their twins (first of each group), {TWIN_IMAGE_SIZE} px, batch {batch}")
    print_header(head)
    for r in rows:
        print(f"{r['group']:<12} {r['model']:<29} {r['attention']:<10} {r['eval_ips']:>11.1f} "
              f"{r['train_ips']:>12.1f} {r['eval_ratio']:>11.2f}x {r['train_ratio']:>12.2f}x "
              f"{r['flop_ratio']:>12.2f}x")


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
    parser.add_argument("--sizes", default="tiny", help="comma list of: tiny, small, micro ('' for none)")
    parser.add_argument("--twins", default=",".join(TWINS),
                        help=f"comma list of micro twin groups: {', '.join(TWINS)} ('' for none)")
    parser.add_argument("--batch", type=int, default=128, help="batch of the micro twins (default 128)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time steps by the wall clock or by the process's CPU time (CPU only)")
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
    CLOCK["clock"] = args.clock
    rows = []
    for name in filter(None, args.sizes.split(",")):
        rows += bench_size(name, attentions, rounds, scale, device, amp)
    if rows:
        print()
        print_table(rows)
        print(f"\n(best of {rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} at end; official: "
              "the authors' code on an H200, bf16, batch 128; target: bioattn's goal on a GPU, eval and training)")
    groups = [g for g in args.twins.split(",") if g]
    unknown = [g for g in groups if g not in TWINS]
    if unknown:
        parser.error(f"unknown twin group {', '.join(unknown)} (choose from {', '.join(TWINS)})")
    if groups:
        batch = max(2, int(args.batch * scale))
        print_twins(bench_twins(groups, rounds, batch, device, amp), batch)
        print(f"\n(best of {rounds} interleaved rounds, {args.clock} clock; load average "
              f"{os.getloadavg()[0]:.1f} at end; FLOPs: matrix products and convolutions of a training step)")
    if not args.no_profile:
        batch = 2 if args.quick else 4
        for attention in ("self-att", "vars_d"):
            profile_forward("rvt_tiny", 224, batch, attention, rows=10, device=device)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
