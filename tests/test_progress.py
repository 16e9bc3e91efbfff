"""Progress display: readable lines in a log file, rich bars on a terminal only."""

from __future__ import annotations

import io

from bioattn import progress as progress_module
from bioattn.progress import Progress, format_duration, format_rate, progress_bar


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
    # 2 steps in 45 s: 0.0444 a second, the last one 22 s away; never cut to a terminal width
    assert lines[1] == f"epoch 1/3: 2/3 (45 s, 0.0444/s, 22 s left) {long_info}"
    assert lines[2] == "epoch 1/3: 3/3 (46 s, 0.0652/s) last"
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


def test_lines_give_rate_and_time_left_in_the_tasks_unit(monkeypatch):
    clock = iter([0.0, 40.0, 80.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    with Progress(True, stream=stream) as p:
        task = p.task("pgd", 100, unit="passes")
        p.update(task, 10, info="eps=1/255, images 1-32 of 64")  # 40 s: 4 s a pass, 90 left
        p.update(task, 90)
    lines = stream.getvalue().splitlines()
    assert lines[1] == "pgd: 10/100 passes (40 s, 4 s/pass, 6 min left) eps=1/255, images 1-32 of 64"
    assert lines[2] == "pgd: 100/100 passes (80 s, 1.25 passes/s) eps=1/255, images 1-32 of 64"


def test_a_long_task_says_its_size_and_estimate_once(monkeypatch):
    clock = iter([0.0, 10.0, 13.0, 16.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    with Progress(True, stream=stream) as p:
        task = p.task("corruptions", 1502, unit="images", size="15 corruptions x 5 severities x 20 images",
                      hint="--severities 3 for one severity")
        p.update(task, 2)  # the first 2 images took 10 s (starting up) ...
        p.update(task, 2)  # ... the next 2 took 3 s: the other 1500 take 37.5 min, 38 min in all
        p.update(task, 2)
    announced = [line for line in stream.getvalue().splitlines() if "about" in line]
    assert announced == ["corruptions: 15 corruptions x 5 severities x 20 images, about 38 min here; "
                         "--severities 3 for one severity"]


def test_a_short_task_says_nothing_more(monkeypatch):
    clock = iter([0.0, 1.0, 2.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    with Progress(True, stream=stream) as p:
        task = p.task("clean", 10, unit="images", size="10 images", hint="--limit N for fewer images")
        p.update(task, 5)  # 5 images a second: 2 s in all
        p.update(task, 5)
    assert "about" not in stream.getvalue()


def test_durations_and_rates_read_as_words():
    assert [format_duration(s) for s in (4, 89, 1500, 5400, 7200)] == ["4 s", "89 s", "25 min", "1 h 30 min", "2 h"]
    assert format_rate(12.34, "images") == "12.3 images/s"
    assert format_rate(0.25, "passes") == "4 s/pass"
    assert format_rate(0.5, "") == "0.5/s"
