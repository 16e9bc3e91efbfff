"""Domain generalisation: the leave-one-domain-out protocol with training-domain validation.

``leave_one_domain_out(models, data, out, ...)`` (the ``bioattn domains`` command) runs, for
every model and every held-out (test) domain of ``data``:

1. train on the other domains (``bioattn.train``), validating every epoch on a held-out part of
   those training domains (20% of each class of each training domain for folders; the
   embedded data's own ``val`` split) and keeping the epoch with the best validation top-1 as
   ``best/`` (DomainBed's "training-domain validation" model selection);
2. test that checkpoint on the whole held-out domain (top-1, top-5).

The held-out domain is never read while training or selecting: each run's data is a domain
spec (:mod:`bioattn.data.domains`) whose ``train=`` lists the training domains, recorded in the
run's settings (``config.json``) and its ``best/`` checkpoint's metadata. Every model gets the
same data, split and seed.

Runs are ordinary run directories, ``<out>/<model>/<held-out domain>/``. Calling again with the
same settings reuses finished runs (only testing them again) and resumes unfinished ones; a run
directory holding other settings is refused unless ``overwrite``. ``<out>/results.json`` and
``<out>/results.md`` (a table: models x held-out domains, their mean, and the number of test
images per domain) are rewritten atomically after every run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from . import __version__
from .checkpoint import load_model, read_meta
from .config import DomainsSettings, TrainConfig, parse_model_entry
from .data import build_dataset, is_embedded
from .data.domains import (
    DomainSpec,
    embedded_domain_spec,
    read_domain_folders,
)
from .data.embedded import EMBEDDED_DOMAINS, EmbeddedSpec
from .data.subsets import spread_subset
from .distributed import resolve_device
from .errors import BioattnError
from .evaluate.clean import evaluate_clean
from .fileio import atomic_write_text, output_folder, refuse_output_inside
from .models import create_model
from .tasks.spec import CLASSIFICATION, task_of_data, task_spec
from .train import train_or_reuse

PROTOCOL = ("leave-one-domain-out: train on the other domains, select the epoch with the best "
            "top-1 on a validation split held out from the training domains, test on the "
            "held-out domain")
# the first words of results.md, by which a later call knows the table is its own
TABLE_START = "Leave-one-domain-out top-1 (%)"
# settings a reused or resumed run may differ in (they do not change what is trained)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the comparison: its label as given, timm name, constructor arguments and
    the folder of its runs."""

    label: str
    name: str
    args: dict[str, Any]
    folder: str


def model_entries(models: str | Sequence[str | tuple[str, dict]]) -> list[ModelEntry]:
    """``"a,b[k=v]"``, a list of such entries, or ``(name, args)`` pairs -> :class:`ModelEntry` s.
    Two entries with the same folder (the label with every character other than letters,
    digits, ``._=-`` made ``-``) are refused."""
    if isinstance(models, str):
        # deferred: the list syntax lives with the settings
        from .config import split_model_list

        models = split_model_list(models)
    entries = []
    for item in models:
        if isinstance(item, tuple):
            name, args = item[0], dict(item[1])
            label = name + ("[" + ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                           for k, v in args.items()) + "]" if args else "")
        else:
            label = item.strip()
            name, args = parse_model_entry(label)
        folder = re.sub(r"[^A-Za-z0-9._=\-]+", "-", label).strip("-")
        entries.append(ModelEntry(label, name, args, folder))
    if not entries:
        raise BioattnError("--models names no model")
    folders = [e.folder for e in entries]
    twice = sorted({f for f in folders if folders.count(f) > 1})
    if twice:
        raise BioattnError(f"--models names {', '.join(twice)} twice")
    return entries


@dataclass(frozen=True)
class DomainSource:
    """What ``data`` holds: the spec root, its domains, classes (None for embedded data until
    read) and the folders a PACS root left out."""

    root: str
    domains: tuple[str, ...]
    classes: tuple[str, ...] | None
    description: str
    ignored: tuple[str, ...] = ()


def domain_source(data: str) -> DomainSource:
    """Check ``data`` (a domain-folder root or ``embedded[:options]``) and list its domains."""
    if not isinstance(data, str) or not data:
        raise BioattnError("--data must be a PACS root, a folder of domain folders or 'embedded'")
    if is_embedded(data):
        labels = task_spec(task_of_data(data))
        if labels is not CLASSIFICATION:
            raise BioattnError(f"--data {data} holds {labels.name} labels; leave-one-domain-out trains "
                               f"and tests classifiers (top-1): leave out the option {labels.embedded_option}")
        domains = tuple(EMBEDDED_DOMAINS)
        EmbeddedSpec.parse(embedded_domain_spec(data, domains[0]))  # the options are checked here
        return DomainSource(data, domains, None, f"the embedded data ({data}), one domain per style")
    folders = read_domain_folders(data)
    what = "PACS" if folders.is_pacs else "domain folders"
    # the absolute path goes into every run's data spec, so a run can be tested from anywhere
    return DomainSource(str(folders.root.resolve()), folders.domains, folders.classes,
                        f"{what} at {folders.root}", folders.ignored)


def _check_models(entries: list[ModelEntry], img_size: int | None, num_classes: int | None) -> None:
    """Build every model once before any training, so that a bad name or argument stops the
    command at once rather than after the first model's runs."""
    for entry in entries:
        args = dict(entry.args)
        if img_size is not None:
            args["img_size"] = img_size
        if num_classes is not None:
            args["num_classes"] = num_classes
        try:
            create_model(entry.name, **args)
        except BioattnError as exc:
            raise BioattnError(f"--models {entry.label}: {exc}") from None


def _check_out(out: str, source: DomainSource, entries: list[ModelEntry]) -> None:
    """Refuse an output folder inside the data root (its folders would be read as a domain by
    the next run), a data root inside a run folder, and results files this command did not
    write (they would be replaced)."""
    if not is_embedded(source.root):
        refuse_output_inside(out, [("the data root", source.root)], "--out")
        for entry in entries:
            run_folder = Path(out) / entry.folder
            refuse_output_inside(source.root, [(f"the run folder of {entry.label}", run_folder)], "--data")
    for name, ours in (("results.json", _written_here_json), ("results.md", _written_here_table)):
        path = Path(out) / name
        if (path.exists() or path.is_symlink()) and not ours(path):
            raise BioattnError(f"--out {out} holds a {name} that bioattn domains did not write; it would be "
                               "replaced: give another --out, or move that file")


def _written_here_json(path: Path) -> bool:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and saved.get("protocol") == PROTOCOL and not path.is_symlink()


def _written_here_table(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, ValueError):
        return False
    return first.startswith(TABLE_START) and not path.is_symlink()


def _chosen_test_domains(source: DomainSource, test_domains: Sequence[str] | None) -> list[str]:
    if not test_domains:
        return list(source.domains)
    chosen: list[str] = []
    for name in test_domains:
        if name not in source.domains:
            raise BioattnError(f"unknown domain '{name}' in --test-domains ({source.description} has "
                               f"{', '.join(source.domains)})")
        if name not in chosen:
            chosen.append(name)
    return chosen


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def markdown_table(results: dict[str, Any]) -> str:
    """The results of :func:`leave_one_domain_out` as Markdown: top-1 per model and held-out
    domain with their mean, the number of test images per domain, then the epoch each run
    selected with its validation top-1."""
    domains = results["test_domains"]
    lines = [
        f"{TABLE_START} on {results['source']}: each column is the held-out "
        "domain; each model was trained on the other domains and tested at the epoch with the "
        f"best validation top-1 (validation: {results['validation']}).",
        "",
        "| model | " + " | ".join(domains) + " | mean |",
        "|---|" + "---:|" * (len(domains) + 1),
    ]
    for row in results["rows"]:
        cells = [f"{row['top1'][d]:.2f}" if d in row["top1"] else "-" for d in domains]
        mean = f"{row['mean_top1']:.2f}" if row.get("mean_top1") is not None else "-"
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {mean} |")
    images = results["test_images"]
    total = sum(images.values()) if len(images) == len(domains) else None
    lines.append("| test images | " + " | ".join(str(images.get(d, "-")) for d in domains)
                 + f" | {f'{total} in all' if total is not None else '-'} |")
    lines += ["", "Selected epoch (validation top-1 %) of each run:", "",
              "| model | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    for row in results["rows"]:
        cells = []
        for d in domains:
            run = row["runs"].get(d)
            cells.append(f"{run['selected_epoch']} ({run['val_top1']:.2f})" if run else "-")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def leave_one_domain_out(models: str | Sequence[str | tuple[str, dict]], data: str, out: str | Path,
                         log: Callable[[str], None] | None = print, **options: Any) -> dict[str, Any]:
    """Run the leave-one-domain-out protocol for every model and held-out domain; write
    ``<out>/results.json`` and ``<out>/results.md``; return the results.

    ``models``: ``"vit_micro_patch8_64,rvt_micro[attention=vars_d]"``, a list of such entries,
    or ``(name, args)`` pairs. ``data``: a PACS root, another folder of domain folders
    (``ROOT/<domain>/<class>/*``), or ``embedded[:options]``. ``options``: the other fields of
    :class:`bioattn.config.DomainsSettings` (``test_domains``, ``holdout``, ``init``, ``recipe``,
    ``epochs``, ``batch_size``, ``img_size``, ``lr``, ``limit_train``, ``limit_val``,
    ``limit_test``, ``seed``, ``device``, ``workers``, ``overwrite``, ``progress``,
    ``tensorboard``); they are checked as the command line checks them.

    The result: ``rows`` (one per model: ``label``, ``model``, ``model_args``, ``top1`` and
    ``runs`` per held-out domain, ``mean_top1``), ``test_domains``, ``test_images`` per domain,
    ``domains``, ``classes``, the settings and the files written.
    """
    if isinstance(models, str) or all(isinstance(m, str) for m in models):
        settings = DomainsSettings(models=models, data=data, out=str(out), **options)
        entries = model_entries(settings.models)
    else:  # (name, args) pairs keep their arguments as given; the settings record the labels
        entries = model_entries(models)
        settings = DomainsSettings(models=[e.label for e in entries], data=data, out=str(out), **options)
    source = domain_source(settings.data)
    test_domains = _chosen_test_domains(source, settings.test_domains)
    _check_models(entries, settings.img_size, len(source.classes) if source.classes else None)
    if settings.init is not None and not Path(settings.init).exists():
        raise BioattnError(f"--init {settings.init} not found")
    _check_out(settings.out, source, entries)
    out = output_folder(settings.out, "--out")
    say = log or (lambda message: None)
    if source.ignored:
        say(f"note: {source.root} is a PACS root; left out the folders {', '.join(source.ignored)}")
    validation = ("each training domain's own val split" if is_embedded(settings.data) else
                  f"{settings.holdout:.0%} of each class of each training domain, seed {settings.seed}")
    results: dict[str, Any] = {
        "protocol": PROTOCOL,
        "source": source.description,
        "data": settings.data,
        "domains": list(source.domains),
        "classes": list(source.classes) if source.classes is not None else None,
        "test_domains": test_domains,
        "validation": validation,
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("models", "data")},
        "bioattn_version": __version__,
        "test_images": {},
        "rows": [],
        "files": [str(out / "results.json"), str(out / "results.md")],
    }
    say(f"leave-one-domain-out on {source.description}: {len(entries)} model(s) x "
        f"{len(test_domains)} held-out domain(s) ({', '.join(test_domains)}); writing {out}")
    start = time.perf_counter()
    for entry in entries:
        row: dict[str, Any] = {"label": entry.label, "model": entry.name, "model_args": entry.args,
                               "top1": {}, "runs": {}, "mean_top1": None}
        results["rows"].append(row)
        for domain in test_domains:
            spec = DomainSpec(source.root, tuple(d for d in source.domains if d != domain), domain,
                              settings.holdout, settings.seed)
            run = _run_split(entry, spec, out / entry.folder / domain, settings, say)
            row["runs"][domain] = run
            row["top1"][domain] = run["test_top1"]
            results["test_images"][domain] = run["test_images"]
            if results["classes"] is None:
                results["classes"] = run["classes"]
            if len(row["top1"]) == len(test_domains):
                row["mean_top1"] = _mean([row["top1"][d] for d in test_domains])
            results["seconds"] = time.perf_counter() - start
            _write(out, results)
    for row in results["rows"]:
        say(f"{row['label']}: mean top-1 over held-out domains {row['mean_top1']:.2f}%")
    say(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return results


def _write(out: Path, results: dict[str, Any]) -> None:
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n",
                      what="results file")
    atomic_write_text(out / "results.md", markdown_table(results), what="results table")


def _run_split(entry: ModelEntry, spec: DomainSpec, run_dir: Path, s: DomainsSettings,
               say: Callable[[str], None]) -> dict[str, Any]:
    """Train (or reuse, or resume) one model with one domain held out; test its best epoch."""
    cfg = TrainConfig(
        model=entry.name, model_args=dict(entry.args), data=str(spec), output=str(run_dir),
        recipe=s.recipe, epochs=s.epochs, batch_size=s.batch_size, img_size=s.img_size, lr=s.lr,
        seed=s.seed, init=s.init, device=s.device, workers=s.workers, limit_train=s.limit_train,
        limit_val=s.limit_val, overwrite=s.overwrite, progress=s.progress, tensorboard=s.tensorboard,
    )
    what = f"{entry.label}, held-out domain {spec.test} (training on {', '.join(spec.train)})"
    train_or_reuse(cfg, replace=s.overwrite, log=lambda message: say(f"{what}: {message}"))

    best = run_dir / "best"
    meta = read_meta(best)
    if meta is None:
        raise BioattnError(f"{best} holds no checkpoint")
    model = load_model(best)
    device = resolve_device(s.device)
    model.to(device)
    test_set = build_dataset(str(spec), "test", meta["img_size"], meta["mean"], meta["std"],
                             classes=meta["classes"])
    domain_images = len(test_set)
    test_set = spread_subset(test_set, s.limit_test)
    loader = DataLoader(test_set, batch_size=s.batch_size, shuffle=False, num_workers=s.workers)
    scores = evaluate_clean(model, loader, device)
    metrics = meta.get("metrics") or {}
    run = {
        "run_dir": str(run_dir),
        "data": str(spec),
        "train_domains": list(spec.train),
        "test_domain": spec.test,
        "selected_epoch": meta.get("epoch"),
        "val_top1": metrics.get("val_top1"),
        "test_top1": scores["top1"],
        "test_top5": scores["top5"],
        "test_loss": scores.get("loss"),
        "test_images": len(test_set),
        "domain_images": domain_images,
        "classes": list(meta["classes"]),
        "checkpoint": str(best),
    }
    say(f"{what}: epoch {run['selected_epoch']} selected (val top-1 {run['val_top1']:.2f}%), "
        f"test top-1 {run['test_top1']:.2f}% on {run['test_images']} images")
    return run
