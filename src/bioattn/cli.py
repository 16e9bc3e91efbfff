"""The ``bioattn`` command line: parses arguments into settings, then calls library code.

Every command's flags are built from its settings dataclasses in :mod:`bioattn.config` (help
text, defaults, choices and checks are declared there once). Every command has a Python
equivalent, named in its ``--help``. Bad input ends the command with ``error: <one line>`` and
exit status 2, without a traceback; so do errors raised by the file system, timm, torch or PIL.
An unexpected error (a bug) prints ``error: internal error: ...`` and exits 1; set
``BIOATTN_DEBUG=1`` for its traceback.

This module and :mod:`bioattn.config` import neither torch nor timm at module level, so that
``--help`` and argument errors answer at once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, config
from .errors import BioattnError


# ------------------------------------------------------------------------------------------
# flags from settings
# ------------------------------------------------------------------------------------------
def _default_text(f: dataclasses.Field) -> str | None:
    md = f.metadata
    if md.get("resolves") is not None:
        return md["resolves"]
    if md.get("cli_default") is not dataclasses.MISSING:
        return str(md["cli_default"])
    if f.default is dataclasses.MISSING or f.default is None or f.default == "":
        return None
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    return str(f.default)


def _bool_style(f: dataclasses.Field) -> str:
    """``store_true`` (default off), ``store_false`` (a --no-... flag) or ``on_off`` (a value)."""
    flag = config.flag_of(f)
    if flag.startswith("--no-"):
        return "store_false"
    return "store_true" if f.default is False else "on_off"


def _is_bool(f: dataclasses.Field) -> bool:
    return str(f.type).replace(" ", "") in ("bool", "bool|None")


def _value_type(f: dataclasses.Field) -> Callable[[str], Any]:
    md = f.metadata
    parse = md.get("parse")
    if parse is None:
        kind = str(f.type).split("|")[0].strip()
        parse = {"int": int, "float": float}.get(kind, str)
    if md.get("repeat"):
        return str  # collected, then parsed as a list

    def convert(text: str):
        try:
            return parse(text)
        except (ValueError, BioattnError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_settings(parser: argparse.ArgumentParser, cls: type, groups: dict[str, Any]) -> None:
    """Add a flag (or positional argument) for every described field of ``cls``. Flags not given
    are left out of the parsed namespace, so the settings' own defaults apply and the given
    ones are known."""
    for f in dataclasses.fields(cls):
        md = f.metadata
        if "help" not in md:
            continue
        target = parser
        if md.get("group"):
            if md["group"] not in groups:
                groups[md["group"]] = parser.add_argument_group(md["group"])
            target = groups[md["group"]]
        help_text = md["help"]
        shown = _default_text(f)
        if shown is not None and not (_is_bool(f) and _bool_style(f) != "on_off"):
            help_text = f"{help_text} (default: {shown})"
        help_text = help_text.replace("%", "%%")
        kwargs: dict[str, Any] = {"help": help_text}
        if md.get("positional"):
            if md.get("nargs"):
                kwargs["nargs"] = md["nargs"]
            elif f.default is not dataclasses.MISSING:
                kwargs["nargs"] = "?"
                kwargs["default"] = argparse.SUPPRESS
            kwargs["type"] = _value_type(f)
            kwargs["metavar"] = md.get("metavar") or f.name.upper()
            target.add_argument(f.name, **kwargs)
            continue
        kwargs["dest"] = f.name
        kwargs["default"] = argparse.SUPPRESS
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if required:
            kwargs["required"] = True
        if _is_bool(f):
            style = _bool_style(f)
            if style == "on_off":
                kwargs.update(type=_value_type_on_off, metavar="on|off")
            else:
                kwargs["action"] = style
        else:
            kwargs["type"] = _value_type(f)
            if md.get("repeat"):
                kwargs["action"] = "append"
            if md.get("nargs"):
                kwargs["nargs"] = md["nargs"]
            if md.get("choices"):
                kwargs["choices"] = md["choices"]
            if md.get("metavar"):
                kwargs["metavar"] = md["metavar"]
        target.add_argument(config.flag_of(f), **kwargs)


def _value_type_on_off(text: str) -> bool:
    try:
        return config.parse_on_off(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_value_type_on_off.__name__ = "on|off"


def settings_from(args: argparse.Namespace, cls: type):
    """The settings ``cls`` from parsed arguments; records which fields were given."""
    values: dict[str, Any] = {}
    given = []
    for f in dataclasses.fields(cls):
        md = f.metadata
        if "help" not in md:
            continue
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if md.get("repeat"):
                try:
                    value = md["parse"](value) if md.get("parse") else list(value)
                except BioattnError as exc:
                    raise BioattnError(f"{config.flag_of(f)}: {exc}") from None
            values[f.name] = value
            given.append(f.name)
        elif md.get("cli_default") is not dataclasses.MISSING:
            values[f.name] = md["cli_default"]
    return config.with_explicit(cls(**values), given)


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
@dataclass
class Command:
    name: str
    help: str
    description: str
    settings: tuple[type, ...]
    run: Callable[..., int]


# The in-place operations that fill a tensor with values (weight initialisation): on the meta
# device, where a tensor has a shape and no values, they have nothing to do.
_FILLING = frozenset({
    "uniform_", "normal_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_", "clamp_max_",
    "fill_", "zero_", "copy_", "exponential_", "log_normal_", "bernoulli_", "random_", "fmod_", "abs_",
    "sqrt_", "exp_", "neg_", "sign_", "masked_fill_", "index_fill_", "fill_diagonal_",
})


def parameter_count(name: str, **kwargs: Any) -> int:
    """The number of parameters of model ``name`` built with ``kwargs``, counted without building
    it: on the meta device its layers get their shapes but neither memory nor values (their
    initialisation is skipped; tensors made from given values, which a constructor may check,
    stay on the CPU), so a model counts in a fraction of a second whatever its size. A model
    whose constructor computes with values it made itself is built on the CPU instead."""
    # on demand: the command line starts (and answers --help) without loading torch
    import torch
    from torch.overrides import TorchFunctionMode

    from .models import count_parameters, create_model

    class ShapesOnly(TorchFunctionMode):
        """Skips the filling of meta tensors; tensors made from given values (a constructor's
        constants, which it may check) stay on the CPU."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            first = args[0] if args else None
            if getattr(func, "__name__", "") in _FILLING and isinstance(first, torch.Tensor) and first.is_meta:
                return first
            if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is None:
                kwargs = {**kwargs, "device": "cpu"}
            return func(*args, **kwargs)

    try:
        with torch.device("meta"), ShapesOnly():
            model = create_model(name, **kwargs)
    except (RuntimeError, NotImplementedError):  # a value a meta tensor does not have
        model = create_model(name, **kwargs)
    return count_parameters(model)


def _run_models(s: config.ModelsSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .models import list_models

    names = list_models(s.pattern)
    if not names:
        raise BioattnError(f"no bioattn model matches '{s.pattern}'")
    width = max(len(n) for n in names)
    kwargs = {} if s.num_classes is None else {"num_classes": s.num_classes}
    for name in names:
        print(f"{name:<{width}}  {parameter_count(name, **kwargs) / 1e6:9.2f}M", flush=True)
    return 0


def _run_train(cfg: config.TrainConfig) -> int:
    if not cfg.model and not cfg.resume:
        raise BioattnError("--model is required (or --resume RUN_DIR)")
    # on demand: the command line starts (and answers --help) without loading torch
    from .train import train

    result = train(cfg)
    best = result[f"best_{result['metric']}"]
    print(f"run directory: {result['run_dir']} (best val {result['metric_label']} {best:.2f}%)")
    return 0


def _run_demo(s: config.DemoOptions) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .demo import run_demo

    summary = run_demo(s.out, quick=s.quick, retrain=s.retrain, models=s.models, progress=s.progress)
    print(f"demo finished in {summary['total_seconds']:.0f} s; open {s.out}/index.html")
    return 0


def _run_results(s: config.ResultsSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .results.page import check_results, write_results

    if s.check:
        judged = check_results(s)
        print(f"results: {len(judged)} verdicts of {s.out} recomputed from its records: all agree")
        return 0
    judged = write_results(s, log=lambda message: print(message, file=sys.stderr, flush=True))
    verdicts = ", ".join(f"{sum(j.verdict == v for j in judged)} {v}" for v in dict.fromkeys(j.verdict for j in judged))
    print(f"results: {len(judged)} claims ({verdicts}) written to {s.out}")
    return 0


def _run_zoo(s: config.ZooSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .fileio import atomic_write_text
    from .zoo_builder import build_zoo, zoo_listing, zoo_report

    if s.list_entries:
        print("\n".join(zoo_listing(s.only, s.out)))
        return 0
    if s.report:
        atomic_write_text(Path(s.report), zoo_report(Path(s.out) if s.out else None))
        print(f"zoo: the built entries' report written to {s.report}")
        return 0
    written = build_zoo(s.only, retrain=s.retrain, runs=s.runs, progress=s.progress, out=s.out)
    print(f"zoo: {len(written)} entr{'y' if len(written) == 1 else 'ies'} written")
    return 0


def _run_eval(target: config.EvalSettings, suite: config.SuiteSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .evaluate.report import markdown_report
    from .evaluate.saved import evaluate_checkpoint

    if target.checkpoint is None and target.model is None:
        raise BioattnError("give --checkpoint (or at least --model)")
    # without a checkpoint, evaluate_checkpoint seeds the random weights and says so (once)
    results = evaluate_checkpoint(
        target.checkpoint, target.suite, model_name=target.model, model_args=target.model_args,
        data=target.data, split=target.split, img_size=target.img_size,
        baseline_checkpoint=target.baseline_checkpoint, baseline_model=target.baseline_model,
        out=target.out, settings=suite,
    )
    print(markdown_report([results]), end="")
    steered = results["results"].get("steering") or {}
    if "score" in steered:  # the per-image steering figures, which the table leaves out
        from .evaluate.steering import benchmark_summary

        print(benchmark_summary(steered))
    for path in results.get("files", []):
        print(f"wrote {path}")
    return 0


def _run_report(s: config.ReportSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .evaluate.report import load_results, write_report

    results = [load_results(path) for path in s.results]
    for path in write_report(results, s.out, stem=s.stem):
        print(f"wrote {path}")
    return 0


def _run_attend(s: config.AttendSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .attention.plots import attend
    from .checkpoint import load_model, read_meta

    if s.checkpoint is None:
        print(f"warning: no --checkpoint: {s.model} has random weights", file=sys.stderr)
    model_args = dict(s.model_args)
    if s.img_size is not None:
        model_args["img_size"] = s.img_size
    # --model-arg num_classes=N is the same setting as --num-classes N
    num_classes = model_args.pop("num_classes", s.num_classes)
    if s.num_classes is not None and num_classes != s.num_classes:
        raise BioattnError(f"--num-classes {s.num_classes} conflicts with --model-arg "
                           f"num_classes={num_classes}")
    model = load_model(s.checkpoint, s.model, num_classes=num_classes, **model_args)
    meta = read_meta(s.checkpoint) if s.checkpoint is not None else None
    out = attend(model, s.image, s.out, priors=s.prior, prior_scale=s.prior_scale, meta=meta,
                 img_size=s.img_size, glimpses=s.readouts, gif=s.gif)
    for path in out if isinstance(out, (list, tuple)) else [out]:
        print(f"wrote {path}")
    return 0


def _run_convert(s: config.ConvertSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .checkpoint import convert_checkpoint

    model_args = dict(s.model_args)
    if s.num_classes is not None:
        model_args["num_classes"] = s.num_classes
    if s.img_size is not None:
        model_args["img_size"] = s.img_size
    out = convert_checkpoint(s.src, s.dst, s.model, mean=s.mean, std=s.std, overwrite=s.overwrite,
                             **model_args)
    print(f"wrote {out}")
    return 0


def _run_domains(s: config.DomainsSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .generalisation import leave_one_domain_out, markdown_table

    options = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
               if f.name not in ("models", "data", "out")}
    results = leave_one_domain_out(s.models, s.data, s.out, **options)
    print()
    print(markdown_table(results), end="")
    return 0


def _run_data_generate(s: config.DataGenerateSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .data.embedded import EmbeddedSpec, cache_path, ensure_cached

    spec = EmbeddedSpec.parse(s.data)
    existed = cache_path(spec, s.cache).exists() and not s.force
    start = time.perf_counter()
    folder = ensure_cached(spec, cache_dir=s.cache, workers=s.workers, force=s.force)
    seconds = time.perf_counter() - start
    images = spec.n_train + spec.n_val + spec.n_test
    what = "found in the cache and checked" if existed else "generated"
    print(f"{spec}: {images} images {what} in {seconds:.1f} s")
    print(f"cache: {folder}")
    return 0


def _run_data_preview(s: config.DataPreviewSettings) -> int:
    # on demand: the command line starts (and answers --help) without loading torch
    from .data.embedded import EmbeddedSpec, preview

    out = preview(EmbeddedSpec.parse(s.data), s.out, n=s.n, split=s.split)
    print(f"wrote {out}")
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("models", "list bioattn's registered models with parameter counts",
            "List bioattn's models with their parameter counts, counted without building the "
            "models (Python: bioattn.models.list_models, and bioattn.cli.parameter_count for a "
            "count).", (config.ModelsSettings,), _run_models),
    Command("train", "train a model (DeiT recipe; torchrun for several processes)",
            "Train a model on the embedded data or an ImageNet-style folder "
            "(Python: bioattn.train.train(TrainConfig(...))). Settings left unset come from the "
            "recipe: 'deit' for folders, 'small' for the embedded data. With --resume, settings "
            "given on the command line must agree with the saved run's. Several GPUs or nodes: "
            "torchrun --nproc_per_node=N -m bioattn train ...", (config.TrainConfig,), _run_train),
    Command("demo", "compare all systems on the embedded data; write a report page",
            "Take the micro ViT, AbSViT, RVT (self-attention and VARS-D), RS-RNN, FF-CNN and both "
            "GFNets from the model zoo (training those it lacks on the embedded data), evaluate clean "
            "accuracy, corruptions, FGSM/PGD (per glimpse for "
            "glimpse models), attention on the object and AbSViT's steering, and write "
            "index.html, report.md and results.json (Python: bioattn.demo.run_demo). Trained "
            "checkpoints are cached: a second run only evaluates.", (config.DemoOptions,), _run_demo),
    Command("zoo", "train the model zoo: micro models of every family on the embedded benchmark",
            "Train each zoo entry from scratch with its recorded seed and settings and write its "
            "folder under bioattn/zoo/ (float16 weights, checkpoint and timm metadata, the command, "
            "the training log and the test figures); entries already made by their present "
            "settings are kept (Python: bioattn.zoo_builder.build_zoo).", (config.ZooSettings,), _run_zoo),
    Command("results", "measure the sources' claims on the zoo; write the results page",
            "Evaluate every built zoo entry image by image on the embedded benchmark's test split (clean, "
            "the 15 corruptions at 5 severities, FGSM/PGD, per glimpse, attention on the object, steering), "
            "store the per-image records in docs/results/records/ and decide every claim of the sources by "
            "paired tests (McNemar, the paired bootstrap over images, Wilcoxon, TOST; Holm-corrected) into "
            "docs/results.md (Python: bioattn.results.page.write_results). With --check, measure nothing: "
            "recompute every verdict from the records and compare it with the page.",
            (config.ResultsSettings,), _run_results),
    Command("eval", "evaluate a checkpoint: clean accuracy, corruptions, ImageNet-A/R/Sketch, attacks",
            "Evaluate a model on several suites and write every figure to a JSON file, with a "
            "Markdown table and plots next to it (Python: bioattn.evaluate.evaluate_checkpoint, "
            "or bioattn.evaluate.run_suites for a model in memory). A readout is the prediction "
            "after one pass or glimpse of a multi-readout model (AbSViT: 2 passes; glimpse "
            "models: one per glimpse).", (config.EvalSettings, config.SuiteSettings), _run_eval),
    Command("report", "put several evaluation results side by side (table and plots)",
            "Read results JSON files written by `bioattn eval` and write one Markdown table and "
            "one set of plots comparing the models "
            "(Python: bioattn.evaluate.report.write_report).", (config.ReportSettings,), _run_report),
    Command("attend", "draw where a model attends on an image",
            "Draw an image and each of the model's attention maps overlaid on it: AbSViT's "
            "bottom-up, top-down and per-class (--prior) maps, VARS's per-iteration maps, a "
            "ViT's feedforward map; glimpse models draw their fixations "
            "(Python: bioattn.attention.plots.attend).", (config.AttendSettings,), _run_attend),
    Command("convert", "import a released .pth checkpoint as a bioattn checkpoint",
            "Read an official checkpoint (.pth with a 'model' entry, or a bare state dict; "
            "loaded with weights_only=True), check every key and shape against the named model, "
            "and write a bioattn checkpoint directory "
            "(Python: bioattn.checkpoint.convert_checkpoint).", (config.ConvertSettings,), _run_convert),
    Command("domains", "domain generalisation: leave one domain out (PACS or the embedded styles)",
            "For every model and every domain of --data: train on the other domains, keep the "
            "epoch with the best top-1 on a validation split held out from them, and test it on "
            "the held-out domain; write a table of top-1 per held-out domain and their mean "
            "(results.json, results.md) and one run directory per model and domain under --out "
            "(Python: bioattn.generalisation.leave_one_domain_out). Models: NAME or "
            "NAME[KEY=VALUE,...], e.g. rvt_micro[attention=vars_d].",
            (config.DomainsSettings,), _run_domains),
)

DATA_COMMANDS: tuple[Command, ...] = (
    Command("generate", "generate a spec into the cache (checks an existing copy)",
            "Generate every split of an embedded spec into the cache, or check the copy already "
            "there and rebuild it if damaged "
            "(Python: bioattn.data.embedded.ensure_cached(EmbeddedSpec.parse(SPEC))).",
            (config.DataGenerateSettings,), _run_data_generate),
    Command("preview", "write a PNG grid of images with their object outlines",
            "Draw the first N images of a split with the objects' masks outlined and their "
            "classes as titles (Python: bioattn.data.embedded.preview).",
            (config.DataPreviewSettings,), _run_data_preview),
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line that points to ``--help``."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _add_command(sub, cmd: Command) -> None:
    p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description, allow_abbrev=False)
    groups: dict[str, Any] = {}
    for cls in cmd.settings:
        add_settings(p, cls, groups)
    p.set_defaults(command_obj=cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bioattn", allow_abbrev=False,
        description="Brain-inspired visual attention (AbSViT, VARS, RS-RNN): train, evaluate "
        "robustness, and look at where models attend.",
    )
    parser.add_argument("--version", action="version", version=__version__,
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do")
    for cmd in COMMANDS:
        _add_command(sub, cmd)
    data = sub.add_parser(
        "data", help="generate or preview the embedded shapes data set", allow_abbrev=False,
        description="The embedded data set: procedurally generated shapes in clutter, cached "
        "under $BIOATTN_CACHE (default ~/.cache/bioattn) (Python: bioattn.data.embedded).",
    )
    actions = data.add_subparsers(dest="data_action", metavar="ACTION", required=True,
                                  help="what to do with the data set")
    for cmd in DATA_COMMANDS:
        _add_command(actions, cmd)
    return parser


# ------------------------------------------------------------------------------------------
# errors at the command boundary
# ------------------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (errors re-raised from data-loader workers carry the
    worker's traceback; their last line is the original message)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
        return f"{text} -> {exc.filename2}" if exc.filename2 else text
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    for prefix in ("bioattn.errors.BioattnError: ", "bioattn.errors.NonFiniteLossError: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return lines[0] if len(lines) == 1 else last


_PACKAGE_DIR = Path(__file__).resolve().parent


def _raised_in_bioattn(exc: BaseException) -> bool:
    """Whether the innermost Python frame of ``exc``'s traceback is bioattn's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _PACKAGE_DIR in Path(tb.tb_frame.f_code.co_filename).resolve().parents


def _is_external(exc: BaseException) -> bool:
    """Errors that come from the input or the environment rather than from a bug in bioattn:
    files, memory, safetensors' read and write errors, and the value and runtime errors that
    a library raises in its own code (its argument checks). A ValueError or RuntimeError raised
    in bioattn's own code, or by an operation it called directly, is a bug: bioattn checks what
    it is given before it computes."""
    if isinstance(exc, (OSError, MemoryError)) or type(exc).__name__ == "SafetensorError":
        return True
    return isinstance(exc, (ValueError, RuntimeError)) and not _raised_in_bioattn(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a malformed command line
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    cmd = getattr(args, "command_obj", None)
    if cmd is None:
        parser.print_help(sys.stderr)
        return 2
    debug = os.environ.get("BIOATTN_DEBUG", "") not in ("", "0")
    try:
        settings = [settings_from(args, cls) for cls in cmd.settings]
        return int(cmd.run(*settings) or 0)
    except BioattnError as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if _is_external(exc):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(f"error: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(run with BIOATTN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
