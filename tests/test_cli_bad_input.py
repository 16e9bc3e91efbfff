"""Bad input on every command: one `error:` line naming the flag, exit status 2, no traceback.

The matrix runs the command line in-process; each case stops before any training or
evaluation. Errors raised inside a command by the file system or a library are turned into one
line at the command boundary; a bug is reported as an internal error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bioattn import cli
from bioattn.config import AttendSettings, ConvertSettings, SuiteSettings, TrainConfig
from bioattn.errors import BioattnError

TRAIN = ["train", "--model", "vit_micro_patch8_64"]
EVAL = ["eval", "--model", "vit_micro_patch8_64"]
CONVERT = ["convert", "release.pth", "converted", "--model", "vit_micro_patch8_64"]
ATTEND = ["attend", "--model", "vit_micro_patch8_64", "--image", "photo.png", "--out", "map.png"]
PREVIEW = ["data", "preview", "--out", "preview.png"]

# (arguments, text the error line must contain: the flag, and where useful the allowed range)
CASES = {
    # train
    "train epochs 0": (TRAIN + ["--epochs", "0"], "--epochs must be an integer >= 1"),
    "train epochs negative": (TRAIN + ["--epochs", "-3"], "--epochs must be an integer >= 1"),
    "train batch size 0": (TRAIN + ["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    "train lr nan": (TRAIN + ["--lr", "nan"], "--lr must be a number > 0"),
    "train lr negative": (TRAIN + ["--lr", "-1"], "--lr must be a number > 0"),
    "train lr infinite": (TRAIN + ["--lr", "inf"], "--lr must be a number > 0"),
    "train lr not a number": (TRAIN + ["--lr", "fast"], "--lr"),
    "train base lr 0": (TRAIN + ["--base-lr", "0"], "--base-lr must be a number > 0"),
    "train unknown optimizer": (TRAIN + ["--opt", "sgdd"], "--opt must be an optimizer timm knows"),
    "train unknown scheduler": (TRAIN + ["--sched", "foo"], "--sched"),
    "train img size 0": (TRAIN + ["--img-size", "0"], "--img-size must be an integer >= 8"),
    "train mixup negative": (TRAIN + ["--mixup", "-1"], "--mixup must be a number >= 0"),
    "train cutmix nan": (TRAIN + ["--cutmix", "nan"], "--cutmix must be a number >= 0"),
    "train randaugment unknown section": (TRAIN + ["--aa", "rand-zz"], "--aa must be 'none' or a RandAugment"),
    "train randaugment not rand": (TRAIN + ["--aa", "auto-m9"], "--aa must be 'none' or a RandAugment"),
    "train reprob above 1": (TRAIN + ["--reprob", "1.5"], "--reprob must be a number in [0, 1]"),
    "train smoothing 1": (TRAIN + ["--smoothing", "1"], "--smoothing must be a number in [0, 1)"),
    "train drop path negative": (TRAIN + ["--drop-path", "-0.1"], "--drop-path must be a number in [0, 1)"),
    "train warmup epochs negative": (TRAIN + ["--warmup-epochs", "-1"], "--warmup-epochs must be an integer >= 0"),
    "train workers negative": (TRAIN + ["--workers", "-1"], "--workers must be an integer >= 0"),
    "train seed negative": (TRAIN + ["--seed", "-1"], "--seed must be an integer >= 0"),
    "train limit 0": (TRAIN + ["--limit-train", "0"], "--limit-train must be an integer >= 1"),
    "train recipe unknown": (TRAIN + ["--recipe", "fast"], "--recipe"),
    "train on/off": (TRAIN + ["--model-ema", "maybe"], "--model-ema"),
    "train model arg without =": (TRAIN + ["--model-arg", "depth"], "--model-arg"),
    "train no model": (["train"], "--model is required"),
    "train output is a file": (TRAIN + ["--output", "{file}"],
                               "--output must be a directory path, not an existing file"),
    "train output under a file": (TRAIN + ["--output", "{file}/run"],
                                  "--output must be a path whose parent is a directory"),
    "train old flag": (TRAIN + ["--steps", "3"], "--steps"),
    # eval
    "eval eps 5": (EVAL + ["--eps", "5"], "--eps must be in (0, 1]"),
    "eval eps 0": (EVAL + ["--eps", "0"], "--eps must be a list of a number > 0"),
    "eval eps nan": (EVAL + ["--eps", "nan"], "--eps must be a list of a number > 0"),
    "eval eps fraction by zero": (EVAL + ["--eps", "1/0"], "--eps"),
    "eval step size 2": (EVAL + ["--step-size", "2"], "--step-size must be in (0, 1]"),
    "eval eot 0": (EVAL + ["--eot", "0"], "--eot must be an integer >= 1"),
    "eval attack iters 0": (EVAL + ["--attack-iters", "0"], "--attack-iters must be an integer >= 1"),
    "eval restarts 0": (EVAL + ["--restarts", "0"], "--restarts must be an integer >= 1"),
    "eval readouts 0": (EVAL + ["--readouts", "0"], "--readouts must be an integer >= 1"),
    "eval attack readout beyond readouts": (EVAL + ["--readouts", "2", "--attack-readout", "3"],
                                            "--attack-readout must be at most --readouts"),
    "eval readouts on a single-readout model": (EVAL + ["--readouts", "3"], "--readouts must be 1 for"),
    "eval attack readout on a single-readout model": (EVAL + ["--attack-readout", "2"],
                                                      "--attack-readout must be 1 for"),
    "eval batch size 0": (EVAL + ["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    "eval limit 0": (EVAL + ["--limit", "0"], "--limit must be an integer >= 1"),
    "eval severity 6": (EVAL + ["--severities", "1,6"], "--severities must be a list of an integer from 1 to 5"),
    "eval unknown corruption": (EVAL + ["--corruptions", "rain"], "--corruptions must be a list of one of"),
    "eval unknown suite": (EVAL + ["--suite", "clean,nope"], "--suite must be a comma-separated list"),
    "eval norm": (EVAL + ["--norm", "L1"], "--norm"),
    "eval out is a directory": (EVAL + ["--out", "{dir}"], "--out must be a file path, not an existing directory"),
    "eval out under a file": (EVAL + ["--out", "{file}/r.json"], "--out must be a path whose parent is a directory"),
    "eval old step flag": (EVAL + ["--steps", "3"], "--steps"),
    "eval old attack step flag": (EVAL + ["--attack-step", "1"], "--attack-step"),
    # attend
    "attend readouts 0": (ATTEND + ["--readouts", "0"], "--readouts must be an integer >= 1"),
    "attend prior scale nan": (ATTEND + ["--prior-scale", "nan"], "--prior-scale must be a number > 0"),
    "attend prior scale 0": (ATTEND + ["--prior-scale", "0"], "--prior-scale must be a number > 0"),
    "attend img size 0": (ATTEND + ["--img-size", "0"], "--img-size must be an integer >= 8"),
    "attend out is the image": (["attend", "--model", "vit_micro_patch8_64", "--image", "{file}", "--out", "{file}"],
                                "--out must differ from --image"),
    "attend out is a directory": (["attend", "--model", "vit_micro_patch8_64", "--image", "photo.png",
                                   "--out", "{dir}"], "--out must be a file path"),
    "attend no model": (["attend", "--image", "photo.png", "--out", "map.png"], "give --model"),
    "attend old flag": (ATTEND + ["--steps", "3"], "--steps"),
    # convert
    "convert std 0": (CONVERT + ["--std", "0,0,0"], "--std must be 3 finite numbers > 0"),
    "convert std nan": (CONVERT + ["--std", "nan,1,1"], "--std must be 3 finite numbers > 0"),
    "convert std two numbers": (CONVERT + ["--std", "1,1"], "--std"),
    "convert mean inf": (CONVERT + ["--mean", "inf,0,0"], "--mean must be 3 finite numbers"),
    "convert num classes 0": (CONVERT + ["--num-classes", "0"], "--num-classes must be an integer >= 1"),
    "convert destination is a file": (["convert", "release.pth", "{file}", "--model", "vit_micro_patch8_64"],
                                      "DST must be a directory path, not an existing file"),
    # report, demo, data, models
    "report out is a file": (["report", "a.json", "--out", "{file}"], "--out must be a directory path"),
    "report stem with a slash": (["report", "a.json", "--out", "{dir}", "--stem", "a/b"], "--stem"),
    "demo out is a file": (["demo", "--out", "{file}"], "--out must be a directory path"),
    "preview n 0": (PREVIEW + ["--n", "0"], "--n must be an integer >= 1"),
    "preview out is a directory": (["data", "preview", "--out", "{dir}"], "--out must be a file path"),
    "preview split": (PREVIEW + ["--split", "dev"], "--split"),
    "generate workers 0": (["data", "generate", "--workers", "0"], "--workers must be an integer >= 1"),
    "generate cache is a file": (["data", "generate", "--cache", "{file}"], "--cache must be a directory path"),
    "data without action": (["data"], "ACTION"),
    "models num classes 0": (["models", "--num-classes", "0"], "--num-classes must be an integer >= 1"),
    "unknown command": (["fly"], "fly"),
    # issue 18: outputs that are links, devices or an existing run; settings a run or model lacks
    "train output is an existing run": (TRAIN + ["--output", "{run}"],
                                        "already exists (a run of test_vit for 1 epochs): pass --resume"),
    "train resume with another model": (["train", "--resume", "{run}", "--model", "vit_micro_patch8_64"],
                                        "--model vit_micro_patch8_64 conflicts with the resumed run"),
    "train resume with another lr": (["train", "--resume", "{run}", "--lr", "1"],
                                     "--lr 1.0 conflicts with the resumed run"),
    "train resume a finished run": (["train", "--resume", "{run}"],
                                    "has finished its 1 epochs: pass --epochs N with N > 1"),
    "eval out is a symbolic link": (EVAL + ["--out", "{link}"], "--out must be a file path, not a symbolic link"),
    "eval out is a device file": (EVAL + ["--out", os.devnull], "--out must be a file path, not a device file"),
    "eval img size 0": (EVAL + ["--img-size", "0"], "--img-size must be an integer >= 8"),
    "attend out is a symbolic link": (ATTEND + ["--out", "{link}"], "--out must be a file path, not a symbolic link"),
    "attend out is a device file": (ATTEND + ["--out", os.devnull], "--out must be a file path, not a device file"),
    "attend readouts on a single-readout model": (
        ["attend", "--model", "test_vit", "--img-size", "32", "--image", "{image}", "--out", "map.png",
         "--readouts", "3"], "--readouts and --gif apply to glimpse models only"),
    "attend num classes twice": (ATTEND + ["--model-arg", "num_classes=3", "--num-classes", "4"],
                                 "--num-classes 4 conflicts with --model-arg num_classes=3"),
    "convert img size 0": (CONVERT + ["--img-size", "0"], "--img-size must be an integer >= 8"),
    "report out is a device file": (["report", "a.json", "--out", os.devnull],
                                    "--out must be a directory path, not a device file"),
    "preview out is a symbolic link": (PREVIEW[:2] + ["--out", "{link}"],
                                       "--out must be a file path, not a symbolic link"),
    "preview out is a device file": (PREVIEW[:2] + ["--out", os.devnull],
                                     "--out must be a file path, not a device file"),
}


def _finished_run(run: Path) -> Path:
    """What ``train`` leaves after one epoch of test_vit, without its weights."""
    import torch

    (run / "last").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "test_vit", "epochs": 1}))
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    torch.save({"epoch": 0}, run / "last" / "trainer_state.pt")
    return run


def _fill(args: list[str], tmp_path: Path) -> list[str]:
    """The placeholders: {file} and {dir} exist, {link} links to {file}, {image} is a small
    PNG, {run} a finished run of one epoch."""
    file = tmp_path / "existing.txt"
    file.write_text("keep me")
    folder = tmp_path / "existing-dir"
    folder.mkdir(exist_ok=True)
    places = {"{file}": file, "{dir}": folder}
    if any("{link}" in a for a in args):
        places["{link}"] = tmp_path / "link.png"
        places["{link}"].symlink_to(file)
    if any("{image}" in a for a in args):
        from PIL import Image

        places["{image}"] = tmp_path / "photo.png"
        Image.new("RGB", (40, 30), (200, 80, 20)).save(places["{image}"])
    if any("{run}" in a for a in args):
        places["{run}"] = _finished_run(tmp_path / "run")
    filled = []
    for a in args:
        for key, path in places.items():
            a = a.replace(key, str(path))
        filled.append(a)
    return filled


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): its kind and target or content."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path)] = ("link", os.readlink(path))
        elif path.is_file():
            out[str(path)] = ("file", path.read_bytes())
        else:
            out[str(path)] = ("folder",)
    return out


@pytest.mark.parametrize("case", sorted(CASES), ids=lambda case: case.replace(" ", "-"))
def test_bad_input_is_one_error_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, expected = CASES[case]
    args = _fill(args, tmp_path)
    before = _snapshot(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: "), err
    assert expected in errors[0], err
    assert "Traceback" not in err
    assert (tmp_path / "existing.txt").read_text() == "keep me"
    assert _snapshot(tmp_path) == before  # nothing written, replaced or removed


# every command that writes, given a place in a folder it may not write to
UNWRITABLE = {
    "train": (TRAIN + ["--output", "{locked}/run"], "--output"),
    "eval": (EVAL + ["--out", "{locked}/r.json"], "--out"),
    "attend": (ATTEND + ["--out", "{locked}/map.png"], "--out"),
    "report": (["report", "a.json", "--out", "{locked}/report"], "--out"),
    "data preview": (PREVIEW[:2] + ["--out", "{locked}/preview.png"], "--out"),
    "data generate": (["data", "generate", "--cache", "{locked}/cache"], "--cache"),
    "demo": (["demo", "--out", "{locked}/demo"], "--out"),
    "convert": (["convert", "release.pth", "{locked}/ck", "--model", "vit_micro_patch8_64"], "DST"),
}


@pytest.mark.parametrize("command", list(UNWRITABLE))
def test_unwritable_output_directory(command, tmp_path, capsys):
    import shutil
    import tempfile

    root = os.geteuid() == 0
    # root writes anywhere: run the command as an unprivileged user (real and effective ids,
    # which os.access checks), keeping root as the saved id to come back to
    base = Path(tempfile.mkdtemp(prefix="bioattn-locked-")) if root else tmp_path
    base.chmod(0o755)
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    args, flag = UNWRITABLE[command]
    try:
        if root:
            os.setresuid(65534, 65534, 0)
        try:
            rc = cli.main([a.replace("{locked}", str(locked)) for a in args])
        finally:
            if root:
                os.setresuid(0, 0, 0)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: {flag} must be a path in a writable directory ({locked} is not "
                                 "writable)"), err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        if base != tmp_path:
            shutil.rmtree(base)


# ------------------------------------------------------------------------------------------
# errors raised inside a command
# ------------------------------------------------------------------------------------------
class SafetensorError(Exception):
    """Stands for safetensors' error type (matched by name)."""


@pytest.mark.parametrize("exc, expected", [
    (OSError(28, "No space left on device", "/runs/x/model.safetensors"),
     "error: /runs/x/model.safetensors: No space left on device"),
    (PermissionError(13, "Permission denied", "/runs/x"), "error: /runs/x: Permission denied"),
    (ValueError("Expected more than 1 value per channel"), "error: Expected more than 1 value per channel"),
    (RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"), "error: Tried to allocate 2 GiB"),
    (SafetensorError("Error while serializing: IoError"), "error: Error while serializing: IoError"),
    (BioattnError("a clear message"), "error: a clear message"),
])
def test_library_errors_become_one_line(exc, expected, monkeypatch, capsys):
    def fail(settings):
        raise exc

    command = next(c for c in cli.COMMANDS if c.name == "models")
    monkeypatch.setattr(command, "run", fail)
    monkeypatch.delenv("BIOATTN_DEBUG", raising=False)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == expected and "Traceback" not in err


def test_a_bug_is_an_internal_error_with_a_way_to_the_traceback(monkeypatch, capsys):
    def fail(settings):
        raise KeyError("steps")

    command = next(c for c in cli.COMMANDS if c.name == "models")
    monkeypatch.setattr(command, "run", fail)
    monkeypatch.delenv("BIOATTN_DEBUG", raising=False)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error: KeyError: 'steps'") and "BIOATTN_DEBUG=1" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv("BIOATTN_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["models"])


# ------------------------------------------------------------------------------------------
# the Python API refuses the same inputs
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, expected", [
    (lambda: TrainConfig(model="vit_micro_patch8_64", epochs=0), "--epochs must be an integer >= 1"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", lr=float("nan")), "--lr must be a number > 0"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", opt="sgdd"), "--opt"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", aa="rand-zz"), "--aa"),
    (lambda: SuiteSettings(eps=[5.0]), "--eps must be in (0, 1]"),
    (lambda: SuiteSettings(eps="1/255,2"), "--eps must be in (0, 1]"),
    (lambda: SuiteSettings(eot=0), "--eot must be an integer >= 1"),
    (lambda: SuiteSettings(readouts=2, attack_readout=3), "--attack-readout must be at most --readouts"),
    (lambda: ConvertSettings(src="a", dst="b", model="m", std=[0, 0, 0]), "--std"),
    (lambda: AttendSettings(image="a.png", out="b.png", model="m", prior_scale=float("nan")), "--prior-scale"),
])
def test_python_settings_refuse_bad_values(make, expected):
    with pytest.raises(BioattnError, match=None) as info:
        make()
    assert expected in str(info.value)


def test_run_suites_refuses_readouts_a_model_lacks():
    import torch

    from bioattn.evaluate import run_suites
    from bioattn.models import create_model

    model = create_model("vit_micro_patch8_64", num_classes=3)
    data = [(torch.zeros(3, 64, 64), 0)]
    with pytest.raises(BioattnError, match="--readouts must be 1 for"):
        run_suites(model, data, ["clean"], mean=[0.5] * 3, std=[0.5] * 3, readouts=4, progress=False)
    with pytest.raises(BioattnError, match="--eot must be an integer >= 1"):
        run_suites(model, data, ["clean"], mean=[0.5] * 3, std=[0.5] * 3, eot=0, progress=False)


def test_settings_given_on_the_command_line_are_known(monkeypatch):
    seen = {}

    def record(cfg):
        seen["cfg"] = cfg
        return 0

    command = next(c for c in cli.COMMANDS if c.name == "train")
    monkeypatch.setattr(command, "run", record)
    assert cli.main(TRAIN + ["--lr", "0.001", "--batch-size", "128"]) == 0
    cfg = seen["cfg"]
    assert cfg.explicit_settings() == {"model", "lr", "batch_size"}
    assert cfg.resolved().explicit_settings() == {"model", "lr", "batch_size"}
    # built in Python: the settings that differ from their defaults
    assert TrainConfig(model="m", lr=0.001, batch_size=128).explicit_settings() == {"model", "lr"}


# ------------------------------------------------------------------------------------------
# subprocesses: no command, and both import orders
# ------------------------------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_no_command_prints_usage_and_fails():
    proc = subprocess.run([sys.executable, "-m", "bioattn"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "usage: bioattn" in proc.stderr and "train" in proc.stderr


def test_import_is_cheap_and_registers_models_when_timm_comes_later():
    proc = _python(
        "import sys, bioattn, bioattn.cli, bioattn.config\n"
        "heavy = [m for m in ('torch', 'timm', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert bioattn.BioattnError.__name__ == 'BioattnError'\n"
        "import timm\n"
        "assert 'absvit_micro_patch8_64' in timm.list_models('absvit*')\n"
        "print(type(timm.create_model('absvit_micro_patch8_64')).__name__)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "AbSViT"


def test_import_registers_models_when_timm_is_already_loaded():
    proc = _python(
        "import timm\n"
        "import bioattn\n"
        "print(type(timm.create_model('absvit_micro_patch8_64')).__name__)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "AbSViT"


def test_results_of_the_matrix_are_recorded():
    """The matrix above covers every command."""
    commands = {args[0] for args, _ in CASES.values()}
    assert commands >= {"train", "eval", "attend", "convert", "report", "demo", "data", "models"}
    assert json.dumps(sorted(CASES))  # names are plain text
