"""Speed of the RVT backbone with each attention: eval and training images/s, plus a profile.

Measures ``rvt_tiny`` (224 px) and ``rvt_micro`` (64 px) with ``self-att``, ``perf``,
``vars_s``, ``vars_d`` and ``vars_sd`` in one run, then profiles one forward pass of the tiny
model with self-attention and with VARS-D (torch.profiler, top operators by self CPU time).

Timings interleave the attentions round by round and keep each one's fastest round, which
makes the ratios robust to other work on the machine; the load average is printed with them.

    python benchmarks/bench_vars.py              # a few minutes on 2 idle cores
    python benchmarks/bench_vars.py --quick      # about a minute
    python benchmarks/bench_vars.py --threads 1  # steadier ratios on a busy machine
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bioattn.models.vars import _RVT_ARCHS, ATTENTIONS, RVT

SIZES = {
    # name: (architecture, image size, eval batch, train batch)
    "tiny": ("rvt_tiny", 224, 8, 4),
    "micro": ("rvt_micro", 64, 64, 64),
}


def build(arch: str, attention: str, num_classes: int = 10) -> RVT:
    torch.manual_seed(0)
    return RVT(num_classes=num_classes, attention=attention, **_RVT_ARCHS[arch])


def time_eval(model: RVT, x: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start


def time_train(model: RVT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    model.train()
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def bench_size(name: str, attentions: list[str], rounds: int, scale: float) -> list[dict]:
    arch, size, eval_bs, train_bs = SIZES[name]
    eval_bs = max(2, int(eval_bs * scale))
    train_bs = max(2, int(train_bs * scale))
    x_eval = torch.randn(eval_bs, 3, size, size)
    x_train = torch.randn(train_bs, 3, size, size)
    y_train = torch.randint(0, 10, (train_bs,))
    models = {a: build(arch, a) for a in attentions}
    opts = {a: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for a, m in models.items()}
    for a in attentions:  # warm-up
        time_eval(models[a], x_eval)
        time_train(models[a], opts[a], x_train, y_train)
    best_eval = {a: float("inf") for a in attentions}
    best_train = {a: float("inf") for a in attentions}
    for _ in range(rounds):
        for a in attentions:
            best_eval[a] = min(best_eval[a], time_eval(models[a], x_eval))
            best_train[a] = min(best_train[a], time_train(models[a], opts[a], x_train, y_train))
    rows = []
    ref = best_eval.get("self-att")
    ref_train = best_train.get("self-att")
    for a in attentions:
        rows.append(dict(
            size=f"{arch} ({size}px)", attention=a,
            params=sum(p.numel() for p in models[a].parameters()) / 1e6,
            eval_ips=eval_bs / best_eval[a], train_ips=train_bs / best_train[a],
            eval_ratio=best_eval[a] / ref if ref else float("nan"),
            train_ratio=best_train[a] / ref_train if ref_train else float("nan"),
        ))
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'model':<20} {'attention':<9} {'params':>8} {'eval img/s':>11} {'train img/s':>12} " \
           f"{'eval time / self-att':>21} {'train time / self-att':>22}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['size']:<20} {r['attention']:<9} {r['params']:>7.2f}M {r['eval_ips']:>11.1f} "
              f"{r['train_ips']:>12.1f} {r['eval_ratio']:>21.2f} {r['train_ratio']:>22.2f}")


def profile_forward(arch: str, size: int, batch: int, attention: str, rows: int) -> None:
    model = build(arch, attention).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    print(f"\nprofile: {arch} {attention}, one forward pass of {batch} images")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows,
                                    max_name_column_width=44))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller batches")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--sizes", default="tiny,micro", help="comma list of: tiny, micro")
    parser.add_argument("--attentions", default=",".join(ATTENTIONS))
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attentions = args.attentions.split(",")
    rounds, scale = (1, 0.5) if args.quick else (2, 1.0)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    start = time.perf_counter()
    rows = []
    for name in args.sizes.split(","):
        rows += bench_size(name, attentions, rounds, scale)
    print()
    print_table(rows)
    print(f"\n(best of {rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} at end)")
    if not args.no_profile:
        batch = 2 if args.quick else 4
        for attention in ("self-att", "vars_d"):
            profile_forward("rvt_tiny", 224, batch, attention, rows=10)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
