"""The cache of generated specs: one folder of ``.npy`` files per spec key, memory-mapped on
later loads and checked against the sha256 sums of a manifest (which records the generator's
fingerprint too)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ...errors import BioattnError
from ...fileio import atomic_dir
from .arrays import EmbeddedArrays, field_layout
from .fingerprint import generator_digest
from .generate import iter_chunks
from .spec import CLASS_NAMES, GENERATOR_VERSION, SPLITS, EmbeddedSpec, check_split

log = logging.getLogger("bioattn.data")

_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$BIOATTN_CACHE``, else ``~/.cache/bioattn``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("BIOATTN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bioattn"


def cache_path(spec: EmbeddedSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding the generated files of ``spec``."""
    return cache_root(cache_dir) / "embedded" / spec.key


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_name(split: str, field: str) -> str:
    return f"{split}_{field}.npy"


def _write_cache(spec: EmbeddedSpec, folder: Path, workers: int | None) -> None:
    splits = {}
    for split in SPLITS:
        n = spec.split_size(split)
        files = {
            field: np.lib.format.open_memmap(folder / _file_name(split, field), mode="w+",
                                             dtype=dtype, shape=(n, *shape))
            for field, (dtype, shape) in field_layout(spec).items()
        }
        for offset, arrays in iter_chunks(spec, split, 0, n, workers):
            for field, value in arrays.items():
                files[field][offset:offset + len(value)] = value
        entries = {}
        for field, array in files.items():
            array.flush()
            path = folder / _file_name(split, field)
            entries[field] = {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
        files.clear()
        splits[split] = {"n": n, "files": entries}
    manifest = {
        "format": _MANIFEST_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "generator_digest": generator_digest(),
        "key": spec.key,
        "spec": spec.record(),
        "class_names": list(CLASS_NAMES),
        "splits": splits,
    }
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _read_manifest(spec: EmbeddedSpec, folder: Path) -> dict:
    """The folder's manifest, or an exception saying why it cannot be trusted."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable manifest ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        raise ValueError("manifest of an unknown format")
    if manifest.get("spec") != spec.record() or manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError("manifest describes another spec")
    if manifest.get("generator_digest") != generator_digest():
        raise ValueError("written by another version of the generator")
    if not isinstance(manifest.get("splits"), dict) or set(manifest["splits"]) != set(SPLITS):
        raise ValueError("manifest lacks splits")
    return manifest


def _open_split(spec: EmbeddedSpec, folder: Path, manifest: dict, split: str) -> EmbeddedArrays:
    """Check the split's files against the manifest and memory-map them (ValueError if bad)."""
    entry = manifest["splits"][split]
    files = entry.get("files") if isinstance(entry, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"manifest lacks the {split} files")
    n = spec.split_size(split)
    arrays = {}
    for field, (dtype, shape) in field_layout(spec).items():
        info = files.get(field)
        if not isinstance(info, dict):
            raise ValueError(f"manifest lacks {split} {field}")
        path = folder / _file_name(split, field)
        if not path.is_file():
            raise ValueError(f"missing file {path.name}")
        if path.stat().st_size != info.get("bytes"):
            raise ValueError(f"{path.name} has the wrong size")
        if _sha256(path) != info.get("sha256"):
            raise ValueError(f"checksum mismatch in {path.name}")
        try:
            array = np.load(path, mmap_mode="c")  # copy-on-write: writable, cache untouched
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path.name} is unreadable ({exc.__class__.__name__})") from None
        if array.shape != (n, *shape) or array.dtype != dtype:
            raise ValueError(f"{path.name} holds {array.dtype}{array.shape}, expected "
                             f"{dtype}{(n, *shape)}")
        arrays[field] = array
    return EmbeddedArrays(**arrays)


def ensure_cached(spec: EmbeddedSpec, cache_dir: str | os.PathLike | None = None,
                  workers: int | None = None, force: bool = False) -> Path:
    """Generate ``spec`` into the cache unless a valid copy is there; return its folder.

    A folder that fails its checks (unreadable manifest, missing file, wrong checksum) is
    rebuilt, with a one-line warning. Files are written to a temporary folder then renamed.
    """
    folder = cache_path(spec, cache_dir)
    if not force and folder.exists():
        try:
            manifest = _read_manifest(spec, folder)
            for split in SPLITS:
                _open_split(spec, folder, manifest, split)
            return folder
        except ValueError as exc:
            log.warning("embedded data cache %s is damaged (%s); generating it again", folder, exc)
    _build(spec, folder, workers)
    return folder


def _build(spec: EmbeddedSpec, folder: Path, workers: int | None) -> None:
    try:
        atomic_dir(folder, lambda tmp: _write_cache(spec, tmp, workers))
    except OSError as exc:
        raise BioattnError(f"cannot write the embedded data cache at {folder}: {exc}") from None


def load_embedded(spec: EmbeddedSpec, split: str, cache_dir: str | os.PathLike | None = None,
                  workers: int | None = None) -> EmbeddedArrays:
    """One split of ``spec``, memory-mapped from the cache (generated there on first use)."""
    check_split(split)
    folder = cache_path(spec, cache_dir)
    if folder.exists():
        try:
            return _open_split(spec, folder, _read_manifest(spec, folder), split)
        except ValueError as exc:
            log.warning("embedded data cache %s is damaged (%s); generating it again", folder, exc)
    _build(spec, folder, workers)
    try:
        return _open_split(spec, folder, _read_manifest(spec, folder), split)
    except ValueError as exc:  # pragma: no cover  (a file changed under our feet)
        raise BioattnError(f"embedded data cache {folder} is unreadable right after writing it: "
                           f"{exc}") from None
