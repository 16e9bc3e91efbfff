"""Start-up time of the ``bioattn`` command line: ``bioattn --help`` and an argument error.

Runs each command 5 times in a fresh process and prints the median wall time; exits non-zero
if either median is 2 s or more. Usage: ``python benchmarks/cli_startup.py``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

LIMIT_S = 2.0
RUNS = 5
COMMANDS = {
    "bioattn --help": ["--help"],
    "bioattn train --help": ["train", "--help"],
    "bioattn train --epochs 0 (argument error)": ["train", "--model", "vit_micro_patch8_64", "--epochs", "0"],
}


def median_seconds(args: list[str]) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(RUNS):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bioattn", *args], capture_output=True)
        times.append(time.perf_counter() - start)
        code = proc.returncode
    return statistics.median(times), code


def main() -> int:
    slow = False
    for name, args in COMMANDS.items():
        seconds, code = median_seconds(args)
        slow |= seconds >= LIMIT_S
        print(f"{name:<45} {seconds:6.3f} s (median of {RUNS}; exit status {code})")
    print(f"limit: {LIMIT_S:.1f} s -> {'FAIL' if slow else 'ok'}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
