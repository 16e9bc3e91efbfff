"""Progress display shared by training and evaluation: rich progress bars on a terminal, plain
log lines elsewhere (a piped log or a batch job's output file stays readable)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

# In a log file a progress bar is redrawn as many lines; print a line at most this often instead.
LOG_INTERVAL_S = 30.0


class Progress:
    """``with Progress(enabled) as p``: ``task = p.task(description, total)``,
    ``p.update(task, advance=n, info="loss ...")``, ``p.log(message)``.

    On a terminal the tasks are rich progress bars on stderr. Elsewhere each task prints one
    line when it starts, at most every ``LOG_INTERVAL_S`` seconds, and when it completes.
    Disabled, it only prints ``log`` messages.
    """

    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._bars = None
        self._plain: dict[int, dict] = {}

    def __enter__(self) -> Progress:
        if self.enabled and self.stream.isatty():
            self._bars = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=Console(file=self.stream),
            )
            self._bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = None

    def task(self, description: str, total: int) -> int | None:
        if not self.enabled:
            return None
        if self._bars is not None:
            return self._bars.add_task(description, total=total, info="")
        key = len(self._plain)
        now = time.monotonic()
        self._plain[key] = dict(description=description, total=total, done=0, info="",
                                start=now, printed=now)
        self._print_line(self._plain[key], now)
        return key

    def update(self, task: int | None, advance: int = 1, info: str | None = None) -> None:
        if task is None:
            return
        if self._bars is not None:
            self._bars.update(task, advance=advance, **({"info": info} if info is not None else {}))
            return
        state = self._plain[task]
        state["done"] += advance
        if info is not None:
            state["info"] = info
        now = time.monotonic()
        if state["done"] >= state["total"] or now - state["printed"] >= LOG_INTERVAL_S:
            state["printed"] = now
            self._print_line(state, now)

    def log(self, message: str) -> None:
        if self._bars is not None:
            self._bars.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def _print_line(self, state: dict, now: float) -> None:
        elapsed = now - state["start"]
        info = f" {state['info']}" if state["info"] else ""
        print(f"{state['description']}: {state['done']}/{state['total']} ({elapsed:.0f} s){info}",
              file=self.stream, flush=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """One task of :class:`Progress`; yields ``advance(n)``."""
    with Progress(enabled) as progress:
        task = progress.task(description, total)
        yield lambda n: progress.update(task, n)
