"""Corruption-error arithmetic (Hendrycks & Dietterich, ICLR 2019).

Errors are fractions in [0, 1]. ``errors[c][s]`` is a model's top-1 error on corruption ``c``
at severity ``s``.

* Corruption error normalised by a baseline: ``CE_c = sum_s err_{c,s} / sum_s base_{c,s}``;
  with the baseline given as one mean error per corruption (AlexNet's on ImageNet-C) this is
  ``mean_s err_{c,s} / base_c``. ``mCE = mean_c CE_c``, reported x100.
* Relative corruption error: the degradation from clean error, normalised the same way,
  ``rCE_c = sum_s (err_{c,s} - err_clean) / sum_s (base_{c,s} - base_clean)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..errors import BioattnError

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)

# AlexNet's top-1 error on ImageNet-C, averaged over the five severities.
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}

Errors = Mapping[str, Mapping[int, float]]


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def corruption_errors(errors: Errors, baseline: Mapping[str, float] | Errors) -> dict[str, float]:
    """``CE_c`` (fraction, not x100) for every corruption in ``errors``.

    ``baseline[c]`` is either a mean error over severities (AlexNet's table) or a per-severity
    mapping (a baseline model measured on the same severities).
    """
    out = {}
    for c, per_sev in errors.items():
        if c not in baseline:
            raise BioattnError(f"no baseline error for corruption '{c}'")
        if not per_sev:
            raise BioattnError(f"no severities measured for corruption '{c}'")
        base = baseline[c]
        if isinstance(base, Mapping):
            missing = [s for s in per_sev if s not in base]
            if missing:
                raise BioattnError(f"baseline lacks severities {missing} of corruption '{c}'")
            out[c] = _ratio(sum(per_sev.values()), sum(base[s] for s in per_sev))
        else:
            out[c] = _ratio(sum(per_sev.values()) / len(per_sev), float(base))
    return out


def mce(errors: Errors, baseline: Mapping[str, float] | Errors = ALEXNET_ERRORS) -> dict:
    """``{"ce": {c: CE_c x100}, "mce": mean_c CE_c x100}``; AlexNet's errors by default."""
    ce = corruption_errors(errors, baseline)
    values = list(ce.values())
    return {
        "ce": {c: 100.0 * v for c, v in ce.items()},
        "mce": 100.0 * sum(values) / len(values) if values else math.nan,
    }


def relative_mce(errors: Errors, clean_error: float, baseline: Errors, baseline_clean_error: float) -> dict:
    """``{"relative_ce": {c: rCE_c x100}, "relative_mce": mean x100}`` against a baseline model.

    A corruption on which the baseline does not degrade gives NaN (undefined ratio).
    """
    out = {}
    for c, per_sev in errors.items():
        if c not in baseline:
            raise BioattnError(f"no baseline error for corruption '{c}'")
        num = sum(e - clean_error for e in per_sev.values())
        den = sum(baseline[c][s] - baseline_clean_error for s in per_sev)
        out[c] = _ratio(num, den)
    values = list(out.values())
    return {
        "relative_ce": {c: 100.0 * v for c, v in out.items()},
        "relative_mce": 100.0 * sum(values) / len(values) if values else math.nan,
    }


def check_corruption_names(names) -> list[str]:
    """``names`` as a list, each one of the 15 benchmark corruptions."""
    names = list(names)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise BioattnError(
            f"unknown corruption(s) {', '.join(unknown)}; known: {', '.join(CORRUPTIONS)}"
        )
    if not names:
        raise BioattnError("no corruptions selected")
    return names


def check_severities(severities) -> list[int]:
    """``severities`` as a sorted list of distinct integers in 1..5."""
    out = sorted({int(s) for s in severities})
    bad = [s for s in out if s not in SEVERITIES]
    if bad or not out:
        raise BioattnError(f"severities must be integers in 1..5, got {list(severities)}")
    return out
