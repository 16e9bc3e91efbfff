"""Progress display: readable lines in a log file, rich bars on a terminal only."""

from __future__ import annotations

import io

from bioattn import progress as progress_module
from bioattn.progress import Progress, progress_bar


def test_log_file_gets_whole_lines_at_start_interval_and_end(monkeypatch):
    clock = iter([0.0, 1.0, 45.0, 46.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    long_info = "loss 0.1234 acc  99.0% lr 1.00e-03 12345 img/s " + "x" * 80
    with Progress(True, stream=stream) as p:
        task = p.task("epoch 1/3", 3)
        p.update(task, info="early")  # t = 1 s: within the interval, no line
        p.update(task, info=long_info)  # t = 45 s: a line
        p.update(task, info="last")  # t = 46 s: the task is complete, a line
        p.log("done")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "epoch 1/3: 0/3 (0 s)"
    assert lines[1] == f"epoch 1/3: 2/3 (45 s) {long_info}"  # never cut to a terminal width
    assert lines[2] == "epoch 1/3: 3/3 (46 s) last"
    assert lines[3] == "done"
    assert len(lines) == 4


def test_disabled_progress_prints_only_log_messages():
    stream = io.StringIO()
    with Progress(False, stream=stream) as p:
        task = p.task("x", 2)
        p.update(task, 2)
        p.log("message")
    assert stream.getvalue() == "message\n"


def test_progress_bar_counts_every_advance(capsys):
    with progress_bar("suite", 4) as advance:
        advance(1)
        advance(3)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("suite: 0/4") and err[-1].startswith("suite: 4/4")
