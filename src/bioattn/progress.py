"""Progress display shared by training and evaluation: rich progress bars on a terminal, plain
log lines elsewhere (a piped log or a batch job's output file stays readable). Every task shows
how far it is, its rate and the time left; a task that will take minutes says so, with its size,
once its first steps are timed."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

# In a log file a progress bar is redrawn as many lines; print a line at most this often instead.
LOG_INTERVAL_S = 30.0
# A task estimated to take at least this long announces its size and the estimate.
LONG_TASK_S = 60.0
# The estimate times the steps after the first (whose time includes starting up: workers, caches,
# first calls) for at least this long.
ESTIMATE_AFTER_S = 0.5


def format_duration(seconds: float) -> str:
    """``'45 s'``, ``'3 min'``, ``'1 h 20 min'``: a duration rounded to what a reader needs."""
    if seconds != seconds or seconds < 0:  # NaN or negative: unknown
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def format_rate(per_second: float, unit: str) -> str:
    """``'12.3 images/s'`` or, below one a second, ``'4.2 s/image'``."""
    if per_second <= 0:
        return f"- {unit}/s" if unit else "-/s"
    if per_second >= 1 or not unit:
        return f"{per_second:.3g} {unit}/s".replace(" /s", "/s")
    one = unit.removesuffix("es") if unit.endswith("sses") else unit.removesuffix("s")
    return f"{1 / per_second:.3g} s/{one}"


class _RateColumn(ProgressColumn):
    """The task's rate (``12.3/s``, the unit being beside the count; ``4 s/step`` when slower
    than one a second)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("")
        return Text(format_rate(speed, task.fields.get("unit", "") if speed < 1 else ""), style="cyan")


class _LeftColumn(ProgressColumn):
    """The time left, as :func:`format_duration` words."""

    def render(self, task) -> Text:
        left = task.time_remaining
        if task.finished:
            return Text("done", style="green")
        return Text("" if left is None else f"{format_duration(left)} left", style="cyan")


class Advance(Protocol):
    def __call__(self, n: int = 1, info: str | None = None) -> None: ...


class Progress:
    """``with Progress(enabled) as p``: ``task = p.task(description, total)``,
    ``p.update(task, advance=n, info="loss ...")``, ``p.log(message)``.

    On a terminal the tasks are rich progress bars on stderr, with their rate and time left.
    Elsewhere each task prints one line when it starts, at most every ``LOG_INTERVAL_S``
    seconds, and when it completes: ``done/total unit (elapsed, rate, time left) info``.
    A task given its ``size`` (what it covers, in words) prints one more line once its first
    steps are timed, when it will take at least ``LONG_TASK_S``: its size, the estimate and
    its ``hint`` (how to make it shorter). Disabled, it only prints ``log`` messages.
    """

    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._bars = None
        self._state: dict[int, dict] = {}

    def __enter__(self) -> Progress:
        if self.enabled and self.stream.isatty():
            self._bars = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), _RateColumn(), _LeftColumn(),
                TextColumn("{task.fields[info]}"), console=Console(file=self.stream),
            )
            self._bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = None

    def task(self, description: str, total: int, unit: str = "", size: str | None = None,
             hint: str | None = None) -> int | None:
        """A new task of ``total`` steps counted in ``unit`` (``images``, ``steps``...).
        ``size`` and ``hint`` are the words of the line a long task prints (class docstring)."""
        if not self.enabled:
            return None
        now = time.monotonic()
        state = dict(description=description, total=total, done=0, info="", unit=unit, start=now,
                     printed=now, size=size, hint=hint, estimated=size is None, first=None)
        if self._bars is not None:
            key = self._bars.add_task(description, total=total, info="", unit=unit)
            self._state[key] = state
            return key
        key = len(self._state)
        self._state[key] = state
        self._print_line(state, now)
        return key

    def update(self, task: int | None, advance: int = 1, info: str | None = None) -> None:
        if task is None:
            return
        state = self._state[task]
        state["done"] += advance
        if info is not None:
            state["info"] = info
        now = time.monotonic()
        if not state["estimated"] and state["done"] > 0:
            if state["first"] is None:
                state["first"] = (now, state["done"])
            elif now - state["first"][0] >= ESTIMATE_AFTER_S and state["done"] > state["first"][1]:
                state["estimated"] = True
                self._announce(state, now)
        if self._bars is not None:
            self._bars.update(task, advance=advance, **({"info": info} if info is not None else {}))
            return
        if state["done"] >= state["total"] or now - state["printed"] >= LOG_INTERVAL_S:
            state["printed"] = now
            self._print_line(state, now)

    def log(self, message: str) -> None:
        if self._bars is not None:
            self._bars.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def _announce(self, state: dict, now: float) -> None:
        """The one line of a long task: its size, the time it will take here (the first step as it
        took, the rest at the pace of the steps since), the hint."""
        first_time, first_done = state["first"]
        pace = (now - first_time) / (state["done"] - first_done)
        estimate = first_time - state["start"] + pace * (state["total"] - first_done)
        if estimate < LONG_TASK_S:
            return
        hint = f"; {state['hint']}" if state["hint"] else ""
        self.log(f"{state['description']}: {state['size']}, about {format_duration(estimate)} here{hint}")

    def _print_line(self, state: dict, now: float) -> None:
        elapsed = now - state["start"]
        done, total = state["done"], state["total"]
        unit = f" {state['unit']}" if state["unit"] else ""
        timing = f"{elapsed:.0f} s"
        if 0 < done < total and elapsed > 0:
            rate = done / elapsed
            timing += f", {format_rate(rate, state['unit'])}, {format_duration((total - done) / rate)} left"
        elif done >= total and done > 0 and elapsed > 0:
            timing += f", {format_rate(done / elapsed, state['unit'])}"
        info = f" {state['info']}" if state["info"] else ""
        print(f"{state['description']}: {done}/{total}{unit} ({timing}){info}", file=self.stream, flush=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, unit: str = "",
                 size: str | None = None, hint: str | None = None) -> Iterator[Advance]:
    """One task of :class:`Progress`; yields ``advance(n, info=None)``."""
    with Progress(enabled) as progress:
        task = progress.task(description, total, unit=unit, size=size, hint=hint)
        yield lambda n=1, info=None: progress.update(task, n, info)
