"""Evaluation: clean accuracy and the robustness suites.

``run_suites(model, data, suites=[...], mean=..., std=...)`` runs any of the suites listed in
:data:`SUITES` and returns every figure in one dict; ``evaluate_checkpoint(checkpoint, suites,
data=...)`` does the same from a checkpoint and a data set name (what ``bioattn eval`` calls).
"""

from .suites import SUITES, SuiteSettings, evaluate_checkpoint, run_suites  # noqa: F401
