"""Evaluation: clean accuracy and the robustness suites.

``run_suites(model, data, suites=[...], mean=..., std=...)`` runs any of the suites listed in
:data:`SUITE_NAMES` and returns every figure in one dict; ``evaluate_checkpoint(checkpoint, suites,
data=...)`` does the same from a checkpoint and a data set name (what ``bioattn eval`` calls).
The names are imported from :mod:`bioattn.evaluate.suites` and :mod:`bioattn.evaluate.saved`
when first used, so that importing one evaluation module does not load every suite.
"""

from __future__ import annotations

import importlib

__all__ = ["SUITE_NAMES", "SuiteSettings", "evaluate_checkpoint", "run_suites"]


def __getattr__(name: str):
    if name in __all__:
        module = ".saved" if name == "evaluate_checkpoint" else ".suites"
        return getattr(importlib.import_module(module, __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
