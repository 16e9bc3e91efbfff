"""What an embedded data spec names (``embedded[:options]``), and what every scene holds:
the classes, the splits, the styles (domains), the tasks and the size limits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...errors import BioattnError

CLASS_NAMES: tuple[str, ...] = (
    "disk", "ring", "square", "triangle", "star", "plus", "crescent", "L-shape", "T-shape", "heart",
)
TEXTURE_NAMES: tuple[str, ...] = ("solid", "stripes", "checker", "noise", "split", "gradient")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# The styles the same scenes can be drawn in (``embedded:domain=NAME``); see :mod:`.looks`.
# Without a domain, images keep the original look.
EMBEDDED_DOMAINS: tuple[str, ...] = ("photo", "cartoon", "sketch", "painting")
# What the data serve besides classifying one object (``embedded:seg``, ``embedded:multi``).
EMBEDDED_TASKS: tuple[str, ...] = ("seg", "multi")
MULTI_MAX_OBJECTS = 3          # objects per image of the multi variant: 1 to 3, uniformly

# Bumped whenever the pictures for a given spec change; part of the cache key.
GENERATOR_VERSION = 2

MIN_SIZE, MAX_SIZE = 32, 224
MAX_OBJECT_AREA = 0.2          # fraction of the image an object may cover
MIN_DISTRACTORS, MAX_DISTRACTORS = 4, 8


def is_embedded(spec: str) -> bool:
    """Whether a data spec names the embedded data set (``embedded`` or ``embedded:<options>``)."""
    return spec == "embedded" or spec.startswith("embedded:")


@dataclass(frozen=True)
class EmbeddedSpec:
    """What to generate: image side in pixels, split sizes, seed, one object or two, the style
    (``domain``, one of :data:`EMBEDDED_DOMAINS`; None keeps the original look) and the task
    (``task``, one of :data:`EMBEDDED_TASKS` or None).

    Every domain draws the same scenes for the same seed, split and index (classes, positions,
    sizes, rotations, distractors, masks and boxes); only the pixels' style differs.

    ``task="multi"`` (spec option ``multi``) draws one to three objects per image (the number
    uniform per image), of distinct classes, none overlapping another: its own images and cache.
    ``task="seg"`` (option ``seg``) changes no image: a ``seg`` spec has the key, the cache and
    the pictures of the same spec without it, and only tells the data's user it is for
    segmentation. ``multi`` excludes ``pair`` (it has its own layout) and ``seg``.
    """

    size: int = 64
    n_train: int = 20000
    n_val: int = 2000
    n_test: int = 2000
    seed: int = 0
    pair: bool = False
    domain: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        for name in ("size", "n_train", "n_val", "n_test", "seed"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise BioattnError(f"embedded spec: {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise BioattnError(f"embedded spec: size must be between {MIN_SIZE} and {MAX_SIZE}, "
                               f"got {self.size}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 1:
                raise BioattnError(f"embedded spec: {name} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0 or self.seed >= 2**32:
            raise BioattnError(f"embedded spec: seed must be in [0, 2**32), got {self.seed}")
        if not isinstance(self.pair, (bool, np.bool_)):
            raise BioattnError(f"embedded spec: pair must be True or False, got {self.pair!r}")
        object.__setattr__(self, "pair", bool(self.pair))
        if self.domain is not None and (not isinstance(self.domain, str)
                                        or self.domain not in EMBEDDED_DOMAINS):
            raise BioattnError(f"unknown embedded domain {self.domain!r} "
                               f"(choose from {', '.join(EMBEDDED_DOMAINS)})")
        if self.task is not None and (not isinstance(self.task, str) or self.task not in EMBEDDED_TASKS):
            raise BioattnError(f"unknown embedded task {self.task!r} (choose from {', '.join(EMBEDDED_TASKS)})")
        if self.multi and self.pair:
            raise BioattnError("embedded spec: 'multi' and 'pair' exclude each other "
                               f"('multi' draws 1 to {MULTI_MAX_OBJECTS} objects per image)")

    # option name in spec strings -> field
    _OPTIONS: ClassVar[dict[str, str]] = {
        "size": "size", "train": "n_train", "val": "n_val", "test": "n_test", "seed": "seed",
    }
    _FLAGS: ClassVar[tuple[str, ...]] = ("pair", *EMBEDDED_TASKS)

    @classmethod
    def parse(cls, text: str) -> EmbeddedSpec:
        """Parse ``embedded[:OPTION,...]`` where OPTION is ``pair``, ``seg``, ``multi``,
        ``domain=NAME`` (NAME in :data:`EMBEDDED_DOMAINS`) or ``NAME=INT`` with NAME in size,
        train, val, test, seed (e.g. ``embedded:pair,size=96,train=5000``,
        ``embedded:domain=sketch,train=1200``, ``embedded:seg,pair`` or ``embedded:multi``)."""
        if not isinstance(text, str):
            raise BioattnError(f"an embedded data spec is a string, got {text!r}")
        text = text.strip()
        head, sep, rest = text.partition(":")
        if head != "embedded":
            raise BioattnError(f"not an embedded data spec: '{text}' (expected 'embedded[:options]')")
        if sep and not rest:
            raise BioattnError(f"empty option list in '{text}'")
        kwargs: dict = {}
        for item in rest.split(",") if rest else []:
            item = item.strip()
            name, eq, value = item.partition("=")
            name = name.strip()
            if name in cls._FLAGS:
                if eq:
                    raise BioattnError(f"'{name}' takes no value in '{text}' (write just '{name}')")
                if name in EMBEDDED_TASKS:
                    if kwargs.get("task", name) != name:
                        raise BioattnError(f"two tasks in '{text}': '{kwargs['task']}' and '{name}' (choose one)")
                    field, parsed = "task", name
                else:
                    field, parsed = "pair", True
            elif name == "domain":
                if not eq or not value.strip():
                    raise BioattnError(f"option 'domain' needs a value in '{text}' "
                                       f"(one of {', '.join(EMBEDDED_DOMAINS)})")
                field, parsed = "domain", value.strip()
            elif name in cls._OPTIONS:
                if not eq or not value.strip():
                    raise BioattnError(f"option '{name}' needs a value in '{text}' (e.g. {name}=64)")
                try:
                    parsed = int(value.strip())
                except ValueError:
                    raise BioattnError(f"option '{name}' must be an integer, got '{value.strip()}'") from None
                field = cls._OPTIONS[name]
            else:
                known = ", ".join(["pair", "domain", *cls._OPTIONS, *EMBEDDED_TASKS])
                raise BioattnError(f"unknown embedded option '{name or item}' (known: {known})")
            if field in kwargs:
                raise BioattnError(f"option '{name}' given twice in '{text}'")
            kwargs[field] = parsed
        return cls(**kwargs)

    def __str__(self) -> str:
        opts = [] if self.task is None else [self.task]
        if self.pair:
            opts.append("pair")
        if self.domain is not None:
            opts.append(f"domain={self.domain}")
        default = EmbeddedSpec()
        for name, field in self._OPTIONS.items():
            if getattr(self, field) != getattr(default, field):
                opts.append(f"{name}={getattr(self, field)}")
        return "embedded" + (":" + ",".join(opts) if opts else "")

    @property
    def key(self) -> str:
        """Cache folder name: readable prefix plus a hash of every parameter and the generator
        version, so that any change gets its own folder."""
        payload = json.dumps({**self.record(), "version": GENERATOR_VERSION}, sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
        kind = "multi" if self.multi else "pair" if self.pair else "single"
        style = f"-{self.domain}" if self.domain is not None else ""
        return f"embedded-v{GENERATOR_VERSION}-{kind}{style}-{self.size}px-{digest}"

    def record(self) -> dict:
        """The parameters that decide the pictures, as a dict, for the cache key and manifest.
        ``domain`` is left out when it is None, so that specs without a domain keep the key (and
        caches) they had before domains existed; ``task`` is left out unless it is ``multi``
        (``seg`` changes no picture, and specs without a task keep their key)."""
        fields = dataclasses.asdict(self)
        if self.domain is None:
            del fields["domain"]
        if not self.multi:
            del fields["task"]
        return fields

    def split_size(self, split: str) -> int:
        check_split(split)
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    @property
    def multi(self) -> bool:
        """Whether images hold one to three objects (``task == "multi"``)."""
        return self.task == "multi"

    @property
    def n_objects(self) -> int:
        """Objects per image (the most, for ``multi``)."""
        return MULTI_MAX_OBJECTS if self.multi else 2 if self.pair else 1


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise BioattnError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
