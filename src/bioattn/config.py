"""Settings of bioattn's commands, declared once.

Each command's settings are a dataclass whose fields carry, in their metadata, everything the
command line needs: the help text, the flag name (``--<field-name>`` unless given), choices, a
metavar, how a default of ``None`` resolves, and a check of the allowed values. ``bioattn.cli``
builds every flag from these fields; the dataclasses check their values in ``__post_init__``, so
the Python API and the command line refuse the same inputs with the same one-line message, which
names the flag and the allowed range.

This module imports neither torch, timm nor numpy at module level: the command line builds its
parsers (``bioattn --help``) from it without loading them. A check that needs timm imports it
when it runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BioattnError
from .fileio import kind_of_mode
from .specs import embedded_options  # noqa: F401  (importable from here)
from .tasks import TASKS, resolve_task, task_of_data, task_spec  # noqa: F401  (importable from here)

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


def _flag_words(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


# RandAugment policies as timm reads them: "rand" then dash-separated sections, each a key and
# a number (m: magnitude, n: operations per image, mstd: magnitude noise, mmax: magnitude limit,
# inc: increasing-strength operations, p: probability of each operation) or t<set> (a named
# transform set).
_RAND_SECTION = re.compile(r"^(?:(?:mstd|p)\d+(?:\.\d*)?|(?:mmax|inc|m|n)\d+|t\w+)$")


def rand_augment(value: Any) -> str | None:
    allowed = "'none' or a RandAugment policy such as rand-m9-mstd0.5-inc1 (sections m, n, mstd, mmax, inc, p)"
    if not isinstance(value, str):
        return allowed
    if value.lower() == "none":
        return None
    parts = value.split("-")
    if parts[0] != "rand" or not all(_RAND_SECTION.match(p) for p in parts[1:]):
        return allowed
    return None


_SCHEDULERS = ("constant", "cosine", "multistep", "plateau", "poly", "rsqrt", "step", "tanh")


def timm_optimizer(value: Any) -> str | None:
    """An optimizer name timm's ``create_optimizer_v2`` knows (a ``lookahead_`` prefix allowed)."""
    # deferred: the settings module stays free of torch and timm (the command line starts without
    # them); timm is loaded only to check this setting
    from timm.optim import list_optimizers

    known = list_optimizers()
    name = value.lower() if isinstance(value, str) else value
    if isinstance(name, str) and name.startswith("lookahead_"):
        name = name[len("lookahead_"):]
    if name in known:
        return None
    return ("an optimizer timm knows, e.g. adamw, sgd, lamb, lion (all: python -c "
            "'import timm.optim; print(timm.optim.list_optimizers())')")


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
            raise BioattnError(f"{flag_of(f)} must be {problem}; got {_flag_words(value)}")


class _Settings:
    """Base of the settings dataclasses: checks values on creation."""

    _deferred_checks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_settings(self, self._deferred_checks)


# ------------------------------------------------------------------------------------------
# parsing helpers (text -> value; used by the command line, and for strings given in Python)
# ------------------------------------------------------------------------------------------
# numbers JSON cannot write, read as the floats they name (model arguments then refuse them)
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


def _rgb(positive: bool) -> Check:
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


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------
@dataclass
class ModelsSettings(_Settings):
    """``bioattn models``: list the registered models."""

    pattern: str = setting("", help="only names containing this text", positional=True)
    num_classes: int | None = setting(None, help="count parameters for this many classes",
                                      resolves="each model's own", check=integer(1))


# ------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------
RECIPES: dict[str, dict[str, Any]] = {
    "deit": dict(
        epochs=300, base_lr=5e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=5, weight_decay=0.05,
        smoothing=0.1, mixup=0.8, cutmix=1.0, aa="rand-m9-mstd0.5-inc1", color_jitter=0.4,
        reprob=0.25, hflip=0.5, repeated_aug=True, drop_path=0.1, model_ema=True,
        model_ema_decay=0.99996, random_resized_crop=True, sched="cosine",
    ),
    "small": dict(
        epochs=10, base_lr=2e-3, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=1, weight_decay=0.05,
        smoothing=0.1, mixup=0.0, cutmix=0.0, aa=None, color_jitter=0.0, reprob=0.0, hflip=0.0,
        repeated_aug=False, drop_path=0.0, model_ema=False, model_ema_decay=0.999,
        random_resized_crop=False, sched="cosine",
    ),
    # UperNet segmentation as in mmsegmentation's set-up for ViT backbones: AdamW at 6e-5 for
    # a global batch of 16 (base-lr is per 512 images), weight decay 0.01, poly decay to 0 after
    # a linear warm-up; random scale 0.5-2 + crop, flips and photometric distortion of the
    # images ("random-resized-crop" and "color-jitter" switch them for segmentation data).
    "upernet": dict(
        epochs=30, base_lr=6e-5 * 512 / 16, min_lr=0.0, warmup_lr=6e-11, warmup_epochs=2,
        weight_decay=0.01, smoothing=0.0, mixup=0.0, cutmix=0.0, aa=None, color_jitter=0.4,
        reprob=0.0, hflip=0.5, repeated_aug=False, drop_path=0.1, model_ema=False,
        model_ema_decay=0.999, random_resized_crop=True, sched="poly",
    ),
}


# What a recipe setting is when a task leaves it unused (bioattn.tasks.TaskSpec.unused_settings).
_OFF: dict[str, Any] = {"aa": None}


def _recipe(key: str) -> str:
    """How a recipe setting left at None resolves, for the help text."""
    def show(value):
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)
    return "recipe: " + " / ".join(f"{show(r[key])} ({name})" for name, r in RECIPES.items())


AMP_DTYPES = ("auto", "float16", "bfloat16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DECODE_PLACES = ("cpu", "gpu")
_FRACTION = number(0, 1)
_NON_NEGATIVE = number(0)
_POSITIVE = number(0, low_open=True)


@dataclass
class TrainConfig(_Settings):
    """Settings of one training run (``bioattn train``; Python: ``bioattn.train.train``).

    Settings left at ``None`` come from the recipe (:data:`RECIPES`): ``deit`` for image
    folders, ``small`` for the embedded data (``recipe="auto"``). :meth:`explicit_settings`
    tells which settings the user chose (on ``resume``, these must agree with the saved run).
    """

    model: str = setting("", help="registered model name (required unless --resume)",
                         resolves="the resumed run's")
    data: str = setting("embedded", help="'embedded[:options]' (options seg, multi, pair, ...), a folder "
                        "with train/ and val/, voc:ROOT, ade20k:ROOT, cityscapes:ROOT or coco:ROOT")
    task: str = setting("auto", help="what to learn; auto: from the data (label maps: segmentation, "
                        "several classes per image: multilabel)", choices=("auto", *TASKS),
                        check=one_of("auto", *TASKS))
    classes: str | None = setting(None, help="train on the classes listed in FILE (one folder name per "
                                  "line) of an image-folder data set", resolves="every class folder",
                                  metavar="FILE")
    output: str | None = setting(None, help="run directory", resolves="runs/<model>-<time>",
                                 check=output_path("directory"))
    recipe: str = setting("auto", help="defaults of the settings left unset; auto: small for the "
                          "embedded data, upernet for segmentation sets, deit otherwise", choices=("auto", *RECIPES),
                          check=one_of("auto", *RECIPES))
    model_args: dict[str, Any] = setting(
        help="extra model constructor argument (repeatable)", factory=dict, flag="--model-arg",
        metavar="KEY=VALUE", repeat=True, parse=key_values, check=model_arguments)
    img_size: int | None = setting(None, help="input image side in pixels",
                                   resolves="the model's own", check=integer(8))
    epochs: int | None = setting(None, help="number of epochs", resolves=_recipe("epochs"),
                                 check=integer(1))
    batch_size: int = setting(128, help="images per process per batch (per optimizer step unless "
                              "--grad-accum is given)", check=integer(1))
    base_lr: float | None = setting(None, help="learning rate per 512 images (scaled by the global "
                                    "batch size unless --lr is given)", resolves=_recipe("base_lr"),
                                    check=_POSITIVE)
    lr: float | None = setting(None, help="learning rate", resolves="base-lr x global batch / 512",
                               check=_POSITIVE)
    min_lr: float | None = setting(None, help="learning rate at the end of the schedule",
                                   resolves=_recipe("min_lr"), check=_NON_NEGATIVE)
    warmup_lr: float | None = setting(None, help="learning rate at the start of the warm-up",
                                      resolves=_recipe("warmup_lr"), check=_NON_NEGATIVE)
    warmup_epochs: int | None = setting(None, help="epochs of linear learning-rate warm-up",
                                        resolves=_recipe("warmup_epochs"), check=integer(0))
    weight_decay: float | None = setting(None, help="decoupled weight decay",
                                         resolves=_recipe("weight_decay"), check=_NON_NEGATIVE)
    opt: str = setting("adamw", help="optimizer: any timm optimizer name (sgd, adamw, lamb, ...)",
                       check=timm_optimizer)
    sched: str | None = setting(None, help="learning-rate schedule (timm scheduler)",
                                choices=_SCHEDULERS, check=one_of(*_SCHEDULERS), resolves=_recipe("sched"))
    clip_grad: float | None = setting(None, help="clip the gradient norm to this value",
                                      resolves="no clipping", check=_POSITIVE)
    smoothing: float | None = setting(None, help="label smoothing", resolves=_recipe("smoothing"),
                                      check=number(0, 1, high_open=True))
    mixup: float | None = setting(None, help="mixup alpha (0: off)", resolves=_recipe("mixup"),
                                  check=_NON_NEGATIVE)
    cutmix: float | None = setting(None, help="cutmix alpha (0: off)", resolves=_recipe("cutmix"),
                                   check=_NON_NEGATIVE)
    mixup_prob: float = setting(1.0, help="probability of mixing a batch", check=_FRACTION)
    mixup_switch_prob: float = setting(0.5, help="probability of cutmix instead of mixup when "
                                       "both are on", check=_FRACTION)
    aa: str | None = setting(None, help="RandAugment policy, e.g. rand-m9-mstd0.5-inc1 ('none': off)",
                             resolves=_recipe("aa"), check=rand_augment)
    color_jitter: float | None = setting(None, help="colour jitter strength",
                                         resolves=_recipe("color_jitter"), check=_NON_NEGATIVE)
    reprob: float | None = setting(None, help="random erasing probability",
                                   resolves=_recipe("reprob"), check=_FRACTION)
    hflip: float | None = setting(None, help="horizontal flip probability",
                                  resolves=_recipe("hflip"), check=_FRACTION)
    random_resized_crop: bool | None = setting(None, help="random resized crops of the training "
                                               "images", resolves=_recipe("random_resized_crop"))
    repeated_aug: bool | None = setting(None, help="repeated-augmentation sampler",
                                        resolves=_recipe("repeated_aug"))
    drop_path: float | None = setting(None, help="stochastic depth rate",
                                      resolves=_recipe("drop_path"), check=number(0, 1, high_open=True))
    model_ema: bool | None = setting(None, help="keep an exponential moving average of the weights",
                                     resolves=_recipe("model_ema"))
    model_ema_decay: float | None = setting(None, help="decay of the weight average",
                                            resolves=_recipe("model_ema_decay"),
                                            check=number(0, 1, high_open=True))
    amp: bool = setting(True, help="mixed precision on CUDA")
    amp_dtype: str = setting("auto", help="mixed-precision type; auto: bfloat16 where the GPU supports "
                             "it, else float16 (with loss scaling)", choices=AMP_DTYPES,
                             check=one_of(*AMP_DTYPES))
    grad_accum: int = setting(1, help="micro-batches of --batch-size images per optimizer step (the "
                              "gradients of K batches add up; the learning rate scales with K)",
                              metavar="K", check=integer(1), group="training speed")
    sync_every: int = setting(50, help="check the loss for NaN/inf (one host synchronisation) and "
                              "update the progress bar every N steps and at the end of each epoch",
                              metavar="N", check=integer(1), group="training speed")
    compile: bool = setting(False, help="compile the model with torch.compile", group="training speed")
    compile_mode: str = setting("default", help="torch.compile mode", choices=COMPILE_MODES,
                                check=one_of(*COMPILE_MODES), group="training speed")
    grad_checkpointing: bool = setting(False, help="recompute each block's activations in the "
                                       "backward pass (less memory, about a third more compute)",
                                       group="training speed")
    prefetch: bool | None = setting(None, help="image folders: load batches as 8-bit images, copy "
                                    "them to the GPU while the previous step runs and normalise and "
                                    "randomly erase them there (timm's PrefetchLoader)",
                                    resolves="on with CUDA, off on the CPU", group="training speed")
    in_memory: bool | None = setting(None, help="embedded data: make the training batches in the main process "
                                     "from the images held in memory, augmenting whole batches as tensors (off: "
                                     "a data loader reads and augments one image at a time)",
                                     resolves="on for the embedded data", group="training speed")
    decode: str = setting("cpu", help="image folders: where JPEG files are decoded and augmented; gpu: "
                          "the loader reads the files' bytes, the GPU decodes (nvJPEG) and applies the "
                          "crop, flip, colour jitter, normalisation and random erasing (no RandAugment)",
                          choices=DECODE_PLACES, check=one_of(*DECODE_PLACES), group="training speed")
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N")
    seed: int = setting(0, help="random seed (every random draw of an epoch derives from it)",
                        check=integer(0))
    workers: int = setting(0, help="data-loader worker processes per process", check=integer(0))
    resume: str | None = setting(None, help="run directory to continue", metavar="RUN_DIR")
    overwrite: bool = setting(False, help="replace an existing run directory given as --output")
    init: str | None = setting(None, help="fine-tune from these weights (bioattn checkpoint directory, "
                               ".safetensors or released .pth): every weight is loaded except a "
                               "classifier of another number of classes", resolves="random weights",
                               metavar="CHECKPOINT")
    limit_train: int | None = setting(
        None, help="use N training images, spread evenly over the set (every class keeps its share)",
        resolves="all", metavar="N", check=integer(1))
    limit_val: int | None = setting(None, help="use N validation images, spread evenly over the set",
                                    resolves="all", metavar="N", check=integer(1))
    skip_bad_images: bool = setting(False, help="skip and count unreadable images")
    progress: bool = setting(True, help="no progress bar", flag="--no-progress")
    tensorboard: bool = setting(True, help="no TensorBoard scalars", flag="--no-tensorboard")

    _deferred_checks = ("opt",)

    def validate(self) -> None:
        super().validate()
        if self.data:
            resolve_task(self.task, self.data)
        if self.classes is not None and not task_spec(task_of_data(self.data)).image_folders:
            raise BioattnError("--classes selects class folders of an image-folder data set; "
                               f"'{self.data}' is not one")
        if self.decode == "gpu":
            if self.aa is not None and self.aa.lower() != "none":
                raise BioattnError(f"--decode gpu does not run RandAugment (--aa {self.aa}, which works on "
                                   "PIL images): pass --aa none, or --decode cpu")
            if self.prefetch:
                raise BioattnError("--decode gpu moves the files' bytes to the GPU itself: leave out "
                                   "--prefetch on")
            if self.device == "cpu":
                raise BioattnError("--decode gpu decodes the images on the GPU; --device cpu has none: "
                                   "pass --decode cpu, or a CUDA --device")
        self._check_model_args()
        self._check_task_settings()
        if not self.resume and not self.compile and self.compile_mode != "default":
            raise BioattnError(f"--compile-mode {self.compile_mode} applies to a compiled model: add --compile, "
                               "or leave out --compile-mode")

    def _check_task_settings(self) -> None:
        """Refuse settings the task would leave unused (:attr:`bioattn.tasks.TaskSpec.unused_settings`):
        mixing and smoothing act on one-class targets (not label maps or label sets); RandAugment
        and random erasing, on images alone, would part a segmentation image from its label map."""
        if not self.data:
            return
        task = resolve_task(self.task, self.data)
        unused = task_spec(task).unused_given(self)
        if unused:
            fields = {f.name: f for f in dataclasses.fields(self)}
            shown = ", ".join(f"{flag_of(fields[n])} {_flag_words(getattr(self, n))}" for n in unused)
            them = "it" if len(unused) == 1 else "them"
            raise BioattnError(f"{shown}: {task} training does not use {them}; leave {them} out")

    # model constructor arguments that are trainer settings too: (argument, setting)
    _SHARED_MODEL_ARGS = (("img_size", "img_size"), ("drop_path_rate", "drop_path"))

    def _check_model_args(self) -> None:
        """A model argument that is also a trainer setting must agree with it (the data is read at
        ``img_size``; the trainer passes ``drop_path`` to the model). ``num_classes`` comes from the
        data, which the trainer checks once it has read it."""
        for arg, name in self._SHARED_MODEL_ARGS:
            given, value = self.model_args.get(arg), getattr(self, name)
            if given is None:
                continue
            problem = integer(8)(given) if arg == "img_size" else number(0, 1, high_open=True)(given)
            if problem:
                raise BioattnError(f"--model-arg {arg} must be {problem}; got {_flag_words(given)}")
            if value is not None and given != value:
                flag = flag_of(next(f for f in dataclasses.fields(self) if f.name == name))
                raise BioattnError(f"{flag} {value} conflicts with --model-arg {arg}={given}: give the "
                                   f"setting once, or both with the same value")

    def explicit_settings(self) -> frozenset[str]:
        """Names of the settings the user chose: those given on the command line, or (built in
        Python) those that differ from their defaults."""
        given = getattr(self, "_explicit", None)
        if given is not None:
            return given
        return frozenset(f.name for f in dataclasses.fields(self)
                         if getattr(self, f.name) != _default_of(f))

    def resolved(self) -> TrainConfig:
        """A copy with every recipe setting filled in."""
        # deferred: bioattn.data loads torch, which the settings module must not
        from .data import is_embedded

        task = resolve_task(self.task, self.data)
        unused = task_spec(task).unused_settings
        name = self.recipe
        if name == "auto":
            name = "small" if is_embedded(self.data) else task_spec(task).recipe
        values = dataclasses.asdict(self)
        for arg, key in self._SHARED_MODEL_ARGS:
            # the model argument decides the setting it shares, so that the run records what it ran
            if values.get(key) is None and self.model_args.get(arg) is not None:
                values[key] = self.model_args[arg]
        for key, default in RECIPES[name].items():
            if values.get(key) is None:
                # a setting the task leaves unused is off (mixing and smoothing one-class targets
                # for label maps or label sets; RandAugment and erasing for label maps)
                values[key] = _OFF.get(key, 0.0) if key in unused else default
        values["recipe"] = name
        values["task"] = task
        out = TrainConfig(**values)
        out._explicit = self.explicit_settings()
        return out


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def with_explicit(settings: Any, names: Iterable[str]) -> Any:
    """Record on ``settings`` which fields the user gave (see :meth:`TrainConfig.explicit_settings`)."""
    settings._explicit = frozenset(names)
    return settings


# ------------------------------------------------------------------------------------------
# eval
# ------------------------------------------------------------------------------------------
_BUDGET = number(0, 1, low_open=True)

# Named evaluation protocols (``bioattn eval --preset``): the suites they add, the suite settings
# they give to settings left at their defaults, and, for image folders, the side the images are
# resized to and the centre crop the model sees.
PRESETS: dict[str, dict[str, Any]] = {
    # the RS-RNN paper (Choi et al., 2022): L-inf PGD through the first 4 glimpses, accuracy read
    # at every glimpse up to 16
    "rsrnn-pgd": {
        "suites": ("pgd",),
        "settings": {"eps": [1e-3, 2e-3, 3e-3, 5e-3], "step_ratio": 1 / 3, "attack_iters": 5,
                     "restarts": 1, "norm": "Linf", "readouts": 16, "attack_readout": 4},
        "folder_resize": 384,
        "folder_crop": 336,
    },
}


@dataclass
class SuiteSettings(_Settings):
    """Settings shared by the evaluation suites (each suite reads the ones it needs)."""

    batch_size: int = setting(64, help="images per batch", check=integer(1))
    workers: int = setting(0, help="data-loader workers, and processes generating corruptions",
                           check=integer(0), cli_default=min(8, os.cpu_count() or 1),
                           resolves="0 in Python; on the command line the number of CPUs, at most 8")
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N")
    limit: int | None = setting(None, help="evaluate on N images (spread evenly over each data set)",
                                resolves="all", metavar="N", check=integer(1))
    seed: int = setting(0, help="random seed of the evaluation (noise, attacks, sampling models)",
                        check=integer(0))
    progress: bool = setting(True, help="no progress bars", flag="--no-progress")
    # The number of readouts (predictions after a pass or a glimpse) a multi-readout model runs.
    readouts: int | None = setting(None, help="readouts (glimpses, passes) a multi-readout model runs",
                                flag="--readouts", metavar="N", resolves="the model's own",
                                check=integer(1))
    skip_bad_images: bool = setting(False, help="skip and count unreadable images")
    # corruptions / ImageNet benchmarks
    corruptions: list[str] | None = setting(
        None, help="comma-separated subset of the 15 corruptions", resolves="all",
        parse=parse_names, group="corruptions and ImageNet benchmarks",
        check=each(one_of(*"""gaussian_noise shot_noise impulse_noise defocus_blur glass_blur
        motion_blur zoom_blur snow frost fog brightness contrast elastic_transform pixelate
        jpeg_compression""".split()), "a list"))
    severities: list[int] | None = setting(
        None, help="comma-separated subset of severities 1-5", resolves="all",
        parse=lambda text: parse_int_list(text, "severities"),
        group="corruptions and ImageNet benchmarks", check=each(integer(1, 5), "a list"))
    imagenet_c: str | None = setting(None, help="ImageNet-C root (<corruption>/<severity>/<wnid>/)",
                                     metavar="DIR", group="corruptions and ImageNet benchmarks")
    imagenet_a: str | None = setting(None, help="ImageNet-A root (<wnid>/)", metavar="DIR",
                                     group="corruptions and ImageNet benchmarks")
    imagenet_r: str | None = setting(None, help="ImageNet-R root (<wnid>/)", metavar="DIR",
                                     group="corruptions and ImageNet benchmarks")
    imagenet_sketch: str | None = setting(None, help="ImageNet-Sketch root (<wnid>/)", metavar="DIR",
                                          group="corruptions and ImageNet benchmarks")
    # attacks
    eps: list[float] = setting(
        help="comma-separated attack budgets, in (0, 1] for Linf and > 0 for L2; fractions "
        "allowed (e.g. 1/255,2e-3)", factory=lambda: [1 / 255], parse=parse_eps, resolves="1/255",
        group="attacks (pixels in [0,1]; defaults are the official settings)",
        check=each(_POSITIVE, "a list"))
    step_size: float | None = setting(
        None, help="PGD step size (in (0, 1] for Linf)", resolves="eps/2", parse=parse_one_eps,
        group="attacks (pixels in [0,1]; defaults are the official settings)", check=_POSITIVE)
    step_ratio: float | None = setting(
        None, help="PGD step size as a fraction of each eps (e.g. 1/3), instead of --step-size",
        resolves="1/2", parse=parse_one_eps, check=number(0, 1, low_open=True),
        group="attacks (pixels in [0,1]; defaults are the official settings)")
    attack_iters: int = setting(5, help="PGD iterations", check=integer(1),
                                group="attacks (pixels in [0,1]; defaults are the official settings)")
    restarts: int = setting(1, help="PGD random restarts", check=integer(1),
                            group="attacks (pixels in [0,1]; defaults are the official settings)")
    norm: str = setting("Linf", help="attack norm", choices=("Linf", "L2"), check=one_of("Linf", "L2"),
                        group="attacks (pixels in [0,1]; defaults are the official settings)")
    # The readout the attacks target (1-based).
    attack_readout: int | None = setting(
        None, help="attack the prediction after this readout (1-based)", flag="--attack-readout",
        metavar="N", resolves="the final one", check=integer(1),
        group="attacks (pixels in [0,1]; defaults are the official settings)")
    eot: int | None = setting(
        None, help="EOT samples per gradient; models that sample get an extra EOT run",
        resolves="1, and 10 for the extra run of models that sample", check=integer(1),
        group="attacks (pixels in [0,1]; defaults are the official settings)")
    autoattack_version: str = setting(
        "standard", help="rand: the version for models that sample (EOT inside)",
        choices=("standard", "rand"), check=one_of("standard", "rand"),
        group="attacks (pixels in [0,1]; defaults are the official settings)")
    preset: str | None = setting(
        None, help="a named protocol; it sets the settings left at their defaults and adds its suite. "
        "rsrnn-pgd: the RS-RNN paper's attack per glimpse (Linf PGD, 5 iterations, step eps/3, random "
        "start, eps 1e-3,2e-3,3e-3,5e-3, aimed at glimpse 4, top-1 read at glimpses 1-16; suite pgd; "
        "image folders resized to 384 and centre-cropped to 336)", choices=tuple(PRESETS),
        resolves="none", check=one_of(*PRESETS),
        group="attacks (pixels in [0,1]; defaults are the official settings)")
    # attention suites: the fixation data set folder, and the two-object data set for steering
    # (default: the evaluated data set)
    fixations: str | None = setting(None, help="human fixation data set (MIT1003 or SALICON-like)",
                                    metavar="DIR", group="attention")
    steering_data: Any = None
    # segmentation: how a label map is predicted
    inference: str = setting("whole", help="segment whole images, or by sliding windows of --slide-crop "
                             "pixels", choices=("whole", "slide"), check=one_of("whole", "slide"),
                             group="segmentation")
    slide_crop: int | None = setting(None, help="sliding-window side", resolves="the model's input size",
                                     check=integer(8), group="segmentation")
    slide_stride: int | None = setting(None, help="sliding-window step", resolves="two thirds of the window",
                                       check=integer(1), group="segmentation")

    def validate(self) -> None:
        if isinstance(self.eps, (str, int, float)):
            self.eps = parse_eps(self.eps)
        if isinstance(self.severities, str):
            self.severities = parse_int_list(self.severities, "severities")
        if isinstance(self.corruptions, str):
            self.corruptions = parse_names(self.corruptions)
        super().validate()
        if self.norm == "Linf":
            for name, values in (("eps", self.eps), ("step_size", [self.step_size])):
                bad = [v for v in values if v is not None and _BUDGET(v)]
                if bad:
                    flag = flag_of(next(f for f in dataclasses.fields(self) if f.name == name))
                    raise BioattnError(f"{flag} must be in (0, 1] for Linf attacks (pixels in [0, 1]); "
                                       f"got {bad[0]:g}")
        if self.attack_readout is not None and self.readouts is not None and self.attack_readout > self.readouts:
            raise BioattnError(f"--attack-readout must be at most --readouts ({self.readouts}); "
                               f"got {self.attack_readout}")
        if self.step_size is not None and self.step_ratio is not None:
            raise BioattnError(f"give --step-size or --step-ratio, not both; got {self.step_size:g} and "
                               f"{self.step_ratio:g}")
        if self.inference != "slide":
            given = [flag for flag, value in (("--slide-crop", self.slide_crop), ("--slide-stride", self.slide_stride))
                     if value is not None]
            if given:
                raise BioattnError(f"{' and '.join(given)} set the sliding windows of --inference slide; "
                                   f"--inference is {self.inference}")
        if self.slide_crop is not None and self.slide_stride is not None and self.slide_stride > self.slide_crop:
            raise BioattnError(f"--slide-stride {self.slide_stride} is larger than --slide-crop {self.slide_crop}: "
                               "the windows would leave pixels between them; give a stride at most the crop")
        self._preset_changes()

    def with_preset(self) -> SuiteSettings:
        """A copy with the values of the named ``preset`` (:data:`PRESETS`) in the settings left at
        their defaults (itself without a preset). A preset's step ratio yields to a given
        ``step_size``."""
        changes = self._preset_changes()
        return dataclasses.replace(self, **changes) if changes else self

    def _preset_changes(self) -> dict[str, Any]:
        """The settings the preset fills in; refuses a combination the attack cannot run."""
        if self.preset is None:
            return {}
        values = PRESETS[self.preset]["settings"]
        changes = {f.name: values[f.name] for f in dataclasses.fields(self)
                   if f.name in values and getattr(self, f.name) == _default_of(f)}
        if self.step_size is not None:
            changes.pop("step_ratio", None)
        readouts = changes.get("readouts", self.readouts)
        aimed = changes.get("attack_readout", self.attack_readout)
        if readouts is not None and aimed is not None and aimed > readouts:
            given = " and ".join(f"--{k.replace('_', '-')}" for k in ("readouts", "attack_readout") if k in changes)
            raise BioattnError(f"--readouts {readouts} is smaller than --attack-readout {aimed} ({given} set by "
                               f"--preset {self.preset}): the prediction the attack aims at must be among the readouts")
        return changes

    def check_readouts(self, multi_readout: bool, model_name: str) -> None:
        """Refuse readouts a model cannot give: a single-readout model has exactly one (a
        multi-readout model checks its own limit when it runs)."""
        if multi_readout:
            return
        for name, value in (("readouts", self.readouts), ("attack_readout", self.attack_readout)):
            if value is not None and value != 1:
                flag = flag_of(next(f for f in dataclasses.fields(self) if f.name == name))
                raise BioattnError(f"{flag} must be 1 for {model_name}, which gives a single "
                                   f"readout; got {value}")


SUITE_NAMES = (
    "clean", "imagenet-c", "corruptions", "imagenet-a", "imagenet-r", "imagenet-sketch",
    "fgsm", "pgd", "autoattack", "steering", "fixations", "glimpses",
)


@dataclass
class EvalSettings(_Settings):
    """``bioattn eval``: what to evaluate, on which data, and where to write the results
    (Python: ``bioattn.evaluate.evaluate_checkpoint``); the suites' own settings are a
    :class:`SuiteSettings`."""

    checkpoint: str | None = setting(None, help="checkpoint directory, .safetensors or .pth",
                                     resolves="random weights of --model")
    model: str | None = setting(None, help="model name", resolves="the checkpoint's")
    model_args: dict[str, Any] = setting(
        help="model constructor argument for checkpoints without metadata (repeatable)",
        factory=dict, flag="--model-arg", metavar="KEY=VALUE", repeat=True, parse=key_values,
        check=model_arguments)
    data: str | None = setting(None, help="'embedded', 'embedded:pair' or a folder with train/ and "
                               "val/ (needed by clean, corruptions, the attacks and glimpses)",
                               resolves="none")
    split: str = setting("val", help="split of --data", choices=("val", "test"), check=one_of("val", "test"))
    suite: str = setting("clean", help=f"comma-separated suites: {', '.join(SUITE_NAMES)}",
                         check=lambda v: None if parse_names(v) and all(
                             s in SUITE_NAMES for s in parse_names(v)) else
                         f"a comma-separated list of {', '.join(SUITE_NAMES)}")
    out: str | None = setting(None, help="results JSON path (the .md table and .png plots go next "
                              "to it)", resolves="print the table only", check=output_path("file"))
    img_size: int | None = setting(None, help="input size", resolves="the checkpoint's",
                                   check=integer(8))
    baseline_checkpoint: str | None = setting(
        None, help="baseline model for the corruptions suite's mCE", resolves="none",
        group="corruptions and ImageNet benchmarks")
    baseline_model: str | None = setting(
        None, help="baseline model name (when its checkpoint has no metadata)",
        resolves="the baseline checkpoint's", group="corruptions and ImageNet benchmarks")


# ------------------------------------------------------------------------------------------
# domains: leave-one-domain-out
# ------------------------------------------------------------------------------------------
_MODEL_ENTRY = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[(.*)\])?$")


def split_model_list(text: str) -> list[str]:
    """``"a,b[k=1,j=2],c"`` -> ``["a", "b[k=1,j=2]", "c"]``: commas inside brackets stay."""
    items, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


def parse_model_entry(text: str) -> tuple[str, dict[str, Any]]:
    """``"rvt_micro[attention=vars_d,num_step=3]"`` -> ``("rvt_micro", {"attention": "vars_d",
    "num_step": 3})``: a model name, then optionally its constructor arguments in brackets
    (values parsed as JSON when possible, as ``--model-arg`` does)."""
    match = _MODEL_ENTRY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BioattnError(f"bad model entry {text!r} (expected NAME or NAME[KEY=VALUE,...], e.g. "
                           "rvt_micro[attention=vars_d])")
    name, inside = match.groups()
    items = split_model_list(inside) if inside else []
    if inside is not None and not items:
        raise BioattnError(f"bad model entry {text!r}: empty brackets")
    try:
        return name, key_values(items)
    except BioattnError as exc:
        raise BioattnError(f"bad model entry {text!r}: {exc}") from None


def _model_entries(value: Any) -> str | None:
    allowed = "a comma-separated list of NAME or NAME[KEY=VALUE,...] (e.g. rvt_micro[attention=vars_d])"
    if not isinstance(value, (list, tuple)) or not value:
        return allowed
    for item in value:
        try:
            _, args = parse_model_entry(item)
        except BioattnError:
            return allowed
        problem = model_arguments(args)
        if problem:
            return f"{allowed}, every argument a finite number where it is one ({item})"
    return None


@dataclass
class DomainsSettings(_Settings):
    """``bioattn domains``: leave-one-domain-out training and testing of several models
    (Python: ``bioattn.generalisation.leave_one_domain_out``)."""

    data: str = setting(help="PACS root (ROOT/<domain>/<class>/*), another folder of domain "
                        "folders, or 'embedded[:options]' for the embedded generator's styles",
                        metavar="ROOT")
    models: list[str] = setting(
        help="comma-separated models, each NAME or NAME[KEY=VALUE,...] with constructor arguments, "
        "e.g. vit_micro_patch8_64,rvt_micro[attention=vars_d]", parse=split_model_list,
        metavar="MODELS", check=_model_entries)
    out: str = setting(help="output folder: results.json, results.md and one run directory per "
                       "model and held-out domain (<out>/<model>/<domain>/)", metavar="DIR",
                       check=output_path("directory"))
    test_domains: list[str] | None = setting(
        None, help="comma-separated held-out domains to run", resolves="every domain in turn",
        parse=parse_names, metavar="DOMAINS", check=each(lambda v: None if isinstance(v, str) and v
                                                       else "domain names", "a list"))
    holdout: float = setting(0.2, help="share of each training domain's images held out for "
                             "validation (selects the epoch; folders only: the embedded data has "
                             "its own val split)", check=number(0, 1, low_open=True, high_open=True))
    init: str | None = setting(None, help="fine-tune every model from this checkpoint (bioattn "
                               "checkpoint directory or released .pth; a classifier of another "
                               "number of classes is left out)", resolves="random weights",
                               metavar="CHECKPOINT")
    recipe: str = setting("small", help="training recipe of the settings left unset",
                          choices=tuple(RECIPES), check=one_of(*RECIPES))
    epochs: int | None = setting(None, help="epochs per run", resolves=_recipe("epochs"),
                                 check=integer(1))
    batch_size: int = setting(64, help="images per optimizer step", check=integer(1))
    img_size: int | None = setting(None, help="input image side in pixels",
                                   resolves="each model's own", check=integer(8))
    lr: float | None = setting(None, help="learning rate", resolves="the recipe's base lr x batch / 512",
                               check=_POSITIVE)
    limit_train: int | None = setting(None, help="train on N images per run, spread evenly",
                                      resolves="all", metavar="N", check=integer(1))
    limit_val: int | None = setting(None, help="validate on N images per run, spread evenly",
                                    resolves="all", metavar="N", check=integer(1))
    limit_test: int | None = setting(None, help="test on N images of each held-out domain, spread "
                                     "evenly", resolves="all", metavar="N", check=integer(1))
    seed: int = setting(0, help="random seed of every run and of the validation split",
                        check=integer(0))
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N")
    workers: int = setting(0, help="data-loader worker processes", check=integer(0))
    overwrite: bool = setting(False, help="train again where a run directory holds a run with "
                              "other settings (finished runs with the same settings are reused)")
    progress: bool = setting(True, help="no progress bars", flag="--no-progress")
    tensorboard: bool = setting(True, help="no TensorBoard scalars", flag="--no-tensorboard")

    def validate(self) -> None:
        if isinstance(self.models, str):
            self.models = split_model_list(self.models)
        if isinstance(self.test_domains, str):
            self.test_domains = parse_names(self.test_domains)
        super().validate()


# ------------------------------------------------------------------------------------------
# demo, report, attend, convert, data
# ------------------------------------------------------------------------------------------
@dataclass
class DemoOptions(_Settings):
    """``bioattn demo`` (Python: ``bioattn.demo.run_demo``)."""

    out: str = setting("demo-report", help="report directory", check=output_path("directory"))
    quick: bool = setting(False, help="tiny budget (about two minutes)")
    retrain: bool = setting(False, help="train again even when checkpoints are cached")
    models: list[str] | None = setting(None, help="comma-separated subset (labels or model names)",
                                       resolves="all", parse=parse_names)
    progress: bool = setting(True, help="no progress bars", flag="--no-progress")


@dataclass
class ZooSettings(_Settings):
    """``bioattn zoo`` (Python: ``bioattn.zoo.build.build_zoo``)."""

    only: list[str] | None = setting(None, help="comma-separated zoo entries to build", resolves="every entry",
                                     parse=parse_names, metavar="ENTRIES")
    retrain: bool = setting(False, help="train again even the entries whose weights were made by their "
                            "present settings")
    runs: str | None = setting(None, help="folder of the training runs (an interrupted build resumes them)",
                               resolves="$BIOATTN_CACHE/zoo-runs", metavar="DIR",
                               check=output_path("directory"))
    progress: bool = setting(True, help="no progress bars", flag="--no-progress")


@dataclass
class ReportSettings(_Settings):
    """``bioattn report`` (Python: ``bioattn.evaluate.report.write_report``)."""

    results: list[str] = setting(help="results JSON files written by bioattn eval", positional=True,
                                 nargs="+")
    out: str = setting(help="output directory", check=output_path("directory"))
    stem: str = setting("report", help="file name stem of the outputs",
                        check=lambda v: None if v and "/" not in v and v not in (".", "..")
                        else "a file name without '/'")


@dataclass
class AttendSettings(_Settings):
    """``bioattn attend`` (Python: ``bioattn.attention.plots.attend``)."""

    image: str = setting(help="image file (any size: it is resized to the model's input)")
    out: str = setting(help="figure file (.png, .pdf, .svg, .jpg)", check=output_path("file"))
    model: str | None = setting(None, help="model name", resolves="the checkpoint's")
    checkpoint: str | None = setting(None, help="bioattn checkpoint directory, .safetensors or "
                                     "released .pth", resolves="random weights")
    prior: list[str] = setting(help="add a top-down map steered by each class (index, or name if "
                               "the checkpoint lists classes)", factory=list, metavar="CLASS",
                               nargs="+")
    prior_scale: float = setting(40.0, help="mask scale of class priors", check=_POSITIVE)
    img_size: int | None = setting(None, help="build the model for this input size",
                                   resolves="the checkpoint's or the model's", check=integer(8))
    num_classes: int | None = setting(None, help="classes of a bare checkpoint's model",
                                      resolves="the checkpoint's or the model's", check=integer(1))
    readouts: int | None = setting(None, help="glimpse models: number of glimpses (readouts) to draw",
                                   resolves="8", metavar="N", check=integer(1))
    gif: bool = setting(False, help="glimpse models: also write an animated GIF")
    model_args: dict[str, Any] = setting(
        help="model constructor argument, e.g. attention=vars_d (repeatable)", factory=dict,
        flag="--model-arg", metavar="KEY=VALUE", repeat=True, parse=key_values,
        check=model_arguments)

    def validate(self) -> None:
        super().validate()
        if self.checkpoint is None and self.model is None:
            raise BioattnError("give --model (and --checkpoint for trained weights)")
        try:
            same = Path(self.image).resolve() == Path(self.out).resolve()
        except OSError:
            same = False
        if same:
            raise BioattnError(f"--out must differ from --image; both are {self.out}")


@dataclass
class ConvertSettings(_Settings):
    """``bioattn convert`` (Python: ``bioattn.checkpoint.convert_checkpoint``)."""

    src: str = setting(help="released checkpoint (.pth)", positional=True)
    dst: str = setting(help="bioattn checkpoint directory to write", positional=True,
                       check=output_path("directory"))
    model: str = setting(help="model name, e.g. absvit_tiny_patch16_224")
    num_classes: int | None = setting(None, help="classes of the checkpoint's head",
                                      resolves="the model's", check=integer(1))
    img_size: int | None = setting(None, help="input size the model was trained at",
                                   resolves="the model's", check=integer(8))
    mean: list[float] | None = setting(None, help="input mean R,G,B", resolves="the model's config",
                                       parse=parse_rgb, check=_rgb(positive=False))
    std: list[float] | None = setting(None, help="input standard deviation R,G,B (each > 0)",
                                      resolves="the model's config", parse=parse_rgb,
                                      check=_rgb(positive=True))
    model_args: dict[str, Any] = setting(
        help="model constructor argument, e.g. attention=vars_d for the VARS releases (repeatable)",
        factory=dict, flag="--model-arg", metavar="KEY=VALUE", repeat=True, parse=key_values,
        check=model_arguments)
    overwrite: bool = setting(False, help="replace an existing checkpoint directory at DST")


_SPLITS = ("train", "val", "test")


@dataclass
class DataGenerateSettings(_Settings):
    """``bioattn data generate`` (Python: ``bioattn.data.embedded.ensure_cached``)."""

    data: str = setting("embedded", help="'embedded', 'embedded:pair' or "
                        "'embedded:size=96,train=5000,val=500,test=500,seed=3'", metavar="SPEC")
    cache: str | None = setting(None, help="cache root", resolves="$BIOATTN_CACHE or ~/.cache/bioattn",
                                metavar="DIR", check=output_path("directory"))
    workers: int | None = setting(None, help="processes", resolves="one per CPU", check=integer(1))
    force: bool = setting(False, help="generate again even if a valid copy exists")


@dataclass
class DataPreviewSettings(_Settings):
    """``bioattn data preview`` (Python: ``bioattn.data.embedded.preview``)."""

    out: str = setting(help="PNG file to write", check=output_path("file"))
    data: str = setting("embedded", help="embedded spec", metavar="SPEC")
    n: int = setting(16, help="number of images", check=integer(1))
    split: str = setting("val", help="split to draw", choices=_SPLITS, check=one_of(*_SPLITS))
