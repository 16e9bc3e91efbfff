"""Images grouped by domain: PACS, any folder of domain folders, and the embedded styles.

A *domain-folder root* holds one folder per domain, each with the same class folders:
``ROOT/<domain>/<class>/*``. PACS (Li et al., ICCV 2017) is such a root with the domains
``photo``, ``art_painting``, ``cartoon`` and ``sketch`` and 7 classes; a root that holds any of
these four names is read as PACS and must hold all four (other folders next to them are left
out and listed in :attr:`DomainFolders.ignored`). Any other root is read as it is: every
sub-folder (not starting with ``.``) is a domain. The embedded generator's styles
(``embedded:domain=NAME``, :data:`bioattn.data.embedded.EMBEDDED_DOMAINS`) are domains too.

A *domain spec* names the data of one leave-one-domain-out split, for the trainer and
:func:`bioattn.data.build_dataset`::

    domains:train=art_painting+cartoon+sketch,test=photo,holdout=0.2,seed=0,root=/data/PACS

``root`` comes last and takes the rest of the text (so a path may hold commas); it is a
domain-folder root or an embedded spec (``embedded``, ``embedded:size=64,train=2000``). Splits:

- folders: ``train`` is every image of the training domains except a held-out validation part
  (``holdout``, default 20%, of each class of each training domain, drawn at random from
  ``(seed, domain)``: a domain's validation images are the same whichever domain is tested);
  ``val`` is that held-out part; ``test`` is every image of the test domain;
- embedded: ``train`` and ``val`` are the training domains' own ``train`` and ``val`` splits
  (generated apart, so disjoint), ``test`` the test domain's ``test`` split; ``holdout`` is not
  used.

This module imports nothing heavier than the folder reader; transforms come from the caller
(:func:`bioattn.data.build_dataset`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..errors import BioattnError, listing
from .embedded import EMBEDDED_DOMAINS, is_embedded
from .folders import ImageFolderDataset, class_folders

PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
DEFAULT_HOLDOUT = 0.2
SPEC_PREFIX = "domains:"


# ------------------------------------------------------------------------------------------
# domain-folder roots (PACS and others)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DomainFolders:
    """A checked domain-folder root: its domains (PACS order for PACS, else sorted), the class
    folders every domain shares (sorted), and the sub-folders left out (``ignored``)."""

    root: Path
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    is_pacs: bool
    ignored: tuple[str, ...] = ()

    def folder(self, domain: str) -> Path:
        return self.root / domain

    def check_domain(self, name: str) -> str:
        """``name`` if it is one of the domains, else a one-line error listing them."""
        if name not in self.domains:
            raise BioattnError(f"unknown domain '{name}' in {self.root} (its domains: "
                               f"{', '.join(self.domains)})")
        return name


def read_domain_folders(root: str | Path) -> DomainFolders:
    """Check a domain-folder root (see the module docstring) and return its domains and classes.

    Refused, with one line each: a root that is not a folder or holds no domain folders; a PACS
    root without one of the four PACS domains; fewer than two domains; a domain without class
    folders or with an empty class folder; a class folder missing from one domain (every domain
    must have the same classes)."""
    root = Path(root)
    if not root.is_dir():
        what = "not found" if not root.exists() else "not a folder"
        raise BioattnError(f"domain-folder root {root} {what} (expected {root}/<domain>/<class>/*, "
                           f"e.g. PACS: {', '.join(PACS_DOMAINS)})")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise BioattnError(f"{root} holds no domain folders (expected {root}/<domain>/<class>/*, "
                           f"e.g. PACS: {', '.join(PACS_DOMAINS)})")
    is_pacs = any(name in PACS_DOMAINS for name in found)
    ignored: tuple[str, ...] = ()
    if is_pacs:
        missing = [d for d in PACS_DOMAINS if d not in found]
        if missing:
            raise BioattnError(
                f"PACS root {root} lacks the domain folder(s) {', '.join(missing)} (PACS has "
                f"{', '.join(PACS_DOMAINS)}; found {', '.join(found)})")
        domains = PACS_DOMAINS
        ignored = tuple(name for name in found if name not in PACS_DOMAINS)
    else:
        domains = tuple(found)
        if len(domains) < 2:
            raise BioattnError(f"{root} holds one domain folder ({domains[0]}); leaving one domain "
                               "out needs at least two")
    per_domain = {d: class_folders(root / d) for d in domains}
    everything = sorted(set().union(*per_domain.values()))
    for domain, classes in per_domain.items():
        missing = [c for c in everything if c not in classes]
        if missing:
            raise BioattnError(
                f"class folder(s) {listing(missing)} missing from domain '{domain}' ({root / domain}): "
                f"every domain must have the same classes ({listing(everything)})")
    return DomainFolders(root, tuple(domains), tuple(everything), is_pacs, ignored)


def holdout_split(targets: Sequence[int], fraction: float, seed: int, domain: str) -> tuple[list[int], list[int]]:
    """Indices ``(train, held_out)`` of one domain's images: ``round(fraction * n)`` images of
    each class (``n`` its images; at most ``n - 1``, so training keeps every class) are held
    out, drawn from a generator seeded by ``(seed, domain)``. Both lists are sorted."""
    if not 0 < fraction < 1:
        raise BioattnError(f"the held-out fraction must be in (0, 1); got {fraction}")
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode("utf-8"))])
    targets = np.asarray(targets)
    train: list[int] = []
    held: list[int] = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        n_held = min(int(round(fraction * len(members))), len(members) - 1)
        order = rng.permutation(members)
        held += order[:n_held].tolist()
        train += order[n_held:].tolist()
    return sorted(train), sorted(held)


# ------------------------------------------------------------------------------------------
# the embedded styles
# ------------------------------------------------------------------------------------------
def embedded_domain_spec(base: str, domain: str) -> str:
    """The embedded spec of one domain: ``base`` (``embedded`` or ``embedded:<options>``) with
    ``domain=NAME`` added."""
    head, _, options = base.partition(":")
    items = [item.strip() for item in options.split(",") if item.strip()]
    if any(item.partition("=")[0].strip() == "domain" for item in items):
        raise BioattnError(f"give the embedded options without domain= ('{base}'): every domain "
                           "is used in turn")
    return f"{head}:" + ",".join([*items, f"domain={domain}"])


# ------------------------------------------------------------------------------------------
# domain specs
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DomainSpec:
    """One leave-one-domain-out split of a domain source (see the module docstring)."""

    root: str
    train: tuple[str, ...]
    test: str | None = None
    holdout: float = DEFAULT_HOLDOUT
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(self.train))
        if not self.root:
            raise BioattnError("a domain spec needs root=FOLDER (or root=embedded)")
        if not self.train:
            raise BioattnError(f"a domain spec needs at least one training domain: {self}")
        for name in (*self.train, *([self.test] if self.test is not None else [])):
            if not isinstance(name, str) or not name or any(c in name for c in ",+="):
                raise BioattnError(f"a domain name must be non-empty text without ',', '+' or '='; "
                                   f"got {name!r}")
        repeated = sorted({d for d in self.train if self.train.count(d) > 1})
        if repeated:
            raise BioattnError(f"training domain(s) named twice in a domain spec: {', '.join(repeated)}")
        if self.test is not None and self.test in self.train:
            raise BioattnError(f"the test domain '{self.test}' is also a training domain: it must be "
                               "held out")
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, (int, float)) \
                or not 0 < self.holdout < 1:
            raise BioattnError(f"a domain spec's holdout must be a number in (0, 1); got {self.holdout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise BioattnError(f"a domain spec's seed must be an integer >= 0; got {self.seed!r}")

    def __str__(self) -> str:
        test = f",test={self.test}" if self.test is not None else ""
        return (f"{SPEC_PREFIX}train={'+'.join(self.train)}{test},holdout={float(self.holdout)!r},"
                f"seed={self.seed},root={self.root}")

    @property
    def embedded(self) -> bool:
        return is_embedded(self.root)

    @classmethod
    def parse(cls, text: str) -> DomainSpec:
        """``domains:train=A+B+C[,test=D][,holdout=F][,seed=N],root=SOURCE``."""
        if not isinstance(text, str) or not text.startswith(SPEC_PREFIX):
            raise BioattnError(f"not a domain spec: '{text}' (expected '{SPEC_PREFIX}train=A+B,"
                               "test=C,root=FOLDER')")
        rest = text[len(SPEC_PREFIX):]
        values: dict[str, str] = {}
        while rest:
            if rest.startswith("root="):
                values["root"] = rest[len("root="):]
                break
            item, _, rest = rest.partition(",")
            key, eq, value = item.partition("=")
            key = key.strip()
            if key not in ("train", "test", "holdout", "seed") or not eq:
                raise BioattnError(f"unknown option '{item}' in domain spec '{text}' (options: train=, "
                                   "test=, holdout=, seed=, then root= last)")
            values[key] = value.strip()
        if "root" not in values:
            raise BioattnError(f"domain spec '{text}' has no root= (it comes last)")
        if "train" not in values:
            raise BioattnError(f"domain spec '{text}' has no train= (training domains joined by '+')")
        try:
            holdout = float(values.get("holdout", DEFAULT_HOLDOUT))
            seed = int(values.get("seed", 0))
        except ValueError:
            raise BioattnError(f"domain spec '{text}': holdout must be a number and seed an integer") from None
        return cls(values["root"], tuple(d for d in values["train"].split("+") if d),
                   values.get("test") or None, holdout, seed)


def is_domain_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(SPEC_PREFIX)


class DomainDataset(ConcatDataset):
    """The images of several domains, one after the other, with their common ``classes``.

    ``domains[i]`` names part ``i``; :meth:`domain_of` gives an item's domain; ``samples``
    lists ``(path, label)`` for folder data (None for embedded data); :meth:`skipped` counts the
    unreadable images skipped so far."""

    def __init__(self, parts: Sequence[Dataset], domains: Sequence[str], classes: Sequence[str]) -> None:
        super().__init__(list(parts))
        self.domains = list(domains)
        self.classes = list(classes)
        self.num_classes = len(self.classes)

    def domain_of(self, index: int) -> str:
        return self.domains[int(np.searchsorted(self.cumulative_sizes, index, side="right"))]

    def domain_sizes(self) -> dict[str, int]:
        return {d: len(part) for d, part in zip(self.domains, self.datasets)}

    @property
    def samples(self) -> list[tuple[str, int]] | None:
        out: list[tuple[str, int]] = []
        for part in self.datasets:
            base, indices = (part.dataset, list(part.indices)) if isinstance(part, Subset) else (part, None)
            if not hasattr(base, "samples"):
                return None
            out += [base.samples[i] for i in (indices if indices is not None else range(len(base)))]
        return out

    def skipped(self) -> int:
        total = 0
        for part in self.datasets:
            base = part.dataset if isinstance(part, Subset) else part
            total += getattr(base, "skipped", lambda: 0)()
        return total


def _split_domains(spec: DomainSpec, split: str) -> tuple[str, ...]:
    if split in ("train", "val"):
        return spec.train
    if split == "test":
        if spec.test is None:
            raise BioattnError(f"the domain spec names no test domain (test=NAME): {spec}")
        return (spec.test,)
    raise BioattnError(f"unknown split '{split}' of a domain spec (train, val or test)")


def build_domain_dataset(spec: str | DomainSpec, split: str, *, transform: Callable | None = None,
                         embedded: Callable[[str, str], Dataset] | None = None,
                         classes: Sequence[str] | None = None,
                         skip_bad_images: bool = False) -> DomainDataset:
    """The ``split`` (``train``, ``val`` or ``test``) of a domain spec.

    Folders: images decoded by :func:`bioattn.images.open_rgb` through
    :class:`~bioattn.data.folders.ImageFolderDataset` and passed through ``transform``.
    Embedded: ``embedded(spec, split)`` builds one domain's split (it is
    :func:`bioattn.data.build_dataset` with the caller's size and normalisation).
    ``classes`` (the training split's, when given) must equal the domains' classes."""
    if not isinstance(spec, DomainSpec):
        spec = DomainSpec.parse(spec)
    names = _split_domains(spec, split)
    if spec.embedded:
        known = EMBEDDED_DOMAINS
        for name in (*spec.train, *([spec.test] if spec.test else [])):
            if name not in known:
                raise BioattnError(f"unknown domain '{name}' of the embedded data (its domains: "
                                   f"{', '.join(known)})")
        if embedded is None:
            raise BioattnError("build_domain_dataset needs embedded= to read embedded domains")
        part_split = {"train": "train", "val": "val", "test": "test"}[split]
        parts = [embedded(embedded_domain_spec(spec.root, name), part_split) for name in names]
        found = list(parts[0].classes)
    else:
        folders = read_domain_folders(spec.root)
        for name in (*spec.train, *([spec.test] if spec.test else [])):
            folders.check_domain(name)
        found = list(folders.classes)
        parts = []
        for name in names:
            images = ImageFolderDataset(folders.folder(name), transform=transform, classes=found,
                                        skip_bad_images=skip_bad_images)
            if split == "test":
                parts.append(images)
                continue
            train_idx, held_idx = holdout_split(images.targets, spec.holdout, spec.seed, name)
            parts.append(Subset(images, train_idx if split == "train" else held_idx))
    if classes is not None and list(classes) != found:
        raise BioattnError(f"the {split} domains' classes ({listing(found)}) differ from the "
                           f"training classes ({listing(list(classes))})")
    empty = [name for name, part in zip(names, parts) if len(part) == 0]
    if empty:
        raise BioattnError(f"the {split} split of domain(s) {', '.join(empty)} is empty (too few "
                           f"images for holdout={spec.holdout})")
    return DomainDataset(parts, names, found)
