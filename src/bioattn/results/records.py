"""Per-image outcomes, stored compactly beside the results page (numpy; no torch).

A :class:`Record` holds what one zoo entry, trained with one seed, did on every image it was
measured on: for each *condition* (``clean``, ``corruption/fog/3``, ``pgd/0.00392``,
``attention/auc``...) one value per image, and for each *image group* (the first part of a
condition's name: ``clean``, ``corruption``, ``pgd``...) the indices of the test images in that
group, so two records are paired image by image. Correctness is stored as bits, scores as
float32, counts as unsigned integers; every array is compressed (zlib) and written in base64,
one JSON file per entry and seed: ``<records>/<entry>.seed<seed>.json``.

The folder holds a manifest, ``manifest.json``: the SHA-256 digest of every record file. The
whole folder is written at once (:func:`bioattn.fileio.atomic_dir`), so the records and their
manifest always match, and :func:`read_records` refuses a record whose digest differs from the
manifest's (an altered or damaged record), a record the manifest does not list and a listed
record that is missing, each with a one-line error naming the record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BioattnError
from ..fileio import atomic_dir

FORMAT = 1
MANIFEST = "manifest.json"
SUFFIX = ".json"
_KINDS = {"bits": None, "float32": "<f4", "uint32": "<u4", "int32": "<i4"}


@dataclass
class Record:
    """What zoo entry ``entry`` (trained with ``seed``) did on each image: ``conditions`` maps a
    condition to its per-image array (the last axis runs over the images of its group, earlier
    axes over e.g. glimpses), ``images`` a group to its test-image indices, and ``meta`` holds
    the settings and the figures that are not per image (e.g. the trained number of glimpses)."""

    entry: str
    seed: int
    conditions: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The record's file name."""
        return f"{self.entry}.seed{self.seed}{SUFFIX}"

    def add(self, condition: str, values: Any, images: Iterable[int] | None = None) -> None:
        """Store ``values`` under ``condition`` (and, if given, its group's image indices)."""
        array = np.asarray(values)
        group = group_of(condition)
        if images is not None:
            self.images[group] = np.asarray(list(images), dtype=np.int64)
        if group not in self.images:
            raise BioattnError(f"record {self.name}: condition {condition} has no image indices")
        if array.shape[-1:] != (len(self.images[group]),):
            raise BioattnError(f"record {self.name}: condition {condition} has {array.shape[-1:]} values for "
                               f"{len(self.images[group])} images")
        self.conditions[condition] = array

    def has(self, condition: str) -> bool:
        return condition in self.conditions

    def get(self, condition: str) -> np.ndarray:
        if condition not in self.conditions:
            raise BioattnError(f"record {self.name} holds no condition {condition}")
        return self.conditions[condition]

    def images_of(self, condition: str) -> np.ndarray:
        return self.images[group_of(condition)]


def group_of(condition: str) -> str:
    """The image group of a condition: the part of its name before the first ``/``."""
    return condition.split("/", 1)[0]


def _encode(array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array)
    if array.dtype == bool:
        kind, raw = "bits", np.packbits(array.reshape(-1)).tobytes()
    elif np.issubdtype(array.dtype, np.floating):
        kind, raw = "float32", array.astype("<f4").tobytes()
    elif np.issubdtype(array.dtype, np.unsignedinteger) or (array.size and array.min() >= 0):
        kind, raw = "uint32", array.astype("<u4").tobytes()
    else:
        kind, raw = "int32", array.astype("<i4").tobytes()
    return {"kind": kind, "shape": list(array.shape),
            "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def _decode(item: dict[str, Any], where: str) -> np.ndarray:
    try:
        kind, shape = item["kind"], tuple(int(s) for s in item["shape"])
        raw = zlib.decompress(base64.b64decode(item["data"]))
        size = int(np.prod(shape)) if shape else 1
        if kind == "bits":
            return np.unpackbits(np.frombuffer(raw, np.uint8), count=size).astype(bool).reshape(shape)
        return np.frombuffer(raw, _KINDS[kind]).reshape(shape).copy()
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise BioattnError(f"record {where} cannot be read: {exc}") from None


def record_text(record: Record) -> str:
    """The record as its file's text (sorted keys, so equal records give equal files)."""
    data = {
        "format": FORMAT,
        "entry": record.entry,
        "seed": int(record.seed),
        "meta": record.meta,
        "images": {k: _encode(v) for k, v in sorted(record.images.items())},
        "conditions": {k: _encode(v) for k, v in sorted(record.conditions.items())},
    }
    return json.dumps(data, sort_keys=True, indent=1) + "\n"


def parse_record(text: str, name: str) -> Record:
    """A record from its file's text; ``name`` says which file, in errors."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BioattnError(f"record {name} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BioattnError(f"record {name} is not a bioattn results record (format {FORMAT})")
    return Record(
        entry=str(data["entry"]), seed=int(data["seed"]), meta=dict(data.get("meta") or {}),
        images={k: _decode(v, name) for k, v in data["images"].items()},
        conditions={k: _decode(v, name) for k, v in data["conditions"].items()},
    )


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def write_records(folder: str | Path, records: Iterable[Record], keep: bool = True) -> Path:
    """Write ``records`` and their manifest into ``folder`` as one atomic replacement of the
    folder. With ``keep``, the records already there for other entries and seeds are kept (after
    their digests are checked), so measuring a few entries again leaves the others. A folder
    with files but no manifest is refused: this function did not write it."""
    folder = Path(folder)
    if folder.is_dir() and not (folder / MANIFEST).is_file() and any(folder.iterdir()):
        raise BioattnError(f"records folder {folder} holds files but no {MANIFEST}: bioattn results did not write "
                           "it and would replace it; move it, or give another --out")
    texts: dict[str, str] = {}
    if keep and (folder / MANIFEST).is_file():
        for name, expected in read_manifest(folder).items():
            texts[name] = _checked_text(folder, name, expected)
    for record in records:
        texts[record.name] = record_text(record)

    def fill(tmp: Path) -> None:
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")
        manifest = {"format": FORMAT, "records": {name: digest(text) for name, text in sorted(texts.items())}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    return atomic_dir(folder, fill, what="results records")


def read_manifest(folder: str | Path) -> dict[str, str]:
    """The record names of ``folder``'s manifest with their digests."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data["records"].items()}
    except FileNotFoundError:
        raise BioattnError(f"no results records in {folder}: {MANIFEST} is missing (run bioattn results)") from None
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise BioattnError(f"the records manifest {path} cannot be read: {exc}") from None


def _checked_text(folder: Path, name: str, expected: str) -> str:
    path = folder / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BioattnError(f"record {path} is missing (the manifest lists it)") from None
    except OSError as exc:
        raise BioattnError(f"record {path} cannot be read: {exc.strerror or exc}") from None
    if digest(raw) != expected:
        raise BioattnError(f"record {path} was altered: its SHA-256 differs from the manifest's")
    return raw.decode("utf-8")


def read_records(folder: str | Path) -> dict[tuple[str, int], Record]:
    """Every record of ``folder`` by (entry, seed), each checked against the manifest's digest;
    an altered, missing or unlisted record is refused with a one-line error naming it."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    unlisted = sorted(p.name for p in folder.glob(f"*{SUFFIX}") if p.name != MANIFEST and p.name not in manifest)
    if unlisted:
        raise BioattnError(f"record {folder / unlisted[0]} is not in the manifest (it was added by hand)")
    records = {}
    for name, expected in manifest.items():
        record = parse_record(_checked_text(folder, name, expected), str(folder / name))
        if record.name != name:
            raise BioattnError(f"record {folder / name} holds entry {record.entry}, seed {record.seed}")
        records[(record.entry, record.seed)] = record
    return records
