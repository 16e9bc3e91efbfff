"""Outputs are never clobbered: links, devices, FIFOs, folders, inputs and existing checkpoints are
refused with one line and left as they were; writes keep the umask; an interrupted write leaves
the previous copy."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioattn import checkpoint as ckpt
from bioattn.attention import plots
from bioattn.cli import main
from bioattn.errors import BioattnError
from bioattn.evaluate.report import write_report, write_results
from bioattn.fileio import atomic_dir, atomic_write_text, check_output_file, output_folder, refuse_input_as_output
from bioattn.models import create_model

MODEL = "test_vit"
ARGS = {"img_size": 32, "num_classes": 3}
RESULTS = [{"model": {"name": "m"}, "results": {
    "clean": {"top1": 50.0, "top5": 90.0, "n": 8},
    "corruptions": {"top1": {"fog": {"3": 40.0}}, "corruption_top1": {"fog": 40.0},
                    "mean_top1": 40.0, "mean_error": 60.0, "n": 8}}}]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): its kind, target or content."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            out[str(path)] = ("link", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            out[str(path)] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
        else:
            out[str(path)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


def picture(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((20, 30, 3))


def write_figure(path: Path) -> Path:
    return plots.plot_attention(picture(), {"map": torch.rand(4, 6)}, path)


def write_checkpoint(path: Path, seed: int = 0, overwrite: bool = False) -> Path:
    torch.manual_seed(seed)
    model = create_model(MODEL, **ARGS)
    return ckpt.save_checkpoint(path, model, ckpt.model_meta(MODEL, ARGS, 3, img_size=32),
                                overwrite=overwrite)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A released-style .pth (``{"model": state_dict}``) of a tiny ViT with 3 classes."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("released") / "vit.pth"
    torch.save({"model": create_model(MODEL, **ARGS).state_dict()}, path)
    return path


# Every writer, as (name, write(path)); each must refuse the same bad targets.
WRITERS = {
    "text": lambda p: atomic_write_text(p, "new"),
    "figure": write_figure,
    "results": lambda p: write_results(RESULTS[0], p),
}


# ------------------------------------------------------------------------------------------
# bad targets, one case each
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_symlink_target_is_refused_and_left_alone(tmp_path, writer):
    real = tmp_path / "real.png"
    real.write_bytes(b"the user's file")
    link = tmp_path / "link.png"
    link.symlink_to(real)
    before = snapshot(tmp_path)
    with pytest.raises(BioattnError, match="is a symbolic link") as info:
        WRITERS[writer](link)
    one_line(info)
    assert snapshot(tmp_path) == before


def test_a_dangling_symlink_is_refused_too(tmp_path):
    link = tmp_path / "out.png"
    link.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(BioattnError, match="symbolic link"):
        write_figure(link)
    assert link.is_symlink() and not (tmp_path / "nowhere.png").exists()


def test_a_device_file_is_refused(tmp_path):
    # the check alone on the real /dev/null (it never writes), then a write to a device node
    with pytest.raises(BioattnError, match="is a device file, not a regular file") as info:
        check_output_file("/dev/null")
    one_line(info)
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    device = tmp_path / "null.png"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    before = snapshot(tmp_path)
    for write in WRITERS.values():
        with pytest.raises(BioattnError, match="device file") as info:
            write(device)
        one_line(info)
    assert snapshot(tmp_path) == before and stat.S_ISCHR(os.lstat(device).st_mode)


def test_a_device_file_as_cli_out_is_refused(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    results = write_results(RESULTS[0], tmp_path / "r.json")
    assert main(["report", str(results), "--out", str(device)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for write in WRITERS.values():
        with pytest.raises(BioattnError, match="FIFO") as info:
            write(fifo)
        one_line(info)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.png"]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_directory_where_a_file_is_expected_is_refused(tmp_path, writer):
    folder = tmp_path / "out.png"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    before = snapshot(tmp_path)
    with pytest.raises(BioattnError, match="is a directory: give a file name") as info:
        WRITERS[writer](folder)
    one_line(info)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_file_where_a_directory_is_expected_is_refused(tmp_path, writer):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("the user's notes")
    before = snapshot(tmp_path)
    with pytest.raises(BioattnError, match="notes.txt is a file, not a directory") as info:
        WRITERS[writer](blocker / "sub" / "out.png")
    one_line(info)
    assert snapshot(tmp_path) == before


def test_report_and_checkpoint_folders_that_are_files_are_refused(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("the user's notes")
    before = snapshot(tmp_path)
    with pytest.raises(BioattnError, match="is a file, not a directory") as info:
        write_report(RESULTS, blocker)
    one_line(info)
    with pytest.raises(BioattnError, match="is a file, not a directory"):
        output_folder(blocker)
    with pytest.raises(BioattnError, match="is a file, not a directory"):
        write_checkpoint(blocker)
    assert snapshot(tmp_path) == before


def test_an_unwritable_parent_is_refused(tmp_path):
    import shutil
    import tempfile

    if os.geteuid() == 0:  # root writes anywhere: act as an unprivileged user for the write
        base = Path(tempfile.mkdtemp(prefix="bioattn-unwritable-"))
        os.chmod(base, 0o755)
    else:
        base = tmp_path
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.geteuid() == 0:
            os.seteuid(65534)
        try:
            for target in (locked / "out.txt", locked / "sub" / "out.txt"):
                with pytest.raises(BioattnError, match="locked is not writable") as info:
                    atomic_write_text(target, "x")
                one_line(info)
        finally:
            if os.getuid() == 0:
                os.seteuid(0)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        if base != tmp_path:
            shutil.rmtree(base)


# ------------------------------------------------------------------------------------------
# inputs are never outputs
# ------------------------------------------------------------------------------------------
def _image(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


def test_attend_never_overwrites_its_input(tmp_path, capsys):
    image = _image(tmp_path / "a.png")
    original = image.read_bytes()
    model = create_model(MODEL, **ARGS)
    aliases = [image, tmp_path / "." / "a.png", tmp_path / "link.png", tmp_path / "hard.png"]
    (tmp_path / "link.png").symlink_to(image)
    os.link(image, tmp_path / "hard.png")
    for out in aliases:
        with pytest.raises(BioattnError) as info:
            plots.attend(model, image, out)
        one_line(info)
    assert image.read_bytes() == original
    with pytest.raises(BioattnError, match="is the input") as info:
        plots.attend(model, image, tmp_path / "hard.png")
    with pytest.raises(BioattnError, match="is the input"):
        refuse_input_as_output(tmp_path / "sub" / ".." / "a.png", [image])
    # the command line: one line, exit status 2, the image untouched
    assert main(["attend", "--model", MODEL, "--model-arg", "num_classes=3", "--img-size", "32",
                 "--image", str(image), "--out", str(image)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert image.read_bytes() == original


# ------------------------------------------------------------------------------------------
# convert and checkpoints
# ------------------------------------------------------------------------------------------
def test_convert_onto_an_existing_checkpoint_needs_overwrite(tmp_path, released):
    dst = write_checkpoint(tmp_path / "ck", seed=5)
    before = snapshot(tmp_path)
    with pytest.raises(BioattnError, match="already exists: replace it with --overwrite") as info:
        ckpt.convert_checkpoint(released, dst, MODEL, **ARGS)
    one_line(info)
    assert snapshot(tmp_path) == before
    ckpt.convert_checkpoint(released, dst, MODEL, overwrite=True, **ARGS)
    state = ckpt.read_state_dict(dst)
    expected = torch.load(released, weights_only=True)["model"]
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_convert_cli_onto_an_existing_checkpoint_is_refused(tmp_path, released, capsys):
    dst = write_checkpoint(tmp_path / "ck", seed=5)
    before = snapshot(tmp_path)
    assert main(["convert", str(released), str(dst), "--model", MODEL, "--img-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    assert snapshot(tmp_path) == before


def test_convert_onto_a_regular_file_is_refused_without_touching_it(tmp_path, released, capsys):
    target = tmp_path / "some_file.png"
    target.write_bytes(b"the user's picture")
    before = snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(BioattnError, match="is a file, not a directory") as info:
            ckpt.convert_checkpoint(released, target, MODEL, overwrite=overwrite, **ARGS)
        one_line(info)
    assert main(["convert", str(released), str(target), "--model", MODEL, "--img-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert snapshot(tmp_path) == before  # no .old, no temporary folder


def test_convert_never_replaces_a_folder_that_is_not_a_checkpoint(tmp_path, released):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    before = snapshot(tmp_path)
    with pytest.raises(BioattnError, match="holds no bioattn checkpoint"):
        ckpt.convert_checkpoint(released, folder, MODEL, overwrite=True, **ARGS)
    assert snapshot(tmp_path) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    ckpt.convert_checkpoint(released, empty, MODEL, **ARGS)  # an empty folder is fine
    assert (empty / ckpt.WEIGHTS).is_file()


def test_a_symlinked_checkpoint_directory_is_refused(tmp_path, released):
    real = write_checkpoint(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    before = snapshot(tmp_path)
    with pytest.raises(BioattnError, match="is a symbolic link"):
        ckpt.convert_checkpoint(released, link, MODEL, overwrite=True, **ARGS)
    with pytest.raises(BioattnError, match="is a symbolic link"):
        atomic_dir(link, lambda tmp: None)
    assert snapshot(tmp_path) == before


def test_save_checkpoint_refuses_an_existing_checkpoint_unless_told(tmp_path):
    write_checkpoint(tmp_path / "ck", seed=1)
    before = ckpt.read_state_dict(tmp_path / "ck")
    with pytest.raises(BioattnError, match="already exists"):
        write_checkpoint(tmp_path / "ck", seed=2)
    assert all(torch.equal(before[k], v) for k, v in ckpt.read_state_dict(tmp_path / "ck").items())
    write_checkpoint(tmp_path / "ck", seed=2, overwrite=True)
    assert not all(torch.equal(before[k], v) for k, v in ckpt.read_state_dict(tmp_path / "ck").items())


# ------------------------------------------------------------------------------------------
# permissions
# ------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_outputs_follow_the_umask(tmp_path, umask_022, released):
    files = [atomic_write_text(tmp_path / "a.txt", "x"), write_figure(tmp_path / "fig.png"),
             write_results(RESULTS[0], tmp_path / "r.json")]
    files += write_report(RESULTS, tmp_path / "report")
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    for folder in (write_checkpoint(tmp_path / "ck"),
                   ckpt.convert_checkpoint(released, tmp_path / "conv", MODEL, **ARGS),
                   tmp_path / "report"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
        for f in folder.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_a_stricter_umask_and_a_replaced_file_keep_their_modes(tmp_path):
    old = os.umask(0o077)
    try:
        assert stat.S_IMODE(atomic_write_text(tmp_path / "private.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    shared = atomic_write_text(tmp_path / "shared.txt", "x")
    shared.chmod(0o640)
    atomic_write_text(shared, "y")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640 and shared.read_text() == "y"


# ------------------------------------------------------------------------------------------
# interrupted writes leave the previous copy
# ------------------------------------------------------------------------------------------
def _interrupt_after_partial_write(monkeypatch, module, name):
    """Make ``module.name(..., path, ...)`` write a partial file then raise KeyboardInterrupt."""
    def partial(*args, **kwargs):
        target = next(a for a in args if isinstance(a, (str, Path)))
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(module, name, partial)


def test_interrupted_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "ck", seed=1)
    before = snapshot(tmp_path)
    _interrupt_after_partial_write(monkeypatch, ckpt, "save_file")
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path / "ck", seed=2, overwrite=True)
    assert snapshot(tmp_path) == before


def test_interrupted_convert_keeps_the_previous_checkpoint(tmp_path, monkeypatch, released):
    write_checkpoint(tmp_path / "ck", seed=1)
    before = snapshot(tmp_path)
    _interrupt_after_partial_write(monkeypatch, ckpt, "save_file")
    with pytest.raises(KeyboardInterrupt):
        ckpt.convert_checkpoint(released, tmp_path / "ck", MODEL, overwrite=True, **ARGS)
    assert snapshot(tmp_path) == before


def test_interrupted_report_keeps_the_previous_report(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    write_report(RESULTS, tmp_path / "rep")
    before = snapshot(tmp_path)
    changed = [dict(RESULTS[0], model={"name": "other"})]

    def partial(self, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", partial)
    with pytest.raises(KeyboardInterrupt):
        write_report(changed, tmp_path / "rep")
    after = snapshot(tmp_path)
    # the Markdown is replaced whole (it was written before the plot); the plot is the old one
    md = str(tmp_path / "rep" / "report.md")
    assert {k: v for k, v in after.items() if k != md} == {k: v for k, v in before.items() if k != md}
    assert "other" in (tmp_path / "rep" / "report.md").read_text()


def test_interrupted_figure_keeps_the_previous_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    write_figure(tmp_path / "fig.png")
    before = snapshot(tmp_path)

    def partial(self, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", partial)
    with pytest.raises(KeyboardInterrupt):
        write_figure(tmp_path / "fig.png")
    with pytest.raises(KeyboardInterrupt):
        write_figure(tmp_path / "new.png")
    assert snapshot(tmp_path) == before


def test_interrupted_results_file_keeps_the_previous_one(tmp_path, monkeypatch):
    import bioattn.fileio as fileio

    path = write_results(RESULTS[0], tmp_path / "r.json")
    before = snapshot(tmp_path)

    def interrupt(fd):  # the new content is in the temporary file, not yet renamed
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_results(dict(RESULTS[0], model={"name": "other"}), path)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_a_full_disk_is_a_one_line_error_and_keeps_the_previous_file(tmp_path):
    import errno

    from bioattn.fileio import atomic_write

    target = atomic_write_text(tmp_path / "f.txt", "old")

    def full(tmp):
        Path(tmp).write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BioattnError, match="No space left on device; the previous copy is intact") as info:
        atomic_write(target, full)
    one_line(info)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# ------------------------------------------------------------------------------------------
# issue 18: the command line on outputs that are inputs, links and interrupted writes
# ------------------------------------------------------------------------------------------
def test_eval_out_never_replaces_the_checkpoint_it_reads(tmp_path, capsys):
    ck = write_checkpoint(tmp_path / "ck")
    before = snapshot(tmp_path)
    for name in (ckpt.WEIGHTS, ckpt.META):
        assert main(["eval", "--checkpoint", str(ck), "--out", str(ck / name), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is the input" in err[0], err
    assert main(["eval", "--checkpoint", str(ck / ckpt.WEIGHTS), "--model", MODEL,
                 "--out", str(ck / ckpt.WEIGHTS), "--no-progress"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_report_into_a_linked_folder_keeps_the_link(tmp_path, capsys):
    # a link to a folder is a folder to write into (as for mkdir -p); the link itself stays
    results = write_results(RESULTS[0], tmp_path / "r.json")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert main(["report", str(results), "--out", str(tmp_path / "link")]) == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "report.md").is_file()
    # a link in the folder where the report's file goes is refused and left alone
    (tmp_path / "real" / "mine.md").write_text("mine")
    (tmp_path / "real" / "x.md").symlink_to(tmp_path / "real" / "mine.md")
    before = snapshot(tmp_path)
    assert main(["report", str(results), "--out", str(tmp_path / "real"), "--stem", "x"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def _partial_savefig(monkeypatch):
    from matplotlib.figure import Figure

    def partial(self, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", partial)


SPEC = "embedded:size=32,train=6,val=4,test=4,seed=3"


def test_interrupted_data_preview_keeps_the_previous_preview(tmp_path, monkeypatch, capsys):
    png = tmp_path / "preview.png"
    assert main(["data", "preview", "--data", SPEC, "--out", str(png), "--n", "2"]) == 0
    before = snapshot(tmp_path)
    _partial_savefig(monkeypatch)
    assert main(["data", "preview", "--data", SPEC, "--out", str(png), "--n", "4"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    assert snapshot(tmp_path) == before


def test_interrupted_data_generate_keeps_the_previous_cache(tmp_path, monkeypatch, capsys):
    from bioattn.data.embedded import cache

    args = ["data", "generate", "--data", SPEC, "--cache", str(tmp_path), "--workers", "1"]
    assert main(args) == 0
    before = snapshot(tmp_path)
    real = cache._sha256

    def interrupted(path):  # the arrays of the new copy are written, its manifest is not
        real(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "_sha256", interrupted)
    assert main(args + ["--force"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    monkeypatch.undo()
    assert snapshot(tmp_path) == before  # the old copy, and no temporary folder
    assert main(args) == 0 and "found in the cache" in capsys.readouterr().out


def test_interrupted_attend_keeps_the_previous_figure(tmp_path, monkeypatch, capsys):
    image = _image(tmp_path / "a.png")
    args = ["attend", "--model", MODEL, "--model-arg", "num_classes=3", "--img-size", "32",
            "--image", str(image), "--out", str(tmp_path / "map.png")]
    assert main(args) == 0
    before = snapshot(tmp_path)
    _partial_savefig(monkeypatch)
    assert main(args) == 130
    assert snapshot(tmp_path) == before


def test_interrupted_eval_keeps_the_previous_results(tmp_path, monkeypatch, capsys):
    import bioattn.fileio as fileio

    # the embedded data has 10 classes
    ck = ckpt.save_checkpoint(tmp_path / "ck", create_model(MODEL, img_size=32, num_classes=10),
                              ckpt.model_meta(MODEL, {"img_size": 32, "num_classes": 10}, 10, img_size=32))
    args = ["eval", "--checkpoint", str(ck), "--data", SPEC, "--suite", "clean", "--workers", "0",
            "--no-progress", "--out", str(tmp_path / "res" / "r.json")]
    assert main(args) == 0, capsys.readouterr().err
    before = snapshot(tmp_path)

    def interrupt(fd):  # the new copy is in its temporary file, not yet renamed
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "fsync", interrupt)
    assert main(args + ["--seed", "1"]) == 130
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_interrupted_demo_page_keeps_the_previous_page(tmp_path, monkeypatch):
    import bioattn.fileio as fileio
    from bioattn.demo import QUICK
    from bioattn.demo.page import write_html

    out = tmp_path / "demo"
    out.mkdir()
    settings = QUICK
    write_html(out, RESULTS, "# report\n", [], [], settings, 1.0)
    atomic_write_text(out / "results.json", "{}\n")
    before = snapshot(tmp_path)

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_html(out, [dict(RESULTS[0], model={"name": "other"})], "# other\n", [], [], settings, 2.0)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(out / "results.json", '{"models": []}\n')
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
