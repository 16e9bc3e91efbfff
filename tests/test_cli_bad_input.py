"""Bad input on every command: one `error:` line naming the flag, exit status 2, no traceback.

The matrix runs the command line in-process; each case stops before any training or
evaluation. Errors raised inside a command by the file system or a library are turned into one
line at the command boundary; a bug is reported as an internal error.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bioattn import cli
from bioattn.config import (
    AttendSettings,
    ConvertSettings,
    DomainsSettings,
    EvalSettings,
    SuiteSettings,
    TrainConfig,
    key_values,
)
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
    # settings given twice, or that the task leaves unused
    (lambda: TrainConfig(model="vit_micro_patch8_64", img_size=32, model_args={"img_size": 48}),
     "--img-size 32 conflicts with --model-arg img_size=48"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", drop_path=0.1, model_args={"drop_path_rate": 0.3}),
     "--drop-path 0.1 conflicts with --model-arg drop_path_rate=0.3"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", model_args={"img_size": "big"}),
     "--model-arg img_size must be an integer >= 8"),
    (lambda: TrainConfig(model="gfnet_micro", model_args={"mixer": "vars_s", "lam": float("nan")}), "(lam is nan)"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", data="embedded:seg", smoothing=0.1),
     "--smoothing 0.1: segmentation training does not use it"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", data="coco:/data/coco", mixup=0.8, cutmix=1.0),
     "--mixup 0.8, --cutmix 1.0: multilabel training does not use them"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", decode="gpu", aa="none", device="cpu"),
     "--decode gpu decodes the images on the GPU; --device cpu has none"),
    (lambda: TrainConfig(model="vit_micro_patch8_64", compile_mode="max-autotune"), "--compile-mode max-autotune"),
    (lambda: SuiteSettings(inference="slide", slide_crop=32, slide_stride=48), "--slide-stride 48 is larger"),
    (lambda: SuiteSettings(slide_stride=8), "--slide-stride set the sliding windows of --inference slide"),
    (lambda: EvalSettings(model="m", model_args={"lam": float("inf")}), "(lam is inf)"),
    (lambda: DomainsSettings(data="pacs", models=["gfnet_micro[lam=nan]"], out="dg"), "every argument a finite"),
])
def test_python_settings_refuse_bad_values(make, expected):
    with pytest.raises(BioattnError, match=None) as info:
        make()
    assert expected in str(info.value)


def test_a_setting_given_as_a_model_argument_is_recorded_as_the_setting():
    # what a run records is what it ran: the data is read at the model argument's size
    cfg = TrainConfig(model="vit_micro_patch8_64", model_args={"img_size": 48, "drop_path_rate": 0.2}).resolved()
    assert cfg.img_size == 48 and cfg.drop_path == 0.2
    assert cfg.model_args == {"img_size": 48, "drop_path_rate": 0.2}
    agreed = TrainConfig(model="vit_micro_patch8_64", img_size=48, model_args={"img_size": 48}).resolved()
    assert agreed.img_size == 48
    # nan and inf are read as the numbers they name (and then refused as model arguments)
    parsed = key_values(["lam=nan", "a=-inf", "b=1e-3", "c=vars_s", "d=[1, 2]"])
    assert math.isnan(parsed["lam"]) and parsed["a"] == -math.inf
    assert parsed["b"] == 1e-3 and parsed["c"] == "vars_s" and parsed["d"] == [1, 2]


def test_the_recipe_leaves_unused_augmentation_off_for_segmentation():
    # the deit recipe's RandAugment and random erasing would act on images without their label maps
    cfg = TrainConfig(model="vit_micro_patch8_64", data="voc:/data/voc", recipe="deit").resolved()
    assert (cfg.aa, cfg.reprob, cfg.mixup, cfg.cutmix, cfg.smoothing) == (None, 0.0, 0.0, 0.0, 0.0)
    multi = TrainConfig(model="vit_micro_patch8_64", data="coco:/data/coco").resolved()
    assert multi.aa == "rand-m9-mstd0.5-inc1" and multi.reprob == 0.25 and multi.mixup == 0.0


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
    # the newer parts: every task, domains and class lists
    names = " ".join(TASK_CASES)
    for part in ("segmentation", "voc", "ade20k", "cityscapes", "multi-label", "coco", "domains", "class list",
                 "eval", "model arg"):
        assert part in names, part


# ------------------------------------------------------------------------------------------
# the newer parts: segmentation, multi-label, domains, class lists, the trainer's and the
# evaluator's newer flags, and settings that contradict each other. Each case builds its
# inputs in tmp_path, then must end in one error line with nothing in tmp_path written,
# replaced or removed.
# ------------------------------------------------------------------------------------------
FAST = ["--epochs", "1", "--batch-size", "2", "--img-size", "32", "--device", "cpu", "--no-progress",
        "--no-tensorboard"]
TINY = "embedded:size=32,train=16,val=8,test=8"
TINY_SEG = "embedded:seg,size=32,train=16,val=8,test=8"
TINY_MULTI = "embedded:multi,size=32,train=16,val=8,test=8"
DOMAINS = ["domains", "--models", "vit_micro_patch8_64"]


def _png(path: Path, array) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array, dtype=np.uint8)
    Image.fromarray(array, "RGB" if array.ndim == 3 else "L").save(path)
    return path


def _voc(tmp: Path, label=None, val_label=None) -> Path:
    """A VOC2012 tree of three 24x32 images (two train, one val); ``label`` / ``val_label``
    replace the label map of the first training / the validation image."""
    import numpy as np

    base = tmp / "voc" / "VOCdevkit" / "VOC2012"
    names = ["2007_000001", "2007_000002", "2007_000003"]
    for i, name in enumerate(names):
        _png(base / "JPEGImages" / f"{name}.jpg", np.full((24, 32, 3), 40 * i))
        _png(base / "SegmentationClass" / f"{name}.png", np.tile(np.arange(32) % 3, (24, 1)))
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (lists / "val.txt").write_text(names[2] + "\n")
    for name, replaced in ((names[0], label), (names[2], val_label)):
        if replaced is not None:
            target = base / "SegmentationClass" / f"{name}.png"
            if isinstance(replaced, bytes):
                target.write_bytes(replaced)
            else:
                _png(target, replaced)
    return tmp / "voc"


def _dir(tmp: Path) -> Path:
    """An empty data root (next to the run directory, not around it)."""
    (tmp / "data").mkdir(exist_ok=True)
    return tmp / "data"


def _folder(tmp: Path) -> Path:
    from conftest import make_image_folder

    return make_image_folder(tmp / "images", classes=("a", "b"), per_class=4, size=16)


def _class_list(tmp: Path, text: str | bytes) -> Path:
    path = tmp / "classes.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _domain_root(tmp: Path, domains=("a", "b", "c"), classes=("x", "y"), per_class: int = 3) -> Path:
    import numpy as np

    root = tmp / "domains"
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _png(root / domain / name / f"{i}.png", np.full((12, 12, 3), 30 * c + 10 * d + i))
    return root


def _domains_root_without(tmp: Path, domain: str, class_name: str | None = None) -> Path:
    import shutil

    root = _domain_root(tmp)
    for name in ([class_name] if class_name else ["x", "y"]):
        shutil.rmtree(root / domain / name)
        if class_name:
            (root / domain / name).mkdir()  # an empty class folder stays
    return root


def _results_not_ours(tmp: Path, name: str) -> list[str]:
    root = _domain_root(tmp)
    (tmp / "dg").mkdir()
    (tmp / "dg" / name).write_text('{"mine": true}\n' if name.endswith(".json") else "# my notes\n")
    return DOMAINS + ["--data", str(root), "--out", str(tmp / "dg")] + FAST


def _init_in_output(tmp: Path) -> list[str]:
    import torch

    run = tmp / "run"
    (run / "best").mkdir(parents=True)
    torch.save({}, run / "best" / "weights.pth")
    (run / "config.json").write_text("{}")
    return TRAIN + ["--data", TINY, "--output", str(run), "--overwrite", "--init",
                    str(run / "best" / "weights.pth")] + FAST


# name -> (function of tmp_path giving the arguments, text the error line must contain)
TASK_CASES = {
    # segmentation
    "segmentation batch size 1": (lambda tmp: TRAIN + ["--data", TINY_SEG] + FAST + ["--batch-size", "1"],
                                  "--batch-size 1: upernet_vit_micro_patch8_64 has batch normalisation"),
    "segmenter on classification data": (
        lambda tmp: ["train", "--model", "upernet_vit_micro_patch8_64", "--data", TINY] + FAST,
        "--model upernet_vit_micro_patch8_64 is a segmentation model"),
    "segmentation with RandAugment": (lambda tmp: TRAIN + ["--data", TINY_SEG, "--aa", "rand-m9"] + FAST,
                                      "--aa 'rand-m9': segmentation training does not use it"),
    "segmentation with random erasing": (lambda tmp: TRAIN + ["--data", TINY_SEG, "--reprob", "0.25"] + FAST,
                                         "--reprob 0.25: segmentation training does not use it"),
    "segmentation with label smoothing": (lambda tmp: TRAIN + ["--data", TINY_SEG, "--smoothing", "0.1"] + FAST,
                                          "--smoothing 0.1: segmentation training does not use it"),
    "segmentation with cutmix": (lambda tmp: TRAIN + ["--data", TINY_SEG, "--cutmix", "1"] + FAST,
                                 "--cutmix 1.0: segmentation training does not use it"),
    "segmentation task on classification data": (
        lambda tmp: TRAIN + ["--data", TINY, "--task", "segmentation"] + FAST,
        "--task segmentation needs segmentation data"),
    "segmentation and multi-label in one spec": (lambda tmp: TRAIN + ["--data", "embedded:seg,multi"] + FAST,
                                                 "two tasks in 'embedded:seg,multi'"),
    "voc root without its layout": (lambda tmp: TRAIN + ["--data", f"voc:{_dir(tmp)}"] + FAST,
                                    "VOCdevkit/VOC2012/JPEGImages"),
    "voc val list empty": (
        lambda tmp: (_voc(tmp), (tmp / "voc/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text(""),
                     TRAIN + ["--data", f"voc:{tmp / 'voc'}"] + FAST)[-1],
        "val.txt lists no images"),
    "voc label file missing": (
        lambda tmp: (_voc(tmp), (tmp / "voc/VOCdevkit/VOC2012/SegmentationClass/2007_000003.png").unlink(),
                     TRAIN + ["--data", f"voc:{tmp / 'voc'}"] + FAST)[-1],
        "have no label file"),
    "voc validation label not a PNG": (
        lambda tmp: TRAIN + ["--data", f"voc:{_voc(tmp, val_label=b'not a png')}"] + FAST,
        "cannot read label map"),
    "voc validation label in RGB colours": (
        lambda tmp: TRAIN + ["--data", f"voc:{_voc(tmp, val_label=[[[0, 128, 0]] * 32] * 24)}"] + FAST,
        "has PIL mode RGB; expected class indices"),
    "voc validation label with a class beyond the set": (
        lambda tmp: TRAIN + ["--data", f"voc:{_voc(tmp, val_label=[[60] * 32] * 24)}"] + FAST,
        "holds values 60 outside [0, 21)"),
    "voc validation label of another size": (
        lambda tmp: TRAIN + ["--data", f"voc:{_voc(tmp, val_label=[[1] * 12] * 10)}"] + FAST,
        "is 12x10 but its image"),
    "ade20k root without its layout": (lambda tmp: TRAIN + ["--data", f"ade20k:{_dir(tmp)}"] + FAST,
                                       "does not have the expected layout"),
    "cityscapes root without its layout": (lambda tmp: TRAIN + ["--data", f"cityscapes:{_dir(tmp)}"] + FAST,
                                           "does not have the expected layout"),
    "train output inside the voc root": (
        lambda tmp: TRAIN + ["--data", f"voc:{_voc(tmp)}", "--output", str(tmp / "voc" / "run")] + FAST,
        "--output " + "{tmp}/voc/run lies inside the data root"),
    # multi-label
    "multi-label with label smoothing": (lambda tmp: TRAIN + ["--data", TINY_MULTI, "--smoothing", "0.1"] + FAST,
                                         "--smoothing 0.1: multilabel training does not use it"),
    "multi-label with mixup": (lambda tmp: TRAIN + ["--data", TINY_MULTI, "--mixup", "0.8"] + FAST,
                               "--mixup 0.8: multilabel training does not use it"),
    "multi-label task on segmentation data": (lambda tmp: TRAIN + ["--data", TINY_SEG, "--task", "multilabel"] + FAST,
                                              "--task multilabel needs multilabel data"),
    "coco without annotations": (lambda tmp: TRAIN + ["--data", f"coco:{_dir(tmp)}"] + FAST,
                                 "COCO annotation file not found"),
    "coco annotations not JSON": (
        lambda tmp: ((_dir(tmp) / "annotations").mkdir(),
                     (tmp / "data/annotations/instances_train2017.json").write_text("{x"),
                     TRAIN + ["--data", f"coco:{tmp / 'data'}"] + FAST)[-1],
        "is not valid JSON"),
    # class lists
    "class list lists a class the folder lacks": (
        lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--classes", str(_class_list(tmp, "a\nzebra\n"))] + FAST,
        "lacks 1 of the 2 listed classes: zebra"),
    "class list names a class twice": (
        lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--classes", str(_class_list(tmp, "a\nb\na\n"))] + FAST,
        "names 1 class(es) twice: 'a' (lines 1 and 3)"),
    "class list names no class": (
        lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--classes", str(_class_list(tmp, "# none\n\n"))] + FAST,
        "names no class"),
    "class list not UTF-8": (
        lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--classes", str(_class_list(tmp, b"a\n\xff\xfeb\n"))]
        + FAST, "is not UTF-8 text"),
    "class list is a folder": (lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--classes", str(tmp)] + FAST,
                               "cannot read class list"),
    "class list missing": (lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--classes", str(tmp / "no.txt")] + FAST,
                           "cannot read class list"),
    "class list with segmentation data": (
        lambda tmp: TRAIN + ["--data", TINY_SEG, "--classes", str(_class_list(tmp, "a\n"))] + FAST,
        "--classes selects class folders of an image-folder data set"),
    "class list with the embedded data": (
        lambda tmp: TRAIN + ["--data", TINY, "--classes", str(_class_list(tmp, "a\n"))] + FAST,
        "a class subset selects class folders of an image folder"),
    # settings given twice, or that contradict each other or the machine
    "model arg num_classes other than the data's": (
        lambda tmp: TRAIN + ["--data", TINY, "--model-arg", "num_classes=5"] + FAST,
        "--model-arg num_classes=5 conflicts with the data"),
    "model arg img_size other than --img-size": (
        lambda tmp: TRAIN + ["--data", TINY, "--model-arg", "img_size=48"] + FAST,
        "--img-size 32 conflicts with --model-arg img_size=48"),
    "model arg drop_path_rate other than --drop-path": (
        lambda tmp: TRAIN + ["--data", TINY, "--model-arg", "drop_path_rate=0.2", "--drop-path", "0.1"] + FAST,
        "--drop-path 0.1 conflicts with --model-arg drop_path_rate=0.2"),
    "model arg lam nan": (
        lambda tmp: ["train", "--model", "gfnet_micro", "--data", TINY, "--model-arg", "mixer=vars_s",
                     "--model-arg", "lam=nan"] + FAST,
        "--model-arg must be KEY=VALUE constructor arguments with finite numbers (lam is nan)"),
    "model arg lam not a number": (
        lambda tmp: ["train", "--model", "gfnet_micro", "--data", TINY, "--model-arg", "mixer=vars_s",
                     "--model-arg", "lam=abc"] + FAST,
        "lam must be a number >= 0, got 'abc'"),
    "model arg lam not a number, unused by the attention": (
        lambda tmp: ["train", "--model", "rvt_micro", "--data", TINY, "--model-arg", "attention=vars_s",
                     "--model-arg", "lam=abc"] + FAST,
        "lam must be a number >= 0, got 'abc'"),
    "model arg infinite": (lambda tmp: TRAIN + ["--data", TINY, "--model-arg", "drop_rate=inf"] + FAST,
                           "(drop_rate is inf)"),
    "decode gpu on the cpu": (lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--decode", "gpu", "--aa", "none"]
                              + FAST, "--decode gpu decodes the images on the GPU; --device cpu has none"),
    "compile mode without compile": (lambda tmp: TRAIN + ["--data", TINY, "--compile-mode", "max-autotune"] + FAST,
                                     "--compile-mode max-autotune applies to a compiled model"),
    "train output inside the image folder": (
        lambda tmp: TRAIN + ["--data", str(_folder(tmp)), "--output", str(tmp / "images" / "train" / "run")] + FAST,
        "lies inside the data folder"),
    "init weights inside the output it replaces": (_init_in_output, "lies in the run directory"),
    # evaluation flags
    "eval slide inference on a classifier": (lambda tmp: EVAL + ["--inference", "slide", "--data", TINY],
                                             "--inference slide sets how a segmentation model sees its images"),
    "eval slide crop without slide inference": (lambda tmp: EVAL + ["--slide-crop", "32"],
                                                "--slide-crop set the sliding windows of --inference slide"),
    "eval slide stride larger than the crop": (
        lambda tmp: EVAL + ["--inference", "slide", "--slide-crop", "32", "--slide-stride", "48"],
        "--slide-stride 48 is larger than --slide-crop 32"),
    "eval slide stride larger than the model's window": (
        lambda tmp: ["eval", "--model", "upernet_vit_micro_patch8_64", "--model-arg", "img_size=32", "--inference",
                     "slide", "--slide-stride", "48", "--data", "embedded:seg,size=64,train=16,val=8,test=8",
                     "--limit", "2", "--workers", "0"],
        "a sliding-window stride (48x48) larger than the window (32x32)"),
    "eval slide crop 0": (lambda tmp: EVAL + ["--inference", "slide", "--slide-crop", "0"],
                          "--slide-crop must be an integer >= 8"),
    "eval segmenter on classification data": (
        lambda tmp: ["eval", "--model", "upernet_vit_micro_patch8_64", "--data", TINY],
        "a segmentation model cannot be evaluated on classification data"),
    "eval classifier on segmentation data": (lambda tmp: EVAL + ["--data", TINY_SEG],
                                             "is not a segmentation model"),
    "eval attack on multi-label data": (lambda tmp: EVAL + ["--data", TINY_MULTI, "--suite", "pgd"],
                                        "score classifiers; a multilabel model has clean, glimpses"),
    "eval preset on a single-readout model": (lambda tmp: EVAL + ["--preset", "rsrnn-pgd", "--data", TINY],
                                              "--preset rsrnn-pgd reads the prediction after every glimpse"),
    "eval out inside the data folder": (
        lambda tmp: EVAL + ["--data", str(_folder(tmp)), "--out", str(tmp / "images" / "val" / "r.json")],
        "lies inside the data folder"),
    "eval model arg nan": (lambda tmp: EVAL + ["--model-arg", "drop_rate=nan"], "(drop_rate is nan)"),
    # domains
    "domains multi-label data": (lambda tmp: DOMAINS + ["--data", TINY_MULTI, "--out", str(tmp / "dg")] + FAST,
                                 "holds multilabel labels; leave-one-domain-out trains and tests classifiers"),
    "domains segmentation data": (lambda tmp: DOMAINS + ["--data", TINY_SEG, "--out", str(tmp / "dg")] + FAST,
                                  "holds segmentation labels"),
    "domains embedded data with a domain": (
        lambda tmp: DOMAINS + ["--data", "embedded:domain=sketch", "--out", str(tmp / "dg")] + FAST,
        "give the embedded options without domain="),
    "domains out inside the data root": (
        lambda tmp: DOMAINS + ["--data", str(_domain_root(tmp)), "--out", str(tmp / "domains" / "dg")] + FAST,
        "--out {tmp}/domains/dg lies inside the data root"),
    "domains data root inside a run folder": (
        lambda tmp: (_domain_root(tmp / "vit_micro_patch8_64"),
                     DOMAINS + ["--data", str(tmp / "vit_micro_patch8_64" / "domains"), "--out", str(tmp)] + FAST)[-1],
        "lies inside the run folder of vit_micro_patch8_64"),
    "domains results.json it did not write": (lambda tmp: _results_not_ours(tmp, "results.json"),
                                              "holds a results.json that bioattn domains did not write"),
    "domains results.md it did not write": (lambda tmp: _results_not_ours(tmp, "results.md"),
                                            "holds a results.md that bioattn domains did not write"),
    "domains root with one domain": (
        lambda tmp: DOMAINS + ["--data", str(_domain_root(tmp, domains=("only",))), "--out", str(tmp / "dg")] + FAST,
        "holds one domain folder (only)"),
    "domains root with an empty domain": (
        lambda tmp: DOMAINS + ["--data", str(_domains_root_without(tmp, "b")), "--out", str(tmp / "dg")] + FAST,
        "no class folders in {tmp}/domains/b"),
    "domains class folder empty in one domain": (
        lambda tmp: DOMAINS + ["--data", str(_domains_root_without(tmp, "b", "x")), "--out", str(tmp / "dg")] + FAST,
        "empty class folder(s) in {tmp}/domains/b: x"),
    "domains root is a file": (lambda tmp: DOMAINS + ["--data", str(_class_list(tmp, "a")), "--out", str(tmp / "dg")]
                               + FAST, "domain-folder root {tmp}/classes.txt not a folder"),
    "domains unknown test domain": (
        lambda tmp: DOMAINS + ["--data", str(_domain_root(tmp)), "--out", str(tmp / "dg"), "--test-domains", "z"]
        + FAST, "unknown domain 'z' in --test-domains"),
    "domains holdout 1": (lambda tmp: DOMAINS + ["--data", str(_domain_root(tmp)), "--out", str(tmp / "dg"),
                                                 "--holdout", "1"] + FAST, "--holdout must be a number in (0, 1)"),
    "domains model argument nan": (
        lambda tmp: ["domains", "--models", "gfnet_micro[mixer=vars_s,lam=nan]", "--data", str(_domain_root(tmp)),
                     "--out", str(tmp / "dg")] + FAST, "every argument a finite number"),
    "domains init missing": (
        lambda tmp: DOMAINS + ["--data", str(_domain_root(tmp)), "--out", str(tmp / "dg"), "--init",
                               str(tmp / "no.pth")] + FAST, "--init " + "{tmp}/no.pth not found"),
}


@pytest.mark.parametrize("case", sorted(TASK_CASES), ids=lambda case: case.replace(" ", "-"))
def test_bad_input_of_the_newer_parts_is_one_error_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make, expected = TASK_CASES[case]
    args = [str(a) for a in make(tmp_path)]
    before = _snapshot(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: "), err
    assert expected.replace("{tmp}", str(tmp_path)) in errors[0], err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before  # nothing written, replaced or removed


@pytest.mark.parametrize("error", ["ValueError", "RuntimeError"])
def test_a_value_or_runtime_error_raised_in_bioattns_own_code_is_an_internal_error(error, monkeypatch, capsys):
    # a function whose code lies in the package, as a failed check or operation of bioattn's would
    namespace: dict = {}
    source = f"def fail(settings):\n    raise {error}('shapes (2, 3) and (4, 5) cannot be multiplied')\n"
    exec(compile(source, cli.__file__, "exec"), namespace)
    command = next(c for c in cli.COMMANDS if c.name == "models")
    monkeypatch.setattr(command, "run", namespace["fail"])
    monkeypatch.delenv("BIOATTN_DEBUG", raising=False)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: internal error: {error}: shapes") and "BIOATTN_DEBUG=1" in err
