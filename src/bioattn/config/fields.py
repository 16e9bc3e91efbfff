"""The settings machinery: a dataclass field that carries its command-line description
(:func:`setting`), the checks of allowed values, and :class:`Settings`, the base of every
command's settings, which checks its values when it is made.

A check returns ``None`` when a value is allowed, else the allowed range as text; the caller
names the flag and the value, so the Python API and the command line refuse the same inputs
with the same one-line message.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import field
from pathlib import Path
from typing import Any

from ..errors import BioattnError
from ..fileio import kind_of_mode

# A check returns None when the value is allowed, else the allowed range as text
# ("an integer >= 1"); the caller names the flag and the value.
Check = Callable[[Any], "str | None"]


def setting(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
            choices: Iterable[str] | None = None, metavar: str | None = None,
            resolves: str | None = None, check: Check | None = None,
            parse: Callable[[str], Any] | None = None, factory: Callable[[], Any] | None = None,
            group: str | None = None, positional: bool = False, repeat: bool = False,
            nargs: str | None = None, cli_default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its command-line description.

    ``help``: one sentence; ``flag``: the option (default ``--field-name``); ``choices``,
    ``metavar``: as in argparse; ``resolves``: what a default of ``None`` means, shown as the
    default; ``check``: the allowed values (see :data:`Check`); ``parse``: text -> value for the
    command line (default: from the type); ``group``: the help section; ``positional``: an
    argument without a flag; ``repeat``: the flag may be given several times (``parse`` then
    receives the list); ``nargs``: as in argparse (``parse`` then applies to each item);
    ``cli_default``: the command line's default where it differs from the
    Python API's (e.g. data-loader workers).
    """
    metadata = {
        "help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar, "resolves": resolves, "check": check, "parse": parse, "group": group,
        "positional": positional, "repeat": repeat, "nargs": nargs, "cli_default": cli_default,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line name of a settings field."""
    if f.metadata.get("positional"):
        return f.name.upper()
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


# ------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int | None = None, high: int | None = None) -> Check:
    """An integer in ``[low, high]`` (either bound may be open-ended)."""
    if high is None:
        text = "an integer" if low is None else f"an integer >= {low}"
    else:
        text = f"an integer from {low} to {high}"

    def check(value):
        if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
            return text
        return None
    return check


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Check:
    """A finite number in the interval from ``low`` to ``high`` (open ends where said)."""
    if low is not None and high is not None:
        text = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        text = f"a number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        text = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        text = "a finite number"

    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return text
        if low is not None and (value <= low if low_open else value < low):
            return text
        if high is not None and (value >= high if high_open else value > high):
            return text
        return None
    return check


def one_of(*allowed: str) -> Check:
    def check(value):
        return None if value in allowed else f"one of {', '.join(allowed)}"
    return check


def each(inner: Check, what: str = "a list") -> Check:
    """A non-empty list whose every item passes ``inner``."""
    def check(value):
        if not isinstance(value, (list, tuple)) or not value:
            return f"{what} of {inner(None) or 'values'}"
        for item in value:
            problem = inner(item)
            if problem:
                return f"{what} of {problem}"
        return None
    return check


def flag_words(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def output_path(kind: str) -> Check:
    """A place to write a ``file`` or a ``directory``: not an existing thing of the other kind,
    and its nearest existing folder writable (missing folders are created when writing)."""
    def check(value):
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            return f"a {kind} path"
        path = Path(value).expanduser()
        if kind == "file" and path.is_symlink():
            return "a file path, not a symbolic link (bioattn does not replace links)"
        existing = _kind_of(path)
        if existing == "a directory" and kind == "file":
            return "a file path, not an existing directory"
        if existing == "a file" and kind == "directory":
            return "a directory path, not an existing file"
        if existing not in (None, "a file", "a directory"):
            return f"a {kind} path, not {existing}"
        parent = path.parent
        while not parent.exists():
            if parent.parent == parent:
                break
            parent = parent.parent
        if not parent.is_dir():
            return f"a path whose parent is a directory ({parent} is a file)"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"a path in a writable directory ({parent} is not writable)"
        return None
    return check


def _kind_of(path: Path) -> str | None:
    """``None`` (nothing there) or what is there, links followed ('a file', 'a directory', ...)."""
    try:
        return kind_of_mode(path.stat().st_mode)
    except OSError:
        return None


def check_settings(settings: Any, deferred: Iterable[str] = ()) -> None:
    """Check every field of ``settings`` against its metadata's check; the fields named in
    ``deferred`` (checks that load a library) run after all the others."""
    fields = [f for f in dataclasses.fields(settings) if f.metadata.get("check") is not None]
    fields.sort(key=lambda f: f.name in deferred)
    for f in fields:
        value = getattr(settings, f.name)
        if value is None:
            continue
        problem = f.metadata["check"](value)
        if problem:
            raise BioattnError(f"{flag_of(f)} must be {problem}; got {flag_words(value)}")


class Settings:
    """Base of the settings dataclasses: checks values on creation."""

    _deferred_checks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_settings(self, self._deferred_checks)


def _non_finite(value: Any) -> bool:
    """Whether ``value`` (a number, or a list or mapping of them) holds a NaN or an infinity."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def model_arguments(value: Any) -> str | None:
    """Constructor arguments: a mapping from names to values, every number finite."""
    allowed = "KEY=VALUE constructor arguments with finite numbers"
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        return allowed
    bad = [k for k, v in value.items() if _non_finite(v)]
    if bad:
        return f"{allowed} ({bad[0]} is {value[bad[0]]!r})"
    return None


def rgb_triple(positive: bool) -> Check:
    def check(value):
        text = "3 finite numbers > 0 (R,G,B)" if positive else "3 finite numbers (R,G,B)"
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            return text
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return text
            if positive and v <= 0:
                return text
        return None
    return check


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def with_explicit(settings: Any, names: Iterable[str]) -> Any:
    """``settings`` with the fields the user gave recorded in its ``explicit`` field, where it
    has one (see :meth:`TrainConfig.explicit_settings`); other settings unchanged."""
    if any(f.name == "explicit" for f in dataclasses.fields(settings)):
        return dataclasses.replace(settings, explicit=frozenset(names))
    return settings


# number checks several settings share
FRACTION = number(0, 1)
NON_NEGATIVE = number(0)
POSITIVE = number(0, low_open=True)
