"""Shared fixtures and helpers: tiny ImageNet-style folders, an isolated data cache, runs of
several processes (distributed training) that cannot hang the suite, and a check that a figure's
texts do not cover each other."""

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


def _text_boxes(fig) -> list:
    """``(name, window extent)`` of every visible text of ``fig`` (see :func:`overlapping_text`)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []

    def add(artist, name: str) -> None:
        if artist is None or not artist.get_visible():
            return
        if hasattr(artist, "get_text") and not artist.get_text().strip():
            return
        box = artist.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            boxes.append((name, box.expanded(1.0, 1.0).padded(-0.5)))

    for k, legend in enumerate(fig.legends):
        add(legend, f"figure legend {k}")
    for text in fig.texts:  # the figure's title among them
        add(text, f"figure text {text.get_text()!r}")
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        where = f"axes {i}"
        for title in (ax.title, ax._left_title, ax._right_title):
            add(title, f"{where} title {title.get_text()!r}")
        if ax.axison:
            add(ax.xaxis.label, f"{where} x label {ax.xaxis.label.get_text()!r}")
            add(ax.yaxis.label, f"{where} y label {ax.yaxis.label.get_text()!r}")
            for axis, (low, high) in ((ax.xaxis, ax.xaxis.get_view_interval()),
                                      (ax.yaxis, ax.yaxis.get_view_interval())):
                low, high = min(low, high), max(low, high)
                tolerance = 1e-9 * max(1.0, abs(high - low))
                for tick in axis.get_major_ticks():
                    if low - tolerance <= tick.get_loc() <= high + tolerance:
                        for label in (tick.label1, tick.label2):
                            add(label, f"{where} tick label {label.get_text()!r}")
        add(ax.get_legend(), f"{where} legend")
        for text in ax.texts:
            add(text, f"{where} text {text.get_text()!r}")
    return boxes


def overlapping_text(fig, inside: bool = True) -> list[str]:
    """The pairs of texts of a matplotlib figure that cover each other, as ``"a / b"`` lines:
    its title, legends and texts, and each axes' title, axis labels, tick labels (those of
    ticks in view), legend and texts, measured by their window extents after a draw with the
    figure's own renderer. Boxes that only touch (within half a pixel) do not count. With
    ``inside``, a text that the figure's edge cuts is listed too (``"a / figure edge"``); leave
    it out for figures saved with ``bbox_inches="tight"``, which grow to their texts."""
    boxes = _text_boxes(fig)
    found = [f"{a} / {b}" for k, (a, box_a) in enumerate(boxes) for b, box_b in boxes[k + 1:]
             if box_a.overlaps(box_b)]
    if inside:
        edge = fig.bbox.padded(0.5)
        found += [f"{name} / figure edge" for name, box in boxes
                  if box.x0 < edge.x0 or box.y0 < edge.y0 or box.x1 > edge.x1 or box.y1 > edge.y1]
    return found
