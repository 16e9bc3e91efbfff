"""Shared fixtures and helpers: tiny ImageNet-style folders, an isolated data cache, and runs of
several processes (distributed training) that cannot hang the suite."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)
REFERENCE = Path(__file__).parent / "reference"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test uses a private data cache (never the user's ~/.cache/bioattn)."""
    cache = os.environ.get("BIOATTN_TEST_CACHE")
    if cache is None:
        cache = str(tmp_path_factory.getbasetemp() / "bioattn-cache")
    monkeypatch.setenv("BIOATTN_CACHE", cache)


def make_image_folder(root: Path, classes=("a", "b"), per_class: int = 12, size: int = 32,
                      splits=("train", "val"), seed: int = 0) -> Path:
    """Write an ImageNet-style tree whose classes differ by brightness (easy to learn)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for ci, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = 40 + 170 * ci / max(1, len(classes) - 1)
                pixels = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(fn, args: tuple, nprocs: int, timeout: float = 240.0, attempts: int = 2) -> None:
    """Run ``fn(rank, port, *args)`` in ``nprocs`` fresh (spawned) processes and wait for them.

    A group that is still running after ``timeout`` seconds is killed and started again on a new
    port (a rendezvous can stall when another process takes the port between its choice and its
    use); after ``attempts`` such groups the test fails. An exception in a child fails at once.
    """
    import warnings

    import torch.multiprocessing as mp

    for attempt in range(1, attempts + 1):
        context = mp.start_processes(fn, args=(free_port(), *args), nprocs=nprocs, join=False,
                                     start_method="spawn")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if context.join(timeout=5):
                return
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
        warnings.warn(f"{nprocs} processes of {fn.__name__} still ran after {timeout:.0f} s "
                      f"(attempt {attempt} of {attempts}); killed", stacklevel=2)
    pytest.fail(f"{fn.__name__} in {nprocs} processes did not finish in {attempts} x {timeout:.0f} s")


def compile_backend_problem() -> str | None:
    """Why ``torch.compile`` cannot run here (None when it can): tests of compiled paths skip
    with this reason only."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))
    except Exception as exc:  # inductor builds C++ on the CPU: no working compiler, no compile
        return f"torch.compile cannot build on this machine: {str(exc).splitlines()[0]}"
    return None


@contextlib.contextmanager
def killed_before_saving_epoch(monkeypatch, epoch: int = 2):
    """Within the block, training stops with KeyboardInterrupt once epoch ``epoch`` is trained
    and before its checkpoint is written, as a kill mid-run would; afterwards saving works
    again."""
    import bioattn.train as tr

    real_save = tr._save

    def dies(run_dir, name, model, meta, state):
        if meta["epoch"] == epoch:
            raise KeyboardInterrupt
        return real_save(run_dir, name, model, meta, state)

    monkeypatch.setattr(tr, "_save", dies)
    try:
        yield
    finally:
        monkeypatch.setattr(tr, "_save", real_save)
