"""Text to values: the parsers the command line applies to flag values, which the settings
also apply to strings given in Python (``eps="1/255,2e-3"``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from ..errors import BioattnError

_NON_FINITE_WORDS = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
                     "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf}


def key_values(items: Iterable[str] | None) -> dict:
    """``key=value`` pairs; values parsed as JSON when possible (numbers, booleans, lists), and
    ``nan``/``inf`` as the floats they name."""

    out = {}
    for item in items or []:
        if "=" not in item:
            raise BioattnError(f"expected key=value, got '{item}'")
        key, value = item.split("=", 1)
        if value.strip().lower() in _NON_FINITE_WORDS:
            out[key] = _NON_FINITE_WORDS[value.strip().lower()]
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_eps(text: str | float | Iterable) -> list[float]:
    """``"1/255,2e-3"`` -> ``[0.00392..., 0.002]`` (fractions ``a/b`` allowed)."""
    if isinstance(text, (int, float)):
        return [float(text)]
    if not isinstance(text, str):
        return [float(v) for v in text]
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            if "/" in item:
                num, den = item.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(item)
        except (ValueError, ZeroDivisionError):
            raise BioattnError(f"bad eps '{item}' (expected a number or a fraction such as 1/255)") from None
        out.append(value)
    if not out:
        raise BioattnError("no eps given")
    return out


def parse_one_eps(text: str) -> float:
    values = parse_eps(text)
    if len(values) != 1:
        raise BioattnError(f"expected one number, got '{text}'")
    return values[0]


def parse_int_list(text: str | Iterable[int] | None, what: str) -> list[int] | None:
    if text is None or not isinstance(text, str):
        return None if text is None else [int(v) for v in text]
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BioattnError(f"bad {what} '{text}' (expected integers separated by commas)") from None


def parse_names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_on_off(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected on/off, got '{value}'")


def parse_rgb(text: str) -> list[float]:
    values = [float(v) for v in text.replace(",", " ").split()]
    if len(values) != 3:
        raise ValueError(f"expected 3 numbers (R,G,B), got '{text}'")
    return values
