"""The tasks by name, in the order of :data:`bioattn.tasks.TASKS`, and the task a model is scored on."""

from __future__ import annotations

from torch import nn

from .base import Task
from .classification import Classification
from .multilabel import MultiLabel
from .segmentation import Segmentation
from .spec import DEFAULT, TASKS, task_spec

_TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Segmentation(), MultiLabel())}
assert tuple(_TASKS) == TASKS


def get_task(name: str) -> Task:
    return _TASKS[task_spec(name).name]


def task_of_model(model: nn.Module, name: str | None = None) -> Task:
    """The task ``model`` is scored on: ``name`` (the task of the data's labels) or, without it,
    the task the model is built for alone (a segmenter: segmentation), else the default task; a
    model the task cannot score is refused."""
    if name is None:
        name = next((t.name for t in _TASKS.values() if t.owns(model)), DEFAULT.name)
    task = get_task(name)
    task.check_model(model)
    return task
