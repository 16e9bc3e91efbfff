"""Evaluation settings: what ``bioattn eval`` evaluates (:class:`EvalSettings`), the settings
the suites share (:class:`SuiteSettings`), the suites' names and the named protocols
(:data:`PRESETS`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from ..errors import BioattnError
from .fields import (
    POSITIVE,
    Settings,
    default_of,
    each,
    flag_of,
    integer,
    model_arguments,
    number,
    one_of,
    output_path,
    setting,
)
from .parsing import key_values, parse_eps, parse_int_list, parse_names, parse_one_eps

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
class SuiteSettings(Settings):
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
    # The number of readouts (predictions after a pass or a glimpse) a multi-readout model runs; for a
    # glimpse model, its number of glimpses (readouts, glimpses and num_glimpses: docs/evaluation.md).
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
        check=each(POSITIVE, "a list"))
    step_size: float | None = setting(
        None, help="PGD step size (in (0, 1] for Linf)", resolves="eps/2", parse=parse_one_eps,
        group="attacks (pixels in [0,1]; defaults are the official settings)", check=POSITIVE)
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
    # steering: the protocol (prior scale and map threshold) is chosen on validation pairs unless given
    prior_scale: float | None = setting(
        None, help="steering: mask scale of the class prior", metavar="S", check=POSITIVE, group="attention",
        resolves="chosen on validation pairs; 40 without them")
    map_threshold: float | None = setting(
        None, help="steering: score the map above min + T (max - min) (0.7: the authors' display)", metavar="T",
        check=number(0, 1, high_open=True), group="attention",
        resolves="chosen with the prior scale; the raw map when --prior-scale is given")
    steering_validation: int = setting(500, help="steering: validation pairs the protocol is chosen on",
                                       metavar="N", check=integer(1), group="attention")
    # the validation pairs the steering protocol is chosen on (default: none)
    steering_validation_data: Any = None
    # segmentation: how a label map is predicted
    inference: str = setting("whole", help="segment whole images, or by sliding windows of --slide-crop "
                             "pixels", choices=("whole", "slide"), check=one_of("whole", "slide"),
                             group="segmentation")
    slide_crop: int | None = setting(None, help="sliding-window side", resolves="the model's input size",
                                     check=integer(8), group="segmentation")
    slide_stride: int | None = setting(None, help="sliding-window step", resolves="two thirds of the window",
                                       check=integer(1), group="segmentation")

    def validate(self) -> None:
        # parsed here, once: the suites read lists
        self.eps = parse_eps(self.eps)
        if isinstance(self.severities, str):
            self.severities = parse_int_list(self.severities, "severities")
        elif self.severities is not None:
            self.severities = list(self.severities)
        if isinstance(self.corruptions, str):
            self.corruptions = parse_names(self.corruptions)
        elif self.corruptions is not None:
            self.corruptions = list(self.corruptions)
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
                   if f.name in values and getattr(self, f.name) == default_of(f)}
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


def suite_settings(settings: SuiteSettings | None = None, **keywords: Any) -> SuiteSettings:
    """The suites' settings from a :class:`SuiteSettings`, from keyword arguments naming its
    fields, or from both (the keywords replace the object's values); ``settings`` itself is left
    as it is. The one place where the Python API's keywords become settings: an unknown name is
    refused."""
    known = {f.name for f in dataclasses.fields(SuiteSettings)}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise BioattnError(f"unknown evaluation setting(s): {', '.join(unknown)}")
    return dataclasses.replace(settings or SuiteSettings(), **keywords)


SUITE_NAMES = (
    "clean", "imagenet-c", "corruptions", "imagenet-a", "imagenet-r", "imagenet-sketch",
    "fgsm", "pgd", "autoattack", "steering", "fixations", "glimpses",
)


@dataclass
class EvalSettings(Settings):
    """``bioattn eval``: what to evaluate, on which data, and where to write the results
    (Python: ``bioattn.evaluate.evaluate_checkpoint``); the suites' own settings are a
    :class:`SuiteSettings`."""

    checkpoint: str | None = setting(None, help="checkpoint directory, .safetensors, .pth or "
                                     "zoo:ENTRY (a model of the zoo)",
                                     resolves="random weights of --model")
    model: str | None = setting(None, help="model name", resolves="the checkpoint's")
    model_args: dict[str, Any] = setting(
        help="model constructor argument for checkpoints without metadata (repeatable)",
        factory=dict, flag="--model-arg", metavar="KEY=VALUE", repeat=True, parse=key_values,
        check=model_arguments)
    data: str | None = setting(None, help="'embedded', 'embedded:pair' or a folder with train/ and "
                               "val/ (needed by clean, corruptions, the attacks and glimpses)",
                               resolves="none")
    split: str = setting("test", help="split of --data (a folder without test/, and VOC, ADE20K, Cityscapes "
                         "and COCO, whose test labels are not public, give their val split for test)",
                         choices=("val", "test"), check=one_of("val", "test"))
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
