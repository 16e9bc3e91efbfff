"""Checkpoints: weights as safetensors plus a small JSON, written atomically.

A bioattn checkpoint is a directory holding ``model.safetensors`` (the state dict) and
``config.json``, in the layout of timm's model configuration (``architecture``, ``num_classes``,
``model_args``, and a ``pretrained_cfg`` with the input size, normalisation and class names), so
that ``timm.create_model("local-dir:FOLDER", pretrained=True)`` builds and loads it; what else
bioattn records (data, task, epoch, metrics) sits beside them under ``bioattn``. Checkpoints
written before hold the same facts in ``model.json``, which is still read.
The trainer adds ``trainer_state.pt`` (optimiser, scheduler, EMA, scaler, epoch, RNG states).

``--checkpoint`` everywhere accepts such a directory, a bare ``.safetensors`` file, or a ``.pth``
file as released by the authors (a dict whose ``model`` entry is the state dict, or a bare state
dict), always read with ``torch.load(weights_only=True)``, or a model of the zoo as
``zoo:<entry>`` (its folder under ``bioattn/zoo/``, shipped with the package). Every loader here adapts the state dict
to the model with the model family's ``checkpoint_filter_fn`` (the one timm's loader uses for
``pretrained=True``), so a checkpoint of another image size has its grids resized.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .errors import BioattnError
from .fileio import atomic_dir, check_output_dir
from .models import checkpoint_filter_fn, create_model, data_config
from .models.common import check_state_dict, classifier_mismatch, unwrap_state_dict
from .zoo import find_entry

WEIGHTS = "model.safetensors"
META = "config.json"
LEGACY_META = "model.json"
# the facts timm's configuration holds; every other one of a checkpoint's metadata is bioattn's own
_TIMM_FACTS = ("model", "model_args", "num_classes", "classes", "img_size", "mean", "std")
TRAINER_STATE = "trainer_state.pt"
ZOO_PREFIX = "zoo:"


def checkpoint_path(path: str | Path) -> Path:
    """``path`` as a path: ``zoo:<entry>`` names the folder of that zoo entry, which must be built."""
    if isinstance(path, str) and path.startswith(ZOO_PREFIX):
        entry = find_entry(path[len(ZOO_PREFIX):])
        if not entry.is_built():
            raise BioattnError(f"zoo entry {entry.name} is not built (bioattn zoo --only {entry.name})")
        return entry.folder
    return Path(path)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """``path`` itself, or its ``.old`` twin if a swap was interrupted."""
    path = checkpoint_path(path)
    if (path / WEIGHTS).exists():
        return path
    old = path.with_name(path.name + ".old")
    if (old / WEIGHTS).exists():
        return old
    return path


# ------------------------------------------------------------------------------------------
# reading state dicts
# ------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored at ``path`` (checkpoint directory, .safetensors, .pth or ``zoo:<entry>``)."""
    path = checkpoint_path(path)
    if not path.exists() and path.with_name(path.name + ".old").is_dir():
        path = path.with_name(path.name + ".old")
    if not path.exists():
        raise BioattnError(f"checkpoint not found: {path}")
    if path.is_dir():
        path = resolve_checkpoint_dir(path) / WEIGHTS
        if not path.exists():
            raise BioattnError(f"no {WEIGHTS} in checkpoint directory {path.parent}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise BioattnError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return unwrap_state_dict(state, what=str(path))


def load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str, *,
               notes: list[str] | None = None, fresh_classifier: bool = False) -> list[str]:
    """Load ``state`` into ``model`` strictly, adapted by the model family's
    ``checkpoint_filter_fn`` (``notes`` receives what it resized), with a one-line error naming
    ``what`` on any mismatch. With ``fresh_classifier`` (fine-tuning), a classifier for another
    number of classes is left out and the model's own fresh one kept. Returns the keys left out."""
    left_out: list[str] = []
    if fresh_classifier:
        other = classifier_mismatch(model, state)
        left_out = other[1] if other is not None else []
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k not in left_out} | {k: own[k] for k in left_out if k in own}
    state = checkpoint_filter_fn(state, model, notes, what=what)
    check_state_dict(model, state, what=what)
    model.load_state_dict(state, strict=True)
    return left_out


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights at ``path`` into ``model`` strictly (:func:`load_state`)."""
    load_state(model, read_state_dict(path), f"checkpoint {path}")
    return model


# ------------------------------------------------------------------------------------------
# bioattn checkpoints
# ------------------------------------------------------------------------------------------
def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata of a checkpoint directory (or of the directory holding a file): model name,
    arguments, classes, input size, normalisation and what bioattn recorded, as one flat dict
    (:func:`meta_of_config`); None where the directory holds none."""
    path = resolve_checkpoint_dir(path)
    folder = path if path.is_dir() else path.parent
    for name in (META, LEGACY_META):
        meta_path = folder / name
        if not meta_path.exists():
            continue
        try:
            data = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BioattnError(f"cannot read {meta_path}: {exc}") from None
        if name == LEGACY_META:
            return data
        if isinstance(data, dict) and "architecture" in data:  # not a run folder's settings
            return meta_of_config(data)
    return None


def timm_config(meta: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
    """A checkpoint's metadata as timm's model configuration (``config.json``): architecture,
    classes, constructor arguments and the ``pretrained_cfg`` (input size, normalisation, crop,
    interpolation and class names; the ``tag`` of the weights if given), everything else under
    ``bioattn``. Normalisation left unset stays out (timm's default applies)."""
    try:
        data = data_config(meta["model"], meta.get("img_size"))
    except BioattnError:  # not a registered model: only what the metadata says
        size = meta.get("img_size")
        data = {"input_size": (3, size, size)} if size else {}
    pretrained_cfg: dict[str, Any] = {**({"tag": tag} if tag else {})}
    if "input_size" in data:
        pretrained_cfg["input_size"] = list(data["input_size"])
    for key in ("mean", "std"):
        if meta.get(key) is not None:
            pretrained_cfg[key] = list(meta[key])
    for key in ("crop_pct", "interpolation"):
        if key in data:
            pretrained_cfg[key] = data[key]
    pretrained_cfg.update(num_classes=meta.get("num_classes"), label_names=meta.get("classes"))
    return {"architecture": meta["model"], "num_classes": meta.get("num_classes"),
            "model_args": dict(meta.get("model_args") or {}), "pretrained_cfg": pretrained_cfg,
            "bioattn": {k: v for k, v in meta.items() if k not in _TIMM_FACTS}}


def meta_of_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flat metadata of a ``config.json`` (:func:`timm_config`'s inverse)."""
    pretrained_cfg = config.get("pretrained_cfg") or {}
    size = pretrained_cfg.get("input_size")
    return {"model": config["architecture"], "model_args": dict(config.get("model_args") or {}),
            "num_classes": config.get("num_classes", pretrained_cfg.get("num_classes")),
            "classes": pretrained_cfg.get("label_names"), "img_size": size[-1] if size else None,
            "mean": pretrained_cfg.get("mean"), "std": pretrained_cfg.get("std"), **(config.get("bioattn") or {})}


def write_checkpoint_files(folder: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write weights and metadata (``config.json``, :func:`timm_config`) into an existing
    (temporary) directory."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    write_meta(folder, meta)


def write_meta(folder: Path, meta: dict[str, Any], tag: str | None = None) -> None:
    """Write a checkpoint's metadata as ``config.json`` into ``folder``."""
    (folder / META).write_text(json.dumps(timm_config(meta, tag), indent=2, default=str) + "\n")


def check_checkpoint_target(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse (one-line :class:`BioattnError`, nothing touched) a checkpoint directory that
    cannot or must not be written: a symbolic link, a file or device, an unwritable place; an
    existing checkpoint unless ``overwrite``; an existing directory that is not empty and holds
    no checkpoint (never replaced)."""
    path = check_output_dir(path, "checkpoint directory")
    existing = resolve_checkpoint_dir(path)
    if (existing / WEIGHTS).exists() or (existing / META).exists() or (existing / LEGACY_META).exists():
        if not overwrite:
            raise BioattnError(f"checkpoint directory {path} already exists: replace it with --overwrite "
                               "(overwrite=True in Python) or give a new name")
    elif path.is_dir() and any(path.iterdir()):
        raise BioattnError(f"{path} is a directory that holds no bioattn checkpoint: "
                           "give a new or empty directory")
    return path


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any], *,
                    overwrite: bool = False) -> Path:
    """Save ``model`` and ``meta`` as a bioattn checkpoint directory, atomically. An existing
    checkpoint at ``path`` is replaced only with ``overwrite=True``
    (see :func:`check_checkpoint_target`)."""
    path = check_checkpoint_target(path, overwrite)
    atomic_dir(path, lambda tmp: write_checkpoint_files(tmp, model, meta), what="checkpoint directory")
    return path


def model_meta(model_name: str, model_args: dict[str, Any], num_classes: int, classes=None,
               img_size: int | None = None, mean=None, std=None, **more: Any) -> dict[str, Any]:
    meta = {
        "model": model_name,
        "model_args": model_args,
        "num_classes": num_classes,
        "classes": list(classes) if classes is not None else None,
        "img_size": img_size,
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "bioattn_version": __version__,
    }
    meta.update(more)
    return meta


def load_model(
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    num_classes: int | None = None,
    **model_args: Any,
) -> nn.Module:
    """Build the model a checkpoint was trained as and load its weights.

    With a bioattn checkpoint directory, the model name and arguments come from its
    ``config.json``; a bare ``.safetensors``/``.pth`` needs ``model_name`` (and the model's
    arguments; ``num_classes``, when not given, is read from its classifier weight). Without a
    checkpoint, returns a fresh model. The model comes back in eval mode (call ``.train()`` to
    train it further).
    """

    meta = read_meta(checkpoint) if checkpoint is not None else None
    args: dict[str, Any] = {}
    if meta is not None:
        if model_name is not None and model_name != meta["model"]:
            raise BioattnError(
                f"checkpoint {checkpoint} holds a {meta['model']} model, not {model_name}"
            )
        model_name = meta["model"]
        args.update(meta.get("model_args") or {})
        if num_classes is not None and meta.get("num_classes") not in (None, num_classes):
            raise BioattnError(
                f"checkpoint {checkpoint} has {meta['num_classes']} classes, but {num_classes} are needed"
            )
    if model_name is None:
        raise BioattnError(f"checkpoint {checkpoint} has no {META}: name the model with --model")
    args.update(model_args)
    if num_classes is not None:
        args["num_classes"] = num_classes
    if checkpoint is None:
        return create_model(model_name, **args).eval()
    if meta is None:  # a bare state dict: its classifier may give the number of classes
        state = read_state_dict(checkpoint)
        model, _ = model_for_state(model_name, state, args, what=f"checkpoint {checkpoint}")
        return model.eval()
    model = create_model(model_name, **args)
    load_weights(model, checkpoint)
    return model.eval()


def model_for_state(model_name: str, state: dict[str, torch.Tensor], model_args: dict[str, Any],
                    what: str = "checkpoint", log=None) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``model_name`` and load the bare state dict ``state`` into it (:func:`load_state`);
    returns the model and its arguments. Without ``num_classes`` in ``model_args``, the number of
    classes is read from the state's classifier weight (timm's ``reset_classifier`` gives the
    model that many), and ``log`` (default: print to standard error) says so once the state has
    loaded."""
    model = create_model(model_name, **model_args)
    note = None
    if "num_classes" not in model_args:
        inferred = classifier_mismatch(model, state)
        if inferred is not None:
            n, keys = inferred
            model_args = {**model_args, "num_classes": n}
            model.reset_classifier(n)  # timm's way to another number of classes, without building again
            weight = next((k for k in keys if k.endswith(".weight")), keys[0])
            note = f"note: num_classes={n}, read from the checkpoint's {weight}"
    load_state(model, state, what)
    if note is not None:
        if log is None:
            print(note, file=sys.stderr)
        else:
            log(note)
    return model, model_args


def convert_checkpoint(src: str | Path, dst: str | Path, model_name: str, *, mean=None, std=None,
                       overwrite: bool = False, log=None, **model_args: Any) -> Path:
    """Read a released checkpoint (``.pth`` with a ``model`` entry, or a bare state dict),
    check it against ``model_name`` and write a bioattn checkpoint directory at ``dst``.

    ``dst`` must be new (or an empty directory); an existing checkpoint there is replaced only
    with ``overwrite=True``, and a file, link or other directory is never replaced (see
    :func:`check_checkpoint_target`). Without ``num_classes`` in ``model_args``, the number of
    classes is read from the checkpoint's classifier weight, and ``log`` (default: print to
    standard error) says so. The input normalisation recorded is ``mean``/``std`` if given,
    else the model's ``pretrained_cfg`` one (timm's own ``vit_*`` configs say 0.5, while
    checkpoints trained with the DeiT recipe expect ImageNet's mean/std: pass those then)."""

    check_checkpoint_target(dst, overwrite)
    state = read_state_dict(src)
    model, model_args = model_for_state(model_name, state, model_args, what=f"checkpoint {src}", log=log)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    input_size = cfg.get("input_size")
    img_size = input_size[-1] if input_size else None
    patch_embed = getattr(model, "patch_embed", None)
    if getattr(patch_embed, "img_size", None) is not None:
        img_size = int(patch_embed.img_size[-1])
    meta = model_meta(
        model_name,
        model_args,
        num_classes=getattr(model, "num_classes", None),
        img_size=img_size,
        mean=mean if mean is not None else cfg.get("mean"),
        std=std if std is not None else cfg.get("std"),
        source=str(src),
    )
    return save_checkpoint(dst, model, meta, overwrite=overwrite)
