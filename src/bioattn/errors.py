"""Errors that bioattn reports to users as a single clear line."""


class BioattnError(Exception):
    """A user-facing error: bad input, a missing file, a mismatched checkpoint.

    The command line prints ``error: <message>`` and exits non-zero without a traceback.
    """


class NonFiniteLossError(BioattnError):
    """Training produced a NaN or infinite loss."""


def listing(items, limit: int = 10) -> str:
    """``items`` joined by commas for a message, at most ``limit`` of them (``... and N more``)."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
