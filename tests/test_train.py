"""The trainer: a run end to end, exact resume, DDP equivalence and every bad-input case."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from bioattn import checkpoint as ckpt
from bioattn.cli import main
from bioattn.errors import BioattnError, NonFiniteLossError
from bioattn.train import TrainConfig, train
from conftest import killed_before_saving_epoch, make_image_folder, run_processes


def _config(data, out, **kw) -> TrainConfig:
    base = dict(model="test_vit", data=str(data), output=str(out), img_size=32, epochs=2,
                batch_size=8, lr=1e-3, warmup_epochs=0, progress=False, tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return ckpt.read_state_dict(path)


def _assert_same_weights(a, b, atol=0.0):
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), k


def test_train_run_writes_logs_checkpoints_and_learns(image_folder, tmp_path):
    result = train(_config(image_folder, tmp_path / "run", epochs=3, tensorboard=True))
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(r["img_per_s"] > 0 and r["train_loss"] > 0 and 0 <= r["data_wait"] < 1 for r in records)
    assert all(0 < r["epoch_cpu_seconds"] for r in records)
    assert (run / "last" / ckpt.TRAINER_STATE).exists()
    assert (run / "best" / ckpt.WEIGHTS).exists() and not (run / "best" / ckpt.TRAINER_STATE).exists()
    assert any((run / "tb").iterdir())
    meta = ckpt.read_meta(run / "best")
    assert meta["model"] == "test_vit" and meta["classes"] == ["a", "b"] and meta["img_size"] == 32
    # the two classes differ in brightness only: three epochs separate them
    assert result["best_val_top1"] >= 90.0
    model = ckpt.load_model(run / "best")
    assert model.num_classes == 2


def test_killed_then_resumed_run_ends_with_the_same_weights(image_folder, tmp_path, monkeypatch):
    # the full DeiT recipe: RandAugment, mixup/cutmix, random erasing, repeated augmentation, EMA
    uninterrupted = tmp_path / "full"
    train(_config(image_folder, uninterrupted, epochs=3))

    interrupted = tmp_path / "interrupted"
    with killed_before_saving_epoch(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        train(_config(image_folder, interrupted, epochs=3))
    assert ckpt.read_meta(interrupted / "last")["epoch"] == 1
    torch.manual_seed(1234)  # a resumed process starts from another random state
    train(TrainConfig(model="", resume=str(interrupted), progress=False, tensorboard=False))
    _assert_same_weights(_weights(uninterrupted / "last"), _weights(interrupted / "last"))
    lines = (interrupted / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def _as_torchrun_process(rank, port, world):
    """Set the environment torchrun gives process ``rank`` of ``world`` on this machine."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _ddp_worker(rank, port, world, data, out, result_dir):
    _as_torchrun_process(rank, port, world)
    result = train(_config(data, out, batch_size=4, epochs=1, device="cpu", recipe="small"))
    torch.save(result["model"].state_dict(), os.path.join(result_dir, f"rank{rank}.pt"))


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(image_folder, tmp_path):
    results = tmp_path / "ranks"
    results.mkdir()
    run_processes(_ddp_worker, (2, str(image_folder), str(tmp_path / "ddp"), str(results)), nprocs=2)
    rank0 = torch.load(results / "rank0.pt", weights_only=True)
    rank1 = torch.load(results / "rank1.pt", weights_only=True)
    _assert_same_weights(rank0, rank1)
    single = train(_config(image_folder, tmp_path / "single", batch_size=8, epochs=1, recipe="small"))
    _assert_same_weights(rank0, single["model"].state_dict(), atol=1e-5)
    torch.manual_seed(0)
    import timm

    untrained = timm.create_model("test_vit", num_classes=2, img_size=32).state_dict()
    assert any(not torch.allclose(untrained[k], v, atol=1e-4) for k, v in rank0.items())


def _ddp_nan_worker(rank, port, world, data, out, result_dir):
    import bioattn.train as tr

    _as_torchrun_process(rank, port, world)
    real = tr.compute_loss
    if rank == 1:  # one process goes wrong; every process must stop, and exit
        tr.compute_loss = lambda *a, **k: real(*a, **k) * float("nan")
    try:
        train(_config(data, out, batch_size=4, epochs=1, device="cpu", recipe="small"))
    except NonFiniteLossError as exc:
        with open(os.path.join(result_dir, f"rank{rank}.txt"), "w") as fh:
            fh.write(str(exc))


def test_ddp_run_stopped_by_a_non_finite_loss_ends_every_process(image_folder, tmp_path):
    # a non-finite loss on one rank stops all of them at the same step (no rank is left waiting
    # in a collective), and each leaves the process group and exits
    results = tmp_path / "ranks"
    results.mkdir()
    run_processes(_ddp_nan_worker, (2, str(image_folder), str(tmp_path / "ddp"), str(results)), nprocs=2)
    for rank in (0, 1):
        assert "non-finite loss at epoch 1, optimizer step 1" in (results / f"rank{rank}.txt").read_text()


# ------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing lost
# ------------------------------------------------------------------------------------------
def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_missing_data_path(capsys, tmp_path):
    msg = _cli_error(capsys, ["train", "--model", "test_vit", "--data", str(tmp_path / "nowhere"),
                              "--output", str(tmp_path / "r"), "--no-progress"])
    assert "data path not found" in msg


def test_empty_class_folder(capsys, tmp_path):
    data = make_image_folder(tmp_path / "d")
    (data / "train" / "c").mkdir()
    msg = _cli_error(capsys, ["train", "--model", "test_vit", "--data", str(data),
                              "--output", str(tmp_path / "r"), "--no-progress"])
    assert "empty class folder" in msg and "c" in msg


def test_unknown_model_name(capsys, tmp_path, image_folder):
    msg = _cli_error(capsys, ["train", "--model", "no_such_model", "--data", str(image_folder),
                              "--output", str(tmp_path / "r"), "--no-progress"])
    assert "unknown model 'no_such_model'" in msg


def test_corrupt_image_is_named_or_skipped_and_counted(capsys, tmp_path):
    data = make_image_folder(tmp_path / "d")
    bad = data / "train" / "a" / "a_3.png"
    bad.write_bytes(b"\x89PNG broken")
    args = ["train", "--model", "test_vit", "--data", str(data), "--img-size", "32", "--epochs", "1",
            "--batch-size", "8", "--no-progress"]
    msg = _cli_error(capsys, args + ["--output", str(tmp_path / "r1")])
    assert "cannot read image" in msg and "a_3.png" in msg
    assert main(args + ["--output", str(tmp_path / "r2"), "--skip-bad-images"]) == 0
    record = json.loads((tmp_path / "r2" / "log.jsonl").read_text().splitlines()[-1])
    assert record["skipped_images"] >= 1


def test_checkpoint_of_another_model_or_class_count_is_refused(image_folder, tmp_path, capsys):
    train(_config(image_folder, tmp_path / "run", epochs=1))
    with pytest.raises(BioattnError, match="holds a test_vit model"):
        ckpt.load_model(tmp_path / "run" / "best", model_name="test_resnet")
    with pytest.raises(BioattnError, match="has 2 classes"):
        ckpt.load_model(tmp_path / "run" / "best", num_classes=10)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(image_folder, tmp_path, monkeypatch):
    import bioattn.train as tr

    real = tr.compute_loss
    calls = {"n": 0}
    steps_per_epoch = 24 // 8

    def nan_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > steps_per_epoch else loss

    monkeypatch.setattr(tr, "compute_loss", nan_in_epoch_two)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 2") as info:
        train(_config(image_folder, tmp_path / "run", epochs=3))
    assert "last good checkpoint" in str(info.value)
    meta = ckpt.read_meta(tmp_path / "run" / "last")
    assert meta["epoch"] == 1
    state = ckpt.read_state_dict(tmp_path / "run" / "last")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_non_finite_loss_mid_epoch_stops_within_sync_every_steps(image_folder, tmp_path, monkeypatch):
    # 24 images in batches of 4: 6 steps per epoch; the loss is read every 4 steps and at the end
    import bioattn.train as tr

    real = tr.compute_loss
    calls = {"n": 0}
    first_bad = 8  # epoch 2, its second step

    def nan_from_step_eight(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= first_bad else loss

    monkeypatch.setattr(tr, "compute_loss", nan_from_step_eight)
    with pytest.raises(NonFiniteLossError, match=f"non-finite loss at epoch 2, optimizer step {first_bad}:"):
        train(_config(image_folder, tmp_path / "run", epochs=3, batch_size=4, sync_every=4))
    # stopped at the check after step 10 (the 4th of epoch 2): within 4 steps of the first bad one
    assert calls["n"] == 10
    assert ckpt.read_meta(tmp_path / "run" / "last")["epoch"] == 1
    saved = ckpt.read_state_dict(tmp_path / "run" / "last")
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    state = torch.load(tmp_path / "run" / "last" / ckpt.TRAINER_STATE, weights_only=True)
    moments = [v for group in state["optimizer"]["state"].values() for v in group.values() if v.is_floating_point()]
    assert moments and all(torch.isfinite(v).all() for v in moments)


def test_disk_full_while_saving_keeps_previous_checkpoint(image_folder, tmp_path, monkeypatch):
    real = ckpt.write_checkpoint_files
    calls = {"n": 0}

    def disk_full_on_second_epoch(folder, model, meta):
        calls["n"] += 1
        if meta.get("epoch") == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(folder, model, meta)

    monkeypatch.setattr(ckpt, "write_checkpoint_files", disk_full_on_second_epoch)
    with pytest.raises(BioattnError, match="No space left on device; the previous (checkpoint|copy) is intact"):
        train(_config(image_folder, tmp_path / "run", epochs=2))
    assert ckpt.read_meta(tmp_path / "run" / "last")["epoch"] == 1
    assert set(ckpt.read_state_dict(tmp_path / "run" / "last"))
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
    assert leftovers == []


# ------------------------------------------------------------------------------------------
# run directories: a run is never replaced by accident; resuming keeps its settings
# ------------------------------------------------------------------------------------------
def test_existing_run_is_refused_unless_overwritten(image_folder, tmp_path):
    run = tmp_path / "run"
    train(_config(image_folder, run, epochs=1))
    before = (run / "log.jsonl").read_text()
    with pytest.raises(BioattnError, match=r"already exists \(a run of test_vit for 1 epochs\).*--resume"):
        train(_config(image_folder, run, epochs=1, lr=5e-4))
    assert (run / "log.jsonl").read_text() == before
    (run / "notes.txt").write_text("mine")
    train(_config(image_folder, run, epochs=1, lr=5e-4, overwrite=True))
    assert len((run / "log.jsonl").read_text().splitlines()) == 1  # not appended to the old log
    assert json.loads((run / "config.json").read_text())["lr"] == 5e-4
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files were replaced


def test_output_that_is_a_file_is_refused(image_folder, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    with pytest.raises(BioattnError, match="not an existing file|is a file"):
        train(_config(image_folder, target, epochs=1))
    assert target.read_text() == "keep"


def test_resume_refuses_conflicting_settings_and_finished_runs(image_folder, tmp_path):
    run = tmp_path / "run"
    train(_config(image_folder, run, epochs=1))
    with pytest.raises(BioattnError, match=r"--lr 1.0 conflicts with the resumed run"):
        train(TrainConfig(model="", resume=str(run), lr=1.0, progress=False))
    with pytest.raises(BioattnError, match=r"--model other conflicts"):
        train(TrainConfig(model="other", resume=str(run), progress=False))
    with pytest.raises(BioattnError, match=r"has finished its 1 epochs: pass --epochs N with N > 1"):
        train(TrainConfig(model="", resume=str(run), progress=False))
    # settings of speed alone may change on resuming
    result = train(TrainConfig(model="test_vit", resume=str(run), epochs=2, sync_every=7, progress=False,
                               tensorboard=False))
    assert result["metrics"]["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["sync_every"] == 7


def test_warm_up_is_at_most_half_the_run():
    from bioattn.train import warmup_epochs

    cfg = TrainConfig(model="m", epochs=1).resolved()
    assert cfg.warmup_epochs == 1 and warmup_epochs(cfg) == 0
    assert warmup_epochs(TrainConfig(model="m", data="/x", epochs=300).resolved()) == 5


def test_disk_full_on_the_command_line_is_one_line_and_exit_status_2(image_folder, tmp_path, monkeypatch,
                                                                     capsys):
    real = ckpt.write_checkpoint_files

    def disk_full_on_second_epoch(folder, model, meta):
        if meta.get("epoch") == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(folder, model, meta)

    monkeypatch.setattr(ckpt, "write_checkpoint_files", disk_full_on_second_epoch)
    run = tmp_path / "run"
    assert main(["train", "--model", "test_vit", "--data", str(image_folder), "--output", str(run),
                 "--img-size", "32", "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "0",
                 "--no-progress", "--no-tensorboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "error" in line.lower()] == [err[-1]] and "Traceback" not in "".join(err)
    assert err[-1].startswith("error: ") and "No space left on device; the previous" in err[-1]
    assert ckpt.read_meta(run / "last")["epoch"] == 1


def test_a_run_folder_follows_the_umask(image_folder, tmp_path):
    old = os.umask(0o022)
    try:
        train(_config(image_folder, tmp_path / "run", epochs=1, tensorboard=True))
    finally:
        os.umask(old)
    paths = [tmp_path / "run", *(tmp_path / "run").rglob("*")]
    assert len(paths) > 8
    for path in paths:
        assert (path.stat().st_mode & 0o777) == (0o755 if path.is_dir() else 0o644), path


def test_schedule_never_rises_above_a_small_peak(image_folder, tmp_path):
    # the recipe's floor (min_lr 1e-5) is above this peak: the schedule stays at or below it
    train(_config(image_folder, tmp_path / "run", epochs=2, lr=1e-6))
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(r["lr"] <= 1e-6 for r in records)
