"""Evaluation: clean accuracy and the robustness suites."""
