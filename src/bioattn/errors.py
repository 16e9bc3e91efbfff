"""Errors that bioattn reports to users as a single clear line."""


class BioattnError(Exception):
    """A user-facing error: bad input, a missing file, a mismatched checkpoint.

    The command line prints ``error: <message>`` and exits non-zero without a traceback.
    """


class NonFiniteLossError(BioattnError):
    """Training produced a NaN or infinite loss."""
