"""The one rule for a run directory that may already hold a run (bioattn.runs.prior_run, carried
out by bioattn.train.train_or_reuse): reuse a finished run of the same settings, resume an
unfinished one, refuse (or with replace, train over) a run of other settings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bioattn.config import TrainConfig
from bioattn.errors import BioattnError
from bioattn.runs import prior_run
from bioattn.train import train_or_reuse
from conftest import killed_before_saving_epoch

TINY = "embedded:size=32,train=64,val=16,test=16"


def _config(run_dir, **changes) -> TrainConfig:
    base = dict(model="rvt_micro", data=TINY, img_size=32, epochs=2, batch_size=16, lr=1e-3, warmup_epochs=0,
                output=str(run_dir), progress=False, tensorboard=False)
    return TrainConfig(**dict(base, **changes))


def test_a_run_is_trained_resumed_reused_and_a_foreign_run_refused(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = _config(run_dir)
    assert prior_run(run_dir, cfg) == "new"
    with killed_before_saving_epoch(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        train_or_reuse(cfg)
    assert prior_run(run_dir, cfg) == "unfinished"
    said: list[str] = []
    assert train_or_reuse(cfg, log=said.append) == "resumed" and said == [f"resuming {run_dir}"]
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2
    stamp = (run_dir / "best" / "model.safetensors").stat().st_mtime_ns
    # how the run is carried out (progress, device, workers) does not make it another run
    assert train_or_reuse(dataclasses.replace(cfg, progress=True, workers=0)) == "reused"
    assert (run_dir / "best" / "model.safetensors").stat().st_mtime_ns == stamp
    other = _config(run_dir, lr=2e-3)
    with pytest.raises(BioattnError, match=r"holds a run with other settings \(lr 0.001 there, 0.002 here\)"):
        prior_run(run_dir, other)
    assert prior_run(run_dir, other, replace=True) == "new"
    assert train_or_reuse(other, replace=True) == "trained"
    assert json.loads((run_dir / "config.json").read_text())["lr"] == 2e-3


def test_files_that_are_no_run_are_refused_unless_replaced(tmp_path):
    run_dir = tmp_path / "notes"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(BioattnError, match="holds files but no bioattn run"):
        prior_run(run_dir, _config(run_dir))
    assert prior_run(run_dir, _config(run_dir), replace=True) == "new"
    (tmp_path / "file").write_text("x")
    with pytest.raises(BioattnError, match="is a file"):
        prior_run(tmp_path / "file", _config(tmp_path / "elsewhere"))


def test_what_the_user_gave_is_a_real_setting_that_copies_keep():
    from bioattn.cli import build_parser, settings_from

    args = build_parser().parse_args(["train", "--model", "rvt_micro", "--epochs", "3"])
    cfg = settings_from(args, TrainConfig)
    assert {"model", "epochs"} <= cfg.explicit_settings() and "lr" not in cfg.explicit_settings()
    # a copy and the resolved settings keep the record (it used to live outside the fields)
    for copy in (dataclasses.replace(cfg, progress=False), cfg.resolved()):
        assert copy.explicit_settings() == cfg.explicit_settings()
    # built in Python: the settings that differ from their defaults
    assert TrainConfig(model="rvt_micro", lr=0.1).explicit_settings() == {"model", "lr"}
