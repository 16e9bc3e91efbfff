"""The model zoo: micro models of every family trained on the embedded benchmark by bioattn's
own trainer, their weights shipped with the package.

Each entry of :data:`ZOO` names a model (registered name and constructor arguments), the data it
is trained on and the training settings that differ from the recipe. ``bioattn zoo`` (Python:
:func:`bioattn.zoo_builder.build_zoo`) trains the entries from scratch with their recorded seeds
and writes each into ``bioattn/zoo/<entry>/``:

* ``model.safetensors``: the weights of the epoch with the best validation score, in float16;
* ``config.json``: the checkpoint's metadata in the layout of timm's model configuration
  (architecture, constructor arguments, input settings, class names; bioattn's own record
  beside them), so that the folder is a checkpoint for ``bioattn eval --checkpoint`` and
  :func:`bioattn.checkpoint.load_model`, and ``timm.create_model("local-dir:<folder>",
  pretrained=True)`` builds it;
* ``train.json``: the command that made it, its seed, the training log of every epoch, the
  training time and the test-split figures.

The entry of a model without constructor arguments is also its pretrained tag
``embedded``: ``timm.create_model("vit_micro_patch8_64.embedded", pretrained=True)``.

This module only describes the zoo (no torch): the models' default configurations read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).resolve().parent
# the pretrained tag of the zoo's weights in timm's names (``<model>.embedded``)
ZOO_TAG = "embedded"
# the tag of the multi-label models' weights (``<model>.embedded_multi``)
MULTILABEL_TAG = "embedded_multi"

# the embedded benchmark: the default embedded data (20,000 training, 2,000 validation and
# 2,000 test images of 64 px); the task variants draw the same way
BENCHMARK = "embedded"
SEGMENTATION_BENCHMARK = "embedded:seg"
MULTILABEL_BENCHMARK = "embedded:multi"
# leave one style out: the embedded scenes in four styles (bioattn.data.embedded's domains),
# 2,000 training, 400 validation and 1,000 test images per style; a model trains on three styles
# (selecting its epoch on their validation images) and is tested on the fourth
STYLES: tuple[str, ...] = ("photo", "cartoon", "sketch", "painting")
STYLES_ROOT = "embedded:train=2000,val=400,test=1000"


def held_out_spec(style: str) -> str:
    """The data spec (``bioattn.data.domains``) that trains on every style but ``style`` and tests on it."""
    train = "+".join(s for s in STYLES if s != style)
    return f"domains:train={train},test={style},holdout=0.2,seed=0,root={STYLES_ROOT}"

# training settings of the classifiers (differences from the ``small`` recipe), one per kind of
# model, from measured learning curves (docs/training.md): RVT (every attention) and the glimpse
# models are within a point of their best after 15 epochs; the plain ViTs (ViT, AbSViT,
# DeiT-style) learn more slowly and get twice the learning rate; GFNet with VARS-S trains at
# about 110 img/s, so both GFNets get the 8 epochs that fit the 30-minute budget
CLASSIFIER_SETTINGS: dict[str, Any] = dict(epochs=15, batch_size=128, base_lr=2e-3, warmup_epochs=1, hflip=0.5)
VIT_SETTINGS: dict[str, Any] = dict(epochs=15, batch_size=128, base_lr=4e-3, warmup_epochs=2, hflip=0.5)
GFNET_SETTINGS: dict[str, Any] = dict(epochs=8, batch_size=128, base_lr=8e-3, warmup_epochs=1, hflip=0.5)
# segmenters and multi-label models are fine-tuned from the zoo's classifier of their backbone
# (``init="zoo:<entry>"``), as the sources fine-tune ImageNet backbones: UperNet heads learn at
# about 120 img/s here, and from random weights the ViT segmenter reached 23% mIoU after 20,000
# images against 25% from the classifier; the recipe is upernet's with the learning rate of the
# classifiers (the recipe's 6e-5 suits pretrained ImageNet backbones of 512-pixel inputs)
SEGMENTER_SETTINGS: dict[str, Any] = dict(epochs=5, batch_size=32, lr=1e-3, warmup_epochs=1, recipe="upernet")
MULTILABEL_SETTINGS: dict[str, Any] = dict(epochs=8, batch_size=128, base_lr=2e-3, warmup_epochs=1, hflip=0.5)
# leave-one-style-out models are fine-tuned too: 6,000 images of three styles, 15 epochs (at 5,
# the validation top-1 on the training styles was still rising)
STYLE_SETTINGS: dict[str, Any] = dict(epochs=15, batch_size=128, base_lr=2e-3, warmup_epochs=1, hflip=0.5,
                                      recipe="small")


# training seeds: seed 0's weights are a model's default zoo tag (``<model>.embedded``), the others
# load under their own tags (``<model>.embedded_seed1``) so that a difference between two
# architectures can be told from the spread between seeds
SEEDS: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: ``name`` (its folder), the registered ``model`` and its ``model_args``
    (the training command's), the ``data`` spec it is trained on, the training ``settings``
    (``TrainConfig`` fields besides model, data and seed) and the ``seed``.

    ``registered`` is the timm name it loads under with ``pretrained=True`` (``model`` itself when
    it has no constructor arguments, else a registered name that builds the same network) and
    ``base_tag`` its pretrained tag for seed 0; other seeds add ``_seed<k>``."""

    name: str
    model: str
    data: str = BENCHMARK
    model_args: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=lambda: dict(CLASSIFIER_SETTINGS))
    seed: int = 0
    label: str = ""
    registered: str = ""
    base_tag: str = ZOO_TAG

    @property
    def folder(self) -> Path:
        return ZOO_DIR / self.name

    @property
    def timm_name(self) -> str:
        """The registered name this entry loads under (without its tag)."""
        return self.registered or self.model

    @property
    def tag(self) -> str:
        """The pretrained tag of this entry's weights: ``embedded`` (or the entry's own base tag)
        for seed 0, with ``_seed<k>`` for seed k."""
        return self.base_tag if self.seed == 0 else f"{self.base_tag}_seed{self.seed}"

    @property
    def tagged(self) -> str:
        """``<registered name>.<tag>``: ``timm.create_model(entry.tagged, pretrained=True)`` loads it."""
        return f"{self.timm_name}.{self.tag}"

    def is_built(self) -> bool:
        return (self.folder / "model.safetensors").is_file() and (self.folder / "config.json").is_file()


# the glimpse models' number of glimpses per training batch, drawn from 2 to 16: trained with
# exactly four, RS-RNN's top-1 falls from 95.0% at glimpse 4 to 82.3% at 16; trained over 2-16 it
# keeps 97.2% at 16 (over 2-8: 90.2% at 16, falling past 8)
GLIMPSE_RANGE: dict[str, Any] = dict(train_glimpses=[2, 16])

# the micro ViT's layout (``vit_micro_patch8_64``), for a DeiT-style ViT with VARS-D attention
MICRO_VIT: dict[str, Any] = dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3, global_pool="avg")


def _classifier(name: str, model: str, label: str, settings: dict[str, Any] = CLASSIFIER_SETTINGS,
                registered: str = "", **model_args: Any) -> ZooEntry:
    return ZooEntry(name, model, BENCHMARK, dict(model_args), dict(settings), label=label, registered=registered)


# the RVT segmenters have heads of 128 and 64 channels, wider than the micro default (96 and 48,
# which keeps AbSViT's segmenter under 5 MB); each pair compared shares its head widths
RVT_SEGMENTER_HEAD: dict[str, Any] = dict(channels=128, aux_channels=64)


def _fine_tuned(name: str, model: str, label: str, data: str, settings: dict[str, Any], start: str,
                registered: str = "", base_tag: str = ZOO_TAG, **model_args: Any) -> ZooEntry:
    """An entry trained on ``data`` from the weights of zoo entry ``start`` (built before it)."""
    return ZooEntry(name, model, data, dict(model_args), dict(settings, init=f"zoo:{start}"), label=label,
                    registered=registered, base_tag=base_tag)


def seeded(entry: ZooEntry, seed: int) -> ZooEntry:
    """``entry`` trained with another ``seed``: its own folder (``<name>_seed<k>``) and tag; a
    fine-tuned entry starts from the same seed of its starting entry."""
    if seed == entry.seed:
        return entry
    settings = dict(entry.settings)
    if str(settings.get("init", "")).startswith("zoo:"):
        settings["init"] = f"{settings['init']}_seed{seed}"
    return dataclasses.replace(entry, name=f"{entry.name}_seed{seed}", seed=seed, settings=settings)


_SEED_ZERO: tuple[ZooEntry, ...] = (
    # AbSViT and its feedforward twin
    _classifier("vit_micro_patch8_64", "vit_micro_patch8_64", "ViT", VIT_SETTINGS),
    _classifier("absvit_micro_patch8_64", "absvit_micro_patch8_64", "AbSViT", VIT_SETTINGS),
    # the same with a convolutional stem (and the DeiT-style ViT with VARS-D below): the ViT family
    # compared on equal terms, each token embedded by three 3x3 convolutions instead of one 8x8
    # projection
    _classifier("vit_micro_convstem_64", "vit_micro_convstem_64", "ViT (conv stem)", VIT_SETTINGS),
    _classifier("absvit_micro_convstem_64", "absvit_micro_convstem_64", "AbSViT (conv stem)", VIT_SETTINGS),
    _classifier("deit_micro_convstem_64_vars_d", "deit_micro_convstem_64_vars_d", "DeiT-style ViT VARS-D (conv stem)",
                VIT_SETTINGS),
    # VARS in RVT (every attention), in a DeiT-style ViT (the micro ViT's layout), in GFNet
    _classifier("rvt_micro", "rvt_micro", "RVT (self-attention)"),
    _classifier("rvt_micro_vars_s", "rvt_micro", "RVT VARS-S", registered="rvt_micro_vars_s", attention="vars_s"),
    _classifier("rvt_micro_vars_d", "rvt_micro", "RVT VARS-D", registered="rvt_micro_vars_d", attention="vars_d"),
    _classifier("rvt_micro_vars_sd", "rvt_micro", "RVT VARS-SD", registered="rvt_micro_vars_sd",
                attention="vars_sd"),
    _classifier("deit_micro_patch8_64_vars_d", "deit_tiny_patch16_224_vars_d", "DeiT-style ViT VARS-D",
                VIT_SETTINGS, registered="deit_micro_patch8_64_vars_d", **MICRO_VIT),
    _classifier("gfnet_micro", "gfnet_micro", "GFNet (global filter)", GFNET_SETTINGS),
    _classifier("gfnet_micro_vars_s", "gfnet_micro", "GFNet VARS-S", GFNET_SETTINGS, registered="gfnet_micro_vars_s",
                mixer="vars_s"),
    # RS-RNN and its baselines; the glimpse models train with 2 to 16 glimpses per batch, so that
    # looking longer than four glimpses stays within what they learnt (docs/training.md)
    _classifier("rsrnn_micro", "rsrnn_micro", "RS-RNN", **GLIMPSE_RANGE),
    _classifier("ffcnn_micro", "ffcnn_micro", "FF-CNN"),
    _classifier("crop_s_micro", "crop_s_micro", "Crop-S", **GLIMPSE_RANGE),
    _classifier("crop_d_micro", "crop_d_micro", "Crop-D", **GLIMPSE_RANGE),
    _classifier("retina_gru_micro", "retina_gru_micro", "Retina-GRU", **GLIMPSE_RANGE),
    _classifier("s3ta_micro", "s3ta_micro", "S3TA", **GLIMPSE_RANGE),
    # FF-CNN on RS-RNN's retinal image at the centre: the retina's blur without recurrence or eye
    # movements
    _classifier("retina_cnn_micro", "retina_cnn_micro", "Retina-CNN"),
    # segmentation (UperNet) and multi-label recognition, from the classifiers above
    _fine_tuned("upernet_vit_micro_patch8_64", "upernet_vit_micro_patch8_64", "UperNet ViT",
                SEGMENTATION_BENCHMARK, SEGMENTER_SETTINGS, "vit_micro_patch8_64"),
    _fine_tuned("upernet_absvit_micro_patch8_64", "upernet_absvit_micro_patch8_64", "UperNet AbSViT",
                SEGMENTATION_BENCHMARK, SEGMENTER_SETTINGS, "absvit_micro_patch8_64", prior_classes=10),
    _fine_tuned("upernet_vit_micro_convstem_64", "upernet_vit_micro_convstem_64", "UperNet ViT (conv stem)",
                SEGMENTATION_BENCHMARK, SEGMENTER_SETTINGS, "vit_micro_convstem_64"),
    _fine_tuned("upernet_absvit_micro_convstem_64", "upernet_absvit_micro_convstem_64", "UperNet AbSViT (conv stem)",
                SEGMENTATION_BENCHMARK, SEGMENTER_SETTINGS, "absvit_micro_convstem_64", prior_classes=10),
    _fine_tuned("upernet_rvt_micro", "upernet_rvt_micro", "UperNet RVT (self-attention)",
                SEGMENTATION_BENCHMARK, SEGMENTER_SETTINGS, "rvt_micro", **RVT_SEGMENTER_HEAD),
    _fine_tuned("upernet_rvt_micro_vars_d", "upernet_rvt_micro", "UperNet RVT VARS-D",
                SEGMENTATION_BENCHMARK, SEGMENTER_SETTINGS, "rvt_micro_vars_d", registered="upernet_rvt_micro_vars_d",
                attention="vars_d", **RVT_SEGMENTER_HEAD),
    _fine_tuned("multilabel_vit_micro_patch8_64", "vit_micro_patch8_64", "ViT, multi-label",
                MULTILABEL_BENCHMARK, MULTILABEL_SETTINGS, "vit_micro_patch8_64", base_tag=MULTILABEL_TAG),
    _fine_tuned("multilabel_vit_micro_convstem_64", "vit_micro_convstem_64", "ViT (conv stem), multi-label",
                MULTILABEL_BENCHMARK, MULTILABEL_SETTINGS, "vit_micro_convstem_64", base_tag=MULTILABEL_TAG),
    _fine_tuned("multilabel_rsrnn_micro", "rsrnn_micro", "RS-RNN, multi-label",
                MULTILABEL_BENCHMARK, MULTILABEL_SETTINGS, "rsrnn_micro", base_tag=MULTILABEL_TAG),
    # leave one style out: RVT with self-attention and with VARS-D, each style held out in turn
    *(_fine_tuned(f"{start}_without_{style}", "rvt_micro", f"{label}, {style} held out", held_out_spec(style),
                  STYLE_SETTINGS, start, registered=start, base_tag=f"without_{style}", **args)
      for start, label, args in (("rvt_micro", "RVT (self-attention)", {}),
                                 ("rvt_micro_vars_d", "RVT VARS-D", {"attention": "vars_d"}))
      for style in STYLES),
)

# the ViTs with the 8x8 patch projection are shipped as they are (seed 0), outside the compared
# models: the comparisons of the ViT family use the convolutional-stem models, which every one
# of that family gets alike
SINGLE_SEED: tuple[str, ...] = ("vit_micro_patch8_64", "absvit_micro_patch8_64", "deit_micro_patch8_64_vars_d",
                                "upernet_vit_micro_patch8_64", "upernet_absvit_micro_patch8_64",
                                "multilabel_vit_micro_patch8_64")

# every entry in seed 0 (a model's default tag), then every compared entry in each other seed
ZOO: tuple[ZooEntry, ...] = tuple(seeded(entry, seed) for seed in SEEDS for entry in _SEED_ZERO
                                  if seed == 0 or entry.name not in SINGLE_SEED)


def find_entry(name: str) -> ZooEntry:
    """The zoo entry named ``name`` (or whose pretrained tag it is)."""
    for entry in ZOO:
        if name in (entry.name, entry.tagged):
            return entry
    # deferred: the error type is a leaf, but this module stays free of imports for the registry
    from ..errors import BioattnError

    raise BioattnError(f"no zoo entry named '{name}' (the zoo: {', '.join(e.name for e in ZOO)})")


def trained_on(data: str, model: str, model_args: dict[str, Any] | None = None, seed: int = 0) -> ZooEntry | None:
    """The zoo entry of registered ``model`` with ``model_args`` trained on ``data`` (one of the
    benchmark's data specs) with ``seed``, or None if the zoo has no such entry."""
    for entry in ZOO:
        if (entry.model == model and entry.model_args == dict(model_args or {}) and entry.data == data
                and entry.seed == seed):
            return entry
    return None


def benchmark_classifier(model: str, model_args: dict[str, Any] | None = None) -> ZooEntry | None:
    """The zoo entry (seed 0) of registered ``model`` with ``model_args`` trained on the embedded
    benchmark's classes, or None if the zoo has no such entry."""
    return trained_on(BENCHMARK, model, model_args)


def pretrained_entries(name: str) -> list[ZooEntry]:
    """The zoo entries that load as ``<name>.<tag>`` (``name`` a registered model), the
    benchmark's seed 0 first (the model's default tag)."""
    entries = [e for e in ZOO if e.timm_name == name]
    return sorted(entries, key=lambda e: (e.seed, e.data != BENCHMARK and e.data != SEGMENTATION_BENCHMARK))


def zoo_weights(model: str) -> Path | None:
    """The zoo's weight file of registered ``model`` built without constructor arguments (its
    ``embedded`` pretrained tag), or None if the zoo has no such entry."""
    entry = benchmark_classifier(model)
    return entry.folder / "model.safetensors" if entry is not None else None


def entry_of_weights(model: str, tag: str | None) -> ZooEntry | None:
    """The zoo entry whose weights ``<model>.<tag>`` names, or None."""
    return next((e for e in ZOO if e.timm_name == model and e.tag == tag), None)
