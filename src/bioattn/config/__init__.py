"""Settings of bioattn's commands, declared once.

Each command's settings are a dataclass whose fields carry, in their metadata, everything the
command line needs: the help text, the flag name (``--<field-name>`` unless given), choices, a
metavar, how a default of ``None`` resolves, and a check of the allowed values. ``bioattn.cli``
builds every flag from these fields; the dataclasses check their values in ``__post_init__``, so
the Python API and the command line refuse the same inputs with the same one-line message, which
names the flag and the allowed range.

The package's modules: :mod:`~bioattn.config.fields` (the settings machinery and the checks),
:mod:`~bioattn.config.parsing` (text to values), :mod:`~bioattn.config.train` (training
settings and recipes), :mod:`~bioattn.config.evaluate` (evaluation settings) and
:mod:`~bioattn.config.commands` (the other commands' settings). Every public name is importable
from ``bioattn.config``.

The package imports neither torch, timm nor numpy at module level: the command line builds its
parsers (``bioattn --help``) from it without loading them. A check that needs timm imports it
when it runs.
"""

from __future__ import annotations

from ..specs import embedded_options
from ..tasks import TASKS, resolve_task, task_of_data, task_spec
from .commands import (
    AttendSettings,
    ConvertSettings,
    DataGenerateSettings,
    DataPreviewSettings,
    DemoOptions,
    DomainsSettings,
    ModelsSettings,
    ReportSettings,
    ResultsSettings,
    ZooSettings,
    parse_model_entry,
    split_model_list,
)
from .evaluate import PRESETS, SUITE_NAMES, EvalSettings, SuiteSettings, suite_settings
from .fields import (
    Check,
    Settings,
    check_settings,
    each,
    flag_of,
    integer,
    model_arguments,
    number,
    one_of,
    output_path,
    setting,
    with_explicit,
)
from .parsing import (
    key_values,
    parse_eps,
    parse_int_list,
    parse_names,
    parse_on_off,
    parse_one_eps,
    parse_rgb,
)
from .train import AMP_DTYPES, COMPILE_MODES, DECODE_PLACES, RECIPES, TrainConfig, rand_augment, timm_optimizer

__all__ = [
    "AMP_DTYPES", "COMPILE_MODES", "DECODE_PLACES", "PRESETS", "RECIPES", "SUITE_NAMES", "TASKS", "AttendSettings",
    "Check", "ConvertSettings", "DataGenerateSettings", "DataPreviewSettings", "DemoOptions", "DomainsSettings",
    "EvalSettings", "ModelsSettings", "ReportSettings", "ResultsSettings", "Settings", "SuiteSettings", "TrainConfig",
    "ZooSettings",
    "check_settings", "each", "embedded_options", "flag_of", "integer", "key_values", "model_arguments", "number",
    "one_of", "output_path", "parse_eps", "parse_int_list", "parse_model_entry", "parse_names", "parse_on_off",
    "parse_one_eps", "parse_rgb", "rand_augment", "resolve_task", "setting", "split_model_list", "suite_settings",
    "task_of_data", "task_spec", "timm_optimizer", "with_explicit",
]
