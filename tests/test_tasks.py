"""The three tasks: which data serves which, the recipe each picks, and the task table."""

from __future__ import annotations

import pytest

from bioattn.config import TASKS, TrainConfig, resolve_task
from bioattn.errors import BioattnError
from bioattn.specs import data_folders, embedded_options
from bioattn.tasks import task_of_data


@pytest.mark.parametrize("spec, task", [
    ("embedded", "classification"),
    ("embedded:pair,train=100", "classification"),
    ("embedded:seg", "segmentation"),
    ("embedded:pair,seg,size=32", "segmentation"),
    ("embedded:multi", "multilabel"),
    ("embedded:domain=sketch", "classification"),
    ("voc:/data/VOCdevkit", "segmentation"),
    ("ade20k:/data/ade", "segmentation"),
    ("cityscapes:/data/cs", "segmentation"),
    ("coco:/data/coco", "multilabel"),
    ("/data/imagenet", "classification"),
    ("coco", "classification"),
    ("domains:train=photo+cartoon,root=/x", "classification"),
])
def test_each_data_spec_serves_one_task(spec, task):
    assert task_of_data(spec) == task
    assert resolve_task("auto", spec) == task
    assert resolve_task(task, spec) == task


def test_embedded_options_are_the_option_words():
    assert embedded_options("embedded:seg,pair,size=32") == ["seg", "pair", "size"]
    assert embedded_options("embedded") == []
    assert embedded_options("/data/embedded:seg") == []


@pytest.mark.parametrize("task, data", [
    ("segmentation", "embedded"), ("multilabel", "embedded:seg"), ("classification", "coco:/x"),
])
def test_a_task_the_data_cannot_serve_is_refused(task, data):
    with pytest.raises(BioattnError, match=f"--task {task} needs {task} data"):
        TrainConfig(model="vit_micro_patch8_64", data=data, task=task)


def test_class_list_needs_an_image_folder():
    with pytest.raises(BioattnError, match="--classes selects class folders"):
        TrainConfig(model="vit_micro_patch8_64", data="embedded:seg", classes="list.txt")


@pytest.mark.parametrize("data, recipe, sched, task", [
    ("embedded", "small", "cosine", "classification"),
    ("embedded:seg", "small", "cosine", "segmentation"),
    ("voc:/data", "upernet", "poly", "segmentation"),
    ("coco:/data", "deit", "cosine", "multilabel"),
    ("/data/imagenet", "deit", "cosine", "classification"),
])
def test_auto_recipe_and_task_follow_the_data(data, recipe, sched, task):
    cfg = TrainConfig(model="vit_micro_patch8_64", data=data).resolved()
    assert (cfg.recipe, cfg.sched, cfg.task) == (recipe, sched, task)


def test_upernet_recipe_is_the_reference_set_up_at_a_global_batch_of_16():
    cfg = TrainConfig(model="vit_micro_patch8_64", data="voc:/data", batch_size=2).resolved()
    # lr = base-lr x global batch / 512: 6e-5 for 16 images per step
    assert cfg.base_lr * 16 / 512 == pytest.approx(6e-5)
    assert (cfg.weight_decay, cfg.min_lr, cfg.mixup, cfg.cutmix, cfg.smoothing) == (0.01, 0.0, 0.0, 0.0, 0.0)


def test_recipes_leave_one_class_settings_off_for_other_tasks():
    cfg = TrainConfig(model="vit_micro_patch8_64", data="coco:/data").resolved()
    assert cfg.recipe == "deit" and (cfg.mixup, cfg.cutmix, cfg.smoothing) == (0.0, 0.0, 0.0)
    assert cfg.aa == "rand-m9-mstd0.5-inc1" and cfg.model_ema is True
    # chosen, it is refused with its reason when the settings are made, not silently dropped
    with pytest.raises(BioattnError, match="--mixup 0.5: multilabel training does not use it"):
        TrainConfig(model="vit_micro_patch8_64", data="coco:/data", mixup=0.5)


def test_a_chosen_schedule_beats_the_recipe():
    assert TrainConfig(model="m", data="voc:/d", sched="cosine").resolved().sched == "cosine"


def test_task_table_covers_every_task():
    from bioattn.tasks.registry import get_task

    assert tuple(get_task(t).name for t in TASKS) == TASKS
    assert [get_task(t).metric for t in TASKS] == ["top1", "miou", "map"]
    with pytest.raises(BioattnError, match="unknown task"):
        get_task("detection")


def test_the_folders_a_data_spec_reads():
    # no command writes into these (bioattn.fileio.refuse_output_inside)
    assert data_folders("embedded:seg,size=32") == [] and data_folders("embedded") == []
    assert data_folders("voc:/d/voc") == [("the data root", "/d/voc")]
    assert data_folders("COCO: /d/coco") == [("the data root", "/d/coco")]
    assert data_folders("domains:train=a+b,test=c,holdout=0.2,seed=0,root=/d/x,y") == [("the data root", "/d/x,y")]
    assert data_folders("domains:train=photo,root=embedded:size=32") == []
    assert data_folders("/d/imagenet") == [("the data folder", "/d/imagenet")]


def test_each_task_names_its_data_and_every_named_set_belongs_to_one_task():
    from bioattn.specs import NAMED_SETS
    from bioattn.tasks import TASK_SPECS

    named = [prefix for spec in TASK_SPECS.values() for prefix in spec.data_sets]
    assert sorted(named) == sorted(NAMED_SETS)
    assert TASK_SPECS["segmentation"].data_hint() == "voc:ROOT, ade20k:ROOT, cityscapes:ROOT, embedded:seg"


def test_the_settings_a_task_leaves_unused_are_off_in_its_recipe_and_refused_when_chosen():
    cfg = TrainConfig(model="vit_micro_patch8_64", data="voc:/data", recipe="deit").resolved()
    assert (cfg.mixup, cfg.cutmix, cfg.smoothing, cfg.aa, cfg.reprob) == (0.0, 0.0, 0.0, None, 0.0)
    assert cfg.color_jitter == 0.4 and cfg.model_ema is True          # the rest of the recipe stays
    with pytest.raises(BioattnError, match="--aa 'rand-m9': segmentation training does not use it"):
        TrainConfig(model="vit_micro_patch8_64", data="embedded:seg", aa="rand-m9")
    TrainConfig(model="vit_micro_patch8_64", data="embedded:seg", aa="none")   # off is not refused


def test_the_evaluator_has_a_runner_for_every_suite_of_every_task():
    from bioattn.evaluate.suites import RUNNERS, SUITE_NAMES, task_suites
    from bioattn.tasks.registry import get_task

    for name in TASKS:
        assert set(RUNNERS[name]) == set(task_suites(get_task(name))), name
    assert task_suites(get_task("classification")) == SUITE_NAMES


def test_the_task_of_a_model_and_the_models_a_task_refuses():
    import timm

    from bioattn.tasks.registry import get_task, task_of_model

    classifier = timm.create_model("vit_micro_patch8_64", num_classes=3)
    segmenter = timm.create_model("upernet_vit_micro_patch8_64", num_classes=3)
    assert task_of_model(classifier).name == "classification"
    assert task_of_model(classifier, "multilabel").name == "multilabel"
    assert task_of_model(segmenter).name == "segmentation"
    with pytest.raises(BioattnError, match="a segmentation model cannot be evaluated on multilabel data"):
        task_of_model(segmenter, "multilabel")
    with pytest.raises(BioattnError, match="is not a segmentation model"):
        task_of_model(classifier, "segmentation")
    with pytest.raises(BioattnError, match="is a segmentation model"):
        get_task("classification").check_model_name("upernet_vit_micro_patch8_64", "embedded")
    get_task("segmentation").check_model_name("upernet_vit_micro_patch8_64", "embedded:seg")


def test_batch_norm_needs_two_images_per_batch_shared_over_processes_where_the_task_syncs():
    from torch import nn

    from bioattn.tasks.registry import get_task

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    for name in TASKS:
        with pytest.raises(BioattnError, match="needs at least 2 images per training batch"):
            get_task(name).check_batch_norm(model, "m", batch_size=1, world_size=1)
    get_task("segmentation").check_batch_norm(model, "m", batch_size=1, world_size=2)   # SyncBatchNorm
    with pytest.raises(BioattnError, match="batch normalisation"):
        get_task("classification").check_batch_norm(model, "m", batch_size=1, world_size=2)
    get_task("classification").check_batch_norm(nn.Linear(2, 2), "m", batch_size=1, world_size=1)


def test_the_settings_module_reads_the_tasks_without_torch():
    import subprocess
    import sys

    code = ("import sys, bioattn.config, bioattn.tasks; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True)
