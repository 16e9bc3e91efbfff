"""bioattn's tasks, each in one place: what a model learns from a data set (one class per image,
one class per pixel, a set of classes per image) and everything that follows from it.

* :mod:`bioattn.tasks.spec` (torch-free, read by the settings): which data holds each task's
  labels, its validation metric, suites and training-score name, the settings it leaves unused,
  its recipe, whether it shares batch statistics over processes; re-exported here.
* :mod:`bioattn.tasks.base`: :class:`~bioattn.tasks.base.Task`, the parts every task provides
  to the trainer and the evaluator: data sets, loss, meter, predictions, the checks a model and
  its settings must pass.
* :mod:`bioattn.tasks.classification`, :mod:`~bioattn.tasks.segmentation`,
  :mod:`~bioattn.tasks.multilabel`: the three tasks.
* :mod:`bioattn.tasks.registry`: the tasks by name (:func:`~bioattn.tasks.registry.get_task`) and
  the task a model is scored on.

The trainer, the evaluator, the demo and the settings ask the task and never its name. A new
task adds a :class:`~bioattn.tasks.spec.TaskSpec` to the table in :mod:`~bioattn.tasks.spec`, a
module with its :class:`~bioattn.tasks.base.Task`, its entry in the registry, and the runners of
its suites in :mod:`bioattn.evaluate.suites`.
"""

from __future__ import annotations

from .spec import DEFAULT, TASK_SPECS, TASKS, TaskSpec, resolve_task, task_of_data, task_spec

__all__ = ["DEFAULT", "TASKS", "TASK_SPECS", "TaskSpec", "resolve_task", "task_of_data", "task_spec"]
