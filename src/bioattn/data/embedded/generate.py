"""Generating images over a process pool: work is cut on a fixed grid of chunks, so that the
result does not depend on the range requested or the number of workers."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Iterator

import numpy as np

from ...errors import BioattnError
from .arrays import EmbeddedArrays, empty_arrays
from .scene import render
from .spec import EmbeddedSpec


def _chunk_size(size: int) -> int:
    return max(8, int(128 * (64 / size) ** 2))


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (not Linux)
        return os.cpu_count() or 1


def _render_job(job) -> dict[str, np.ndarray]:
    """Images ``lo:hi`` of a split as arrays, for ``job = (spec, split, lo, hi)``: the unit of
    work of the process pool."""
    return render(*job)


def iter_chunks(spec: EmbeddedSpec, split: str, start: int, stop: int,
                workers: int | None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Rendered pieces covering ``start:stop``, in order, as ``(offset from start, arrays)``.

    Work is cut on a fixed grid of chunk boundaries (a function of the spec only), so every image
    comes out of the same computation whatever the range and the number of workers.
    """
    if stop <= start:
        return
    size = _chunk_size(spec.size)
    jobs = []
    for lo in range(start // size * size, stop, size):
        jobs.append((spec, split, lo, min(lo + size, spec.split_size(split))))
    workers = _available_cpus() if workers is None else workers
    if workers < 1:
        raise BioattnError(f"workers must be at least 1, got {workers}")
    workers = min(workers, len(jobs))
    if workers <= 1 or multiprocessing.current_process().daemon:
        results = map(_render_job, jobs)
        pool = None
    else:
        # fork: workers need only numpy, and start in milliseconds instead of re-importing torch
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with warnings.catch_warnings():
            # the children run numpy code only, which is safe after fork
            warnings.filterwarnings("ignore", message=".*multi-threaded.*fork", category=DeprecationWarning)
            pool = multiprocessing.get_context(method).Pool(workers)
        results = pool.imap(_render_job, jobs)
    try:
        for (_, _, lo, hi), arrays in zip(jobs, results):
            a, b = max(lo, start), min(hi, stop)
            yield a - start, {key: value[a - lo:b - lo] for key, value in arrays.items()}
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def generate_split(spec: EmbeddedSpec, split: str, start: int = 0, stop: int | None = None,
                   workers: int | None = None) -> EmbeddedArrays:
    """Images ``start:stop`` of a split, computed now (no cache). ``workers`` processes (default:
    one per available CPU) share the work; the result does not depend on it."""
    n = spec.split_size(split)
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise BioattnError(f"range {start}:{stop} is outside the {split} split (0:{n})")
    out = empty_arrays(spec, stop - start)
    for offset, arrays in iter_chunks(spec, split, start, stop, workers):
        for key, value in arrays.items():
            out[key][offset:offset + len(value)] = value
    return EmbeddedArrays(**out)
