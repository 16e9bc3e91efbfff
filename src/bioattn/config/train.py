"""Training settings: :class:`TrainConfig` (``bioattn train``) and the recipes that fill in the
settings a run leaves unset (:data:`RECIPES`).

No torch or timm at module level: the optimizer check loads timm when it runs, and
:meth:`TrainConfig.resolved` loads the data module.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BioattnError
from ..tasks import TASKS, resolve_task, task_of_data, task_spec
from .fields import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Settings,
    default_of,
    flag_of,
    flag_words,
    integer,
    model_arguments,
    number,
    one_of,
    output_path,
    setting,
)
from .parsing import key_values

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


def recipe_help(key: str) -> str:
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


@dataclass
class TrainConfig(Settings):
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
    epochs: int | None = setting(None, help="number of epochs", resolves=recipe_help("epochs"),
                                 check=integer(1))
    batch_size: int = setting(128, help="images per process per batch (per optimizer step unless "
                              "--grad-accum is given)", check=integer(1))
    base_lr: float | None = setting(None, help="learning rate per 512 images (scaled by the global "
                                    "batch size unless --lr is given)", resolves=recipe_help("base_lr"),
                                    check=POSITIVE)
    lr: float | None = setting(None, help="learning rate", resolves="base-lr x global batch / 512",
                               check=POSITIVE)
    min_lr: float | None = setting(None, help="learning rate at the end of the schedule",
                                   resolves=recipe_help("min_lr"), check=NON_NEGATIVE)
    warmup_lr: float | None = setting(None, help="learning rate at the start of the warm-up",
                                      resolves=recipe_help("warmup_lr"), check=NON_NEGATIVE)
    warmup_epochs: int | None = setting(None, help="epochs of linear learning-rate warm-up",
                                        resolves=recipe_help("warmup_epochs"), check=integer(0))
    weight_decay: float | None = setting(None, help="decoupled weight decay",
                                         resolves=recipe_help("weight_decay"), check=NON_NEGATIVE)
    opt: str = setting("adamw", help="optimizer: any timm optimizer name (sgd, adamw, lamb, ...)",
                       check=timm_optimizer)
    sched: str | None = setting(None, help="learning-rate schedule (timm scheduler)",
                                choices=_SCHEDULERS, check=one_of(*_SCHEDULERS), resolves=recipe_help("sched"))
    clip_grad: float | None = setting(None, help="clip the gradient norm to this value",
                                      resolves="no clipping", check=POSITIVE)
    smoothing: float | None = setting(None, help="label smoothing", resolves=recipe_help("smoothing"),
                                      check=number(0, 1, high_open=True))
    mixup: float | None = setting(None, help="mixup alpha (0: off)", resolves=recipe_help("mixup"),
                                  check=NON_NEGATIVE)
    cutmix: float | None = setting(None, help="cutmix alpha (0: off)", resolves=recipe_help("cutmix"),
                                   check=NON_NEGATIVE)
    mixup_prob: float = setting(1.0, help="probability of mixing a batch", check=FRACTION)
    mixup_switch_prob: float = setting(0.5, help="probability of cutmix instead of mixup when "
                                       "both are on", check=FRACTION)
    aa: str | None = setting(None, help="RandAugment policy, e.g. rand-m9-mstd0.5-inc1 ('none': off)",
                             resolves=recipe_help("aa"), check=rand_augment)
    color_jitter: float | None = setting(None, help="colour jitter strength",
                                         resolves=recipe_help("color_jitter"), check=NON_NEGATIVE)
    reprob: float | None = setting(None, help="random erasing probability",
                                   resolves=recipe_help("reprob"), check=FRACTION)
    hflip: float | None = setting(None, help="horizontal flip probability",
                                  resolves=recipe_help("hflip"), check=FRACTION)
    random_resized_crop: bool | None = setting(None, help="random resized crops of the training "
                                               "images", resolves=recipe_help("random_resized_crop"))
    repeated_aug: bool | None = setting(None, help="repeated-augmentation sampler",
                                        resolves=recipe_help("repeated_aug"))
    drop_path: float | None = setting(None, help="stochastic depth rate",
                                      resolves=recipe_help("drop_path"), check=number(0, 1, high_open=True))
    model_ema: bool | None = setting(None, help="keep an exponential moving average of the weights",
                                     resolves=recipe_help("model_ema"))
    model_ema_decay: float | None = setting(None, help="decay of the weight average",
                                            resolves=recipe_help("model_ema_decay"),
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
                               ".safetensors, released .pth or zoo:ENTRY): every weight is loaded except a "
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
    # the settings the user gave (on the command line; from Python: None, read as those that
    # differ from their defaults): a resumed run refuses to change them. Not a flag.
    explicit: frozenset[str] | None = field(default=None, kw_only=True, compare=False, repr=False)

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
            shown = ", ".join(f"{flag_of(fields[n])} {flag_words(getattr(self, n))}" for n in unused)
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
                raise BioattnError(f"--model-arg {arg} must be {problem}; got {flag_words(given)}")
            if value is not None and given != value:
                flag = flag_of(next(f for f in dataclasses.fields(self) if f.name == name))
                raise BioattnError(f"{flag} {value} conflicts with --model-arg {arg}={given}: give the "
                                   f"setting once, or both with the same value")

    def explicit_settings(self) -> frozenset[str]:
        """Names of the settings the user chose: those given on the command line, or (built in
        Python) those that differ from their defaults."""
        if self.explicit is not None:
            return self.explicit
        return frozenset(f.name for f in dataclasses.fields(self)
                         if f.name != "explicit" and getattr(self, f.name) != default_of(f))

    def resolved(self) -> TrainConfig:
        """A copy with every recipe setting filled in."""
        # deferred: bioattn.data loads torch, which the settings module must not
        from ..data import is_embedded

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
        values["explicit"] = self.explicit_settings()
        return TrainConfig(**values)
