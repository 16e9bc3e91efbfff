"""The documentation runs: every ```bash and ```python block of README.md and docs/*.md is
collected by Sybil and run here on tiny data, so an example cannot drift from the code.

* A block runs unless an HTML comment ``<!-- skip: next "why" -->`` stands before it; the reason
  is written there, in the page (only blocks that need several GPUs, data sets that cannot be
  downloaded here, builds of minutes, or the set-up commands themselves are skipped).
  ``<!-- invisible-code-block: python -->`` blocks run without being shown (a page's set-up).
* Before a block runs, :func:`tiny` rewrites what it names to tiny data: every embedded data
  spec gets 128 training, 16 validation and 16 test images, ``--epochs N`` and ``epochs=N``
  become 1 (2 on a line that resumes a run), image counts (``--limit``, ``--images``, ...)
  become small, ``/data/imagenet`` (the 1000 ImageNet classes, one image each) and ``/data/PACS``
  become tiny folders made here, and ``bioattn demo`` gets ``--quick`` (and ``--models RS-RNN``
  unless the block names its models).
* Shell blocks run with ``bash -e -o pipefail`` in a temporary folder of their page (shared by
  the page's blocks, in order) with the virtual environment's ``bin`` on ``PATH``; their
  ``bioattn`` is a warm copy of the command line (tests/doc_commands.py) that runs the real
  ``bioattn.cli.main`` without importing torch again for every command. Python blocks run in
  this process, one namespace per page, in the same folder.

Figures quoted in the prose are checked against the zoo's records at the end of this file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent

# ------------------------------------------------------------------------------------------
# tiny data
# ------------------------------------------------------------------------------------------
TINY_COUNTS = "train=128,val=16,test=16"
# an embedded data spec, not a module path (bioattn.data.embedded) or a pretrained tag (.embedded)
_EMBEDDED = re.compile(r"(?<![\w.\-/])embedded(?::[\w=,.+\-]*)?(?![\w])")
_COUNT = re.compile(r"^(train|val|test)=\d+$")
_SMALL_COUNTS = {
    "--limit": 8, "--images": 16, "--corruption-images": 4, "--attack-images": 8, "--attention-images": 8,
    "--steering-images": 8, "--limit-train": 128, "--limit-val": 16, "--limit-test": 16, "--n": 4,
}


def tiny_spec(spec: str) -> str:
    """``spec`` (``embedded[:options]``) with 64/16/16 images and its other options kept."""
    name, _, options = spec.partition(":")
    kept = [o for o in options.split(",") if o and not _COUNT.match(o)]
    return f"{name}:{','.join([*kept, TINY_COUNTS])}"


def tiny(source: str, data: Path) -> str:
    """The block ``source`` rewritten to tiny data (see the module's docstring)."""
    source = _EMBEDDED.sub(lambda m: tiny_spec(m.group(0)), source)
    # a resumed run continues a one-epoch run: it asks for two
    source = "\n".join(re.sub(r"(--epochs[ =])\d+", r"\g<1>2" if "--resume" in line else r"\g<1>1", line)
                        for line in source.split("\n"))
    source = re.sub(r"\bepochs=\d+", "epochs=1", source)
    for flag, value in _SMALL_COUNTS.items():
        source = re.sub(rf"({re.escape(flag)}[ =])\d+", rf"\g<1>{value}", source)
        source = re.sub(rf"\b({flag.strip('-').replace('-', '_')}=)\d+", rf"\g<1>{value}", source)
    # the demo on a tiny budget, and of one model unless the block names its models
    source = re.sub(r"\bbioattn demo\b(?!.*--quick)", "bioattn demo --quick", source)
    source = re.sub(r"^(.*\bbioattn demo --quick\b(?!.*--models).*?)(\s*#.*)?$", r"\1 --models RS-RNN\2", source,
                    flags=re.M)
    source = source.replace("/data/imagenet", str(data / "imagenet")).replace("/data/PACS", str(data / "PACS"))
    # the environment's own command line is the warm one; its python is this one
    source = source.replace(".venv/bin/bioattn", "bioattn")
    return source.replace(".venv/bin/", f"{VENV_BIN}/")


def test_tiny_rewrites_data_and_budgets():
    data = Path("/tmp/x")
    assert tiny("bioattn train --data embedded --epochs 10", data) == \
        f"bioattn train --data embedded:{TINY_COUNTS} --epochs 1"
    assert tiny("--data embedded:seg,train=4000 --limit 500", data) == f"--data embedded:seg,{TINY_COUNTS} --limit 8"
    assert tiny('build_dataset("embedded:pair", "val")', data) == f'build_dataset("embedded:pair,{TINY_COUNTS}", "val")'
    # module paths and pretrained tags stay
    kept = 'from bioattn.data.embedded import preview; timm.create_model("vit_micro_patch8_64.embedded")'
    assert tiny(kept, data) == kept
    assert tiny("bioattn demo --out r  # all", data) == "bioattn demo --quick --out r --models RS-RNN  # all"
    assert tiny("bioattn demo --quick --models ViT", data) == "bioattn demo --quick --models ViT"
    assert tiny("--data /data/imagenet --workers 8", data) == "--data /tmp/x/imagenet --workers 8"
    assert tiny("bioattn train --resume runs/a --epochs 12", data) == "bioattn train --resume runs/a --epochs 2"


# ------------------------------------------------------------------------------------------
# the shared set-up: tiny data folders and the warm command line
# ------------------------------------------------------------------------------------------
_STATE: dict = {}


def _make_pacs(root: Path) -> Path:
    from PIL import Image

    from bioattn.data.domains import PACS_CLASSES, PACS_DOMAINS

    for di, domain in enumerate(PACS_DOMAINS):
        for ci, name in enumerate(PACS_CLASSES):
            folder = root / domain / name
            folder.mkdir(parents=True)
            for i in range(3):
                shade = int(30 + 190 * ci / (len(PACS_CLASSES) - 1))
                Image.new("RGB", (16, 16), (shade, shade, min(255, shade + 10 * di + i))).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def doc_setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("docs")
    data = base / "data"
    from bioattn.data.imagenet_classes import imagenet_wnids

    make_image_folder(data / "imagenet", classes=imagenet_wnids(), per_class=1, size=8, splits=("train", "val"))
    _make_pacs(data / "PACS")
    shim = base / "bin"
    shim.mkdir()
    helper = Path(__file__).with_name("doc_commands.py")
    (shim / "bioattn").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{helper}" client "$@"\n')
    (shim / "bioattn").chmod(0o755)
    socket_path = str(base / "bioattn.sock")
    server = subprocess.Popen([sys.executable, str(helper), "serve", socket_path], stdout=subprocess.PIPE,
                              env={**os.environ, "MPLBACKEND": "Agg"},
                              text=True)
    assert server.stdout.readline().strip() == "ready", "the warm command line did not start"
    _STATE.update(data=data, shim=shim, socket=socket_path, base=base)
    yield _STATE
    server.kill()
    server.wait()


def _page_dir(path: Path) -> Path:
    folder = _STATE["base"] / "pages" / path.stem
    if not folder.exists():
        folder.mkdir(parents=True)
        for name in ("src", "docs"):  # blocks that read the repository's files by their paths
            (folder / name).symlink_to(ROOT / name)
    return folder


def run_bash(example) -> None:
    path = Path(example.path)
    script = tiny(example.parsed, _STATE["data"])
    env = {**os.environ, "PATH": f"{_STATE['shim']}:{VENV_BIN}:{os.environ.get('PATH', '')}",
           "BIOATTN_DOC_SOCKET": _STATE["socket"], "MPLBACKEND": "Agg"}
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=_page_dir(path), env=env,
                          capture_output=True, text=True, timeout=400)
    if done.returncode != 0:
        raise AssertionError(f"{path.name}:{example.line}: exit status {done.returncode}\n--- ran:\n{script}\n"
                             f"--- stdout:\n{done.stdout[-3000:]}\n--- stderr:\n{done.stderr[-3000:]}")


def run_python(example) -> None:
    path = Path(example.path)
    source = tiny(example.parsed, _STATE["data"])
    code = compile("\n" * (example.line - 1) + source, str(path), "exec")
    previous = os.getcwd()
    os.chdir(_page_dir(path))
    try:
        exec(code, example.namespace)
    finally:
        os.chdir(previous)


SYBIL = Sybil(parsers=[SkipParser(), CodeBlockParser("bash", run_bash), CodeBlockParser("python", run_python)],
              path=str(ROOT))
DOCUMENTS = {path: SYBIL.parse(path) for path in PAGES}
EXAMPLES = [(path, example) for path, document in DOCUMENTS.items() for example in document.examples()]


@pytest.mark.parametrize(("path", "example"), EXAMPLES,
                         ids=[f"{p.relative_to(ROOT)}:{e.line}" for p, e in EXAMPLES])
def test_block(path, example, doc_setup, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    started = time.perf_counter()
    example.evaluate()
    elapsed = time.perf_counter() - started
    if elapsed > 5:
        print(f"{path.name}:{example.line} took {elapsed:.1f} s")


def test_every_shell_and_python_block_is_collected():
    """A block in another spelling (```sh, ```py, ```console) would be skipped silently."""
    for path in PAGES:
        fences = re.findall(r"^```(\S+)", path.read_text(), flags=re.M)
        odd = sorted({f for f in fences if f not in ("bash", "python", "text", "mermaid")})
        assert not odd, f"{path.name}: code blocks in {odd}; write them as bash or python (or text)"


def test_skipped_blocks_say_why():
    for path in PAGES:
        for line in re.findall(r"^<!-- skip:.*$", path.read_text(), flags=re.M):
            assert re.fullmatch(r'<!-- skip: next "[^"]{10,}" -->', line), f"{path.name}: {line}"


# ------------------------------------------------------------------------------------------
# figures in the prose
# ------------------------------------------------------------------------------------------
def _zoo_test(entry: str) -> dict:
    return json.loads((ROOT / "src" / "bioattn" / "zoo" / entry / "train.json").read_text())["test"]


def _close(quoted: str, recorded: float) -> bool:
    """A figure quoted with d decimals agrees with the record rounded to d decimals."""
    decimals = len(quoted.partition(".")[2])
    return abs(float(quoted) - recorded) <= 0.5 * 10 ** -decimals + 1e-9


def test_readme_model_table_quotes_the_zoo_records():
    from bioattn.zoo import find_entry

    rows = re.findall(r"^\|[^\n]*\| `([\w.]+)` \| ([\d.]+)% \|$", (ROOT / "README.md").read_text(), flags=re.M)
    assert len(rows) >= 8, rows
    for name, quoted in rows:
        entry = find_entry(name)
        assert _close(quoted, _zoo_test(entry.name)["top1"]), f"README.md: {name} {quoted}% against the zoo's record"


# (page, the text quoted there, zoo entry, figure of train.json: "seconds" or a key of its test figures)
QUOTED = [
    ("training.md", "(95.9% test top-1 in 206 s)", "rvt_micro", [("top1", "95.9"), ("seconds", "206")]),
    ("training.md", "95.9% test top-1 in 470 s", "rvt_micro_vars_d", [("top1", "95.9"), ("seconds", "470")]),
    ("training.md", "(947 s), 74.6% on the test split", "vit_micro_patch8_64", [("seconds", "947"), ("top1", "74.6")]),
    ("training.md", "took 23 minutes (1386 s) for 15 epochs, reaching 76.3% test", "absvit_micro_patch8_64",
     [("seconds", "1386"), ("top1", "76.3")]),
    ("training.md", "80.95% on the test split", "deit_micro_patch8_64_vars_d", [("top1", "80.95")]),
    ("training.md", "4267 s (71 min) of recorded training", "deit_micro_patch8_64_vars_d", [("seconds", "4267")]),
    ("training.md", "98.0% on the test split (the conv-stem ViT: 97.9%, AbSViT 97.7%). Its 8352 s",
     "deit_micro_convstem_64_vars_d", [("top1", "98.0"), ("seconds", "8352")]),
    ("training.md", "82.65% test top-1 in 171 s", "gfnet_micro", [("top1", "82.65"), ("seconds", "171")]),
    ("training.md", "(8 epochs took it 1272 s: 84.85% test top-1", "gfnet_micro_vars_s",
     [("seconds", "1272"), ("top1", "84.85")]),
    ("training.md", "(15 epochs, 2457 s on one thread", "rsrnn_micro", [("seconds", "2457")]),
    ("training.md", "reaches 96.6% test top-1 at glimpse 4", "rsrnn_micro", [("top1", "96.6")]),
    ("training.md", "(1862 s; 68.2% test mIoU)", "upernet_vit_micro_patch8_64",
     [("seconds", "1862"), ("miou", "68.2")]),
    ("training.md", "(3159 s, its first epoch sharing the cores with another run; 70.4%)",
     "upernet_absvit_micro_patch8_64",
     [("seconds", "3159"), ("miou", "70.4")]),
    ("training.md", "(596 s; 73.7%)", "upernet_rvt_micro", [("seconds", "596"), ("miou", "73.7")]),
    ("training.md", "(686 s; 74.1%)", "upernet_rvt_micro_vars_d", [("seconds", "686"), ("miou", "74.1")]),
    ("training.md", "(699 s on one thread sharing the machine; 77.3% test mAP;", "multilabel_rsrnn_micro",
     [("seconds", "699"), ("map", "77.3")]),
    ("training.md", "(406 s; 67.6% test mAP", "multilabel_vit_micro_patch8_64", [("seconds", "406"), ("map", "67.6")]),
]


@pytest.mark.parametrize(("page", "quoted", "entry", "figures"), QUOTED, ids=[q[1][:40] for q in QUOTED])
def test_quoted_zoo_figures_match_the_records(page, quoted, entry, figures):
    text = re.sub(r"\s+", " ", (ROOT / "docs" / page).read_text())
    assert re.sub(r"\s+", " ", quoted) in text, f"{page} no longer says {quoted!r}: update this test with it"
    if entry is None:
        return
    record = json.loads((ROOT / "src" / "bioattn" / "zoo" / entry / "train.json").read_text())
    for key, value in figures:
        recorded = record["train_seconds"] if key == "seconds" else record["test"][key]
        assert _close(value, recorded), f"{page}: {entry} {key} {value} against the record's {recorded}"


def test_held_out_styles_quoted_in_training_page_match_the_records():
    text = re.sub(r"\s+", " ", (ROOT / "docs" / "training.md").read_text())
    from bioattn.zoo import STYLES

    for start in ("rvt_micro", "rvt_micro_vars_d"):
        figures = [f"{_zoo_test(f'{start}_without_{style}')['top1']:.1f}" for style in STYLES]
        quoted = "/".join(figures) + "%"
        assert quoted in text, f"training.md should quote {start}'s held-out top-1 as {quoted}"


def test_readme_results_headline_agrees_with_the_results_page():
    """The README's summary of docs/results.md: how many claims are decided on three seeds and
    how, naming each decided claim; how many wait for seeds and what the tests give on the seeds
    measured; the differences it quotes."""
    page = (ROOT / "docs" / "results.md").read_text()
    table = page.split("\n## Claims\n", 1)[1].split("\n## ", 1)[0]
    readme = " ".join((ROOT / "README.md").read_text().split())
    rows = {cells[1].strip("` "): [c.strip() for c in cells]
            for cells in (row.split("|") for row in table.splitlines() if row.startswith("| `"))}
    measured = {claim: cells for claim, cells in rows.items() if cells[-2] != "not measured"}
    decided = {claim: cells for claim, cells in measured.items() if int(cells[-4]) >= 3}
    waiting = {claim: cells for claim, cells in measured.items() if claim not in decided}
    verdicts = [cells[-2] for cells in decided.values()]
    assert f"of {len(measured)} claims measured, {len(decided)} are decided on three seeds" in readme
    assert (f"{verdicts.count('holds')} hold" in readme and f"{verdicts.count('does not hold')} do not" in readme
            and f"{verdicts.count('not resolved')} stay not resolved" in readme)
    for claim in decided:
        assert f"`{claim}`" in readme, claim
    outcomes = [cells[-3] for cells in waiting.values()]
    assert (f"The other {len(waiting)} have fewer than three seeds so far; on the seeds measured, "
            f"{outcomes.count('holds')} of them would hold") in readme
    assert f"and {outcomes.count('does not hold')} would not (" in readme
    for claim, quoted in (("rsrnn-pgd", "+66"), ("rsrnn-pgd-retina", "+59"), ("absvit-steering", "+4.8")):
        assert rows[claim][5].startswith(quoted) and quoted in readme, claim


def test_zoo_weight_files_are_under_five_megabytes():
    """docs/models.md: every entry's model.safetensors is under 5 MB."""
    files = sorted((ROOT / "src" / "bioattn" / "zoo").glob("*/model.safetensors"))
    assert files
    large = [f"{f.parent.name}: {f.stat().st_size / 1e6:.1f} MB" for f in files if f.stat().st_size >= 5e6]
    assert not large, large


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation other than - and _ dropped,
    spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_links_between_pages_reach_a_page_and_a_heading():
    broken = []
    for path in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
