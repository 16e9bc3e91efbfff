"""Settings of the commands besides training and evaluation: ``models``, ``domains``, ``demo``,
``zoo``, ``results``, ``report``, ``attend``, ``convert`` and ``data``; and the model lists of ``domains``
(``NAME[KEY=VALUE,...]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BioattnError
from .fields import (
    POSITIVE,
    Settings,
    each,
    integer,
    model_arguments,
    number,
    one_of,
    output_path,
    rgb_triple,
    setting,
)
from .parsing import key_values, parse_eps, parse_int_list, parse_names, parse_rgb
from .train import RECIPES, recipe_help


@dataclass
class ModelsSettings(Settings):
    """``bioattn models``: list the registered models."""

    pattern: str = setting("", help="only names containing this text", positional=True)
    num_classes: int | None = setting(None, help="count parameters for this many classes",
                                      resolves="each model's own", check=integer(1))


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
class DomainsSettings(Settings):
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
                               "checkpoint directory, released .pth or zoo:ENTRY; a classifier of another "
                               "number of classes is left out)", resolves="random weights",
                               metavar="CHECKPOINT")
    recipe: str = setting("small", help="training recipe of the settings left unset",
                          choices=tuple(RECIPES), check=one_of(*RECIPES))
    epochs: int | None = setting(None, help="epochs per run", resolves=recipe_help("epochs"),
                                 check=integer(1))
    batch_size: int = setting(64, help="images per optimizer step", check=integer(1))
    img_size: int | None = setting(None, help="input image side in pixels",
                                   resolves="each model's own", check=integer(8))
    lr: float | None = setting(None, help="learning rate", resolves="the recipe's base lr x batch / 512",
                               check=POSITIVE)
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
class DemoOptions(Settings):
    """``bioattn demo`` (Python: ``bioattn.demo.run_demo``)."""

    out: str = setting("demo-report", help="report directory", check=output_path("directory"))
    quick: bool = setting(False, help="tiny budget: checks the pipeline end to end (under a minute on a 2-core CPU)")
    retrain: bool = setting(False, help="train every model here, neither from the zoo's weights nor from "
                            "cached checkpoints")
    models: list[str] | None = setting(None, help="comma-separated subset (labels or model names)",
                                       resolves="all", parse=parse_names)
    progress: bool = setting(True, help="no progress bars", flag="--no-progress")


@dataclass
class ZooSettings(Settings):
    """``bioattn zoo`` (Python: ``bioattn.zoo_builder.build_zoo``; ``--list``:
    ``bioattn.zoo_builder.zoo_listing``)."""

    only: list[str] | None = setting(None, help="comma-separated zoo entries to build (names, or patterns such as "
                                     "'rvt_micro*_seed1')", resolves="every entry", parse=parse_names,
                                     metavar="ENTRIES", check=lambda v: None if v is None or v else
                                     "at least one entry name (leave --only out to build every entry)")
    out: str | None = setting(None, help="folder the entries' folders go into", resolves="the package's zoo folder "
                              "when run from a source checkout", metavar="DIR", check=output_path("directory"))
    list_entries: bool = setting(False, help="list the selected entries, their names for timm and whether each is "
                                 "built; train nothing", flag="--list")
    report: str | None = setting(None, help="write the built entries' curves, test figures, seeds and training "
                                 "times to this Markdown page; train nothing", metavar="PAGE.md",
                                 check=output_path("file"))
    retrain: bool = setting(False, help="train again even the entries whose weights were made by their "
                            "present settings")
    runs: str | None = setting(None, help="folder of the training runs (an interrupted build resumes them)",
                               resolves="$BIOATTN_CACHE/zoo-runs", metavar="DIR",
                               check=output_path("directory"))
    progress: bool = setting(True, help="no progress bars", flag="--no-progress")


@dataclass
class ResultsSettings(Settings):
    """``bioattn results`` (Python: ``bioattn.results.page.write_results``; ``--check``:
    ``bioattn.results.page.check_results``): the sources' claims measured on the zoo, image by
    image; how many test images each measurement uses."""

    out: str = setting("docs/results.md", help="the results page (.md); its per-image records go into "
                       "<folder of the same name>/records beside it",
                       check=lambda v: output_path("file")(v) or (None if str(v).endswith(".md") else "a .md file"))
    check: bool = setting(False, help="measure nothing: recompute every verdict from the stored records and "
                          "compare it with the page (an error naming the record or claim when a record was "
                          "altered or a verdict differs)")
    only: list[str] | None = setting(None, help="comma-separated zoo entries to measure, even where their records "
                                     "are current (the others' records are kept)",
                                     resolves="every built entry whose record is missing or was measured on other "
                                              "weights or settings", parse=parse_names, metavar="ENTRIES")
    images: int = setting(2000, help="test images for clean top-1 (and for segmenters and multi-label models)",
                          check=integer(1))
    corruption_images: int = setting(1000, help="test images under every corruption and severity",
                                     check=integer(1))
    severities: list[int] = setting(help="comma-separated corruption severities", factory=lambda: [1, 2, 3, 4, 5],
                                    resolves="1,2,3,4,5",
                                    parse=lambda text: parse_int_list(text, "severities"),
                                    check=each(integer(1, 5), "a list"))
    attack_images: int = setting(1000, help="test images attacked (FGSM, PGD)", check=integer(1))
    eps: list[float] = setting(help="comma-separated attack budgets (Linf, pixels in [0, 1]); the claims are "
                               "judged at 1/255", factory=lambda: [1 / 255, 2 / 255, 4 / 255], parse=parse_eps,
                               resolves="1/255,2/255,4/255",
                               check=each(number(0, 1, low_open=True), "a list"))
    attention_images: int = setting(1000, help="test images whose attention map (or fixations) is scored",
                                    check=integer(1))
    steering_images: int = setting(1000, help="two-object test images for steering", check=integer(1))
    glimpses: int = setting(16, help="glimpses of the glimpse models", check=integer(2))
    attack_readout: int = setting(4, help="the glimpse the attack on the glimpse models aims at",
                                  check=integer(1))
    batch_size: int = setting(100, help="images per batch", check=integer(1))
    workers: int = setting(0, help="processes that corrupt images (0: in this process)", check=integer(0))
    seed: int = setting(0, help="random seed of the evaluations", check=integer(0))
    progress: bool = setting(True, help="no progress bars", flag="--no-progress")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attack_readout > self.glimpses:
            raise BioattnError(f"--attack-readout {self.attack_readout} is beyond --glimpses {self.glimpses}")


@dataclass
class ReportSettings(Settings):
    """``bioattn report`` (Python: ``bioattn.evaluate.report.write_report``)."""

    results: list[str] = setting(help="results JSON files written by bioattn eval", positional=True,
                                 nargs="+")
    out: str = setting(help="output directory", check=output_path("directory"))
    stem: str = setting("report", help="file name stem of the outputs",
                        check=lambda v: None if v and "/" not in v and v not in (".", "..")
                        else "a file name without '/'")


@dataclass
class AttendSettings(Settings):
    """``bioattn attend`` (Python: ``bioattn.attention.plots.attend``)."""

    image: str = setting(help="image file (any size: it is resized to the model's input)")
    out: str = setting(help="figure file (.png, .pdf, .svg, .jpg)", check=output_path("file"))
    model: str | None = setting(None, help="model name", resolves="the checkpoint's")
    checkpoint: str | None = setting(None, help="bioattn checkpoint directory, .safetensors, "
                                     "released .pth or zoo:ENTRY", resolves="random weights")
    prior: list[str] = setting(help="add a top-down map steered by each class (index, or name if "
                               "the checkpoint lists classes)", factory=list, metavar="CLASS",
                               nargs="+")
    prior_scale: float = setting(40.0, help="mask scale of class priors", check=POSITIVE)
    img_size: int | None = setting(None, help="build the model for this input size",
                                   resolves="the checkpoint's or the model's", check=integer(8))
    num_classes: int | None = setting(None, help="classes of a bare checkpoint's model",
                                      resolves="the checkpoint's or the model's", check=integer(1))
    readouts: int | None = setting(None, help="glimpse models: number of glimpses to draw (one readout each)",
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
class ConvertSettings(Settings):
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
                                       parse=parse_rgb, check=rgb_triple(positive=False))
    std: list[float] | None = setting(None, help="input standard deviation R,G,B (each > 0)",
                                      resolves="the model's config", parse=parse_rgb,
                                      check=rgb_triple(positive=True))
    model_args: dict[str, Any] = setting(
        help="model constructor argument, e.g. attention=vars_d for the VARS releases (repeatable)",
        factory=dict, flag="--model-arg", metavar="KEY=VALUE", repeat=True, parse=key_values,
        check=model_arguments)
    overwrite: bool = setting(False, help="replace an existing checkpoint directory at DST")


_SPLITS = ("train", "val", "test")


@dataclass
class DataGenerateSettings(Settings):
    """``bioattn data generate`` (Python: ``bioattn.data.embedded.ensure_cached``)."""

    data: str = setting("embedded", help="'embedded', 'embedded:pair' or "
                        "'embedded:size=96,train=5000,val=500,test=500,seed=3'", metavar="SPEC")
    cache: str | None = setting(None, help="cache root", resolves="$BIOATTN_CACHE or ~/.cache/bioattn",
                                metavar="DIR", check=output_path("directory"))
    workers: int | None = setting(None, help="processes", resolves="one per CPU", check=integer(1))
    force: bool = setting(False, help="generate again even if a valid copy exists")


@dataclass
class DataPreviewSettings(Settings):
    """``bioattn data preview`` (Python: ``bioattn.data.embedded.preview``)."""

    out: str = setting(help="PNG file to write", check=output_path("file"))
    data: str = setting("embedded", help="embedded spec", metavar="SPEC")
    n: int = setting(16, help="number of images", check=integer(1))
    split: str = setting("val", help="split to draw", choices=_SPLITS, check=one_of(*_SPLITS))
