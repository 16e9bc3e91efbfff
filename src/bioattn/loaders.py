"""The trainer's data: the task's training and validation sets, the training sampler, and the loaders
that bring the batches to the device (:func:`build_data`): whole batches of in-memory images, or
worker loaders re-seeded every epoch, optionally prefetched or decoded on the device
(:func:`loader_kind`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.data.distributed_sampler import RepeatAugSampler
from timm.data.loader import PrefetchLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, get_worker_info

from .config import TrainConfig
from .data import Augmentation, is_domain_spec, is_embedded
from .data.batched import BatchRecipe, InMemoryBatches, in_memory_loader
from .data.embedded import EmbeddedDataset
from .data.folders import read_class_list
from .data.on_device import DecodeOnDevice, EncodedImages, collate_encoded
from .data.subsets import base_dataset, spread_subset
from .distributed import DistInfo
from .errors import BioattnError
from .models import prompted_by_labels
from .models.inputs import InputConfig
from .randomness import epoch_seed, seed_everything
from .tasks.base import Task
from .tasks.registry import get_task


@dataclass
class TrainData:
    """What a run trains and validates on: the task, its data sets and classes, the model's input,
    the training sampler and both loaders."""

    task: Task
    train_set: Any
    val_set: Any
    classes: list[str]
    input: InputConfig
    sampler: Any
    train_loader: DataLoader
    val_loader: DataLoader


class _Shard(Subset):
    """Every ``world``-th sample from ``rank`` on: an evaluation shard without padding."""

    def __init__(self, ds, rank: int, world: int) -> None:
        super().__init__(ds, range(rank, len(ds), world))


def build_data(cfg: TrainConfig, info: DistInfo) -> TrainData:
    """The task's training and validation sets (optionally limited, evenly spread over the
    set), the training sampler (distributed, or repeated augmentation) and both loaders."""
    task = get_task(cfg.task)
    inputs = InputConfig.resolve(task.model_name(cfg.model), img_size=cfg.img_size)
    feed = loader_kind(cfg, task, info.device)
    aug = Augmentation(
        auto_augment=None if (cfg.aa or "none").lower() == "none" else cfg.aa,
        color_jitter=cfg.color_jitter, re_prob=cfg.reprob, hflip=cfg.hflip,
        random_resized_crop=cfg.random_resized_crop, normalize=feed != "prefetch",
    )
    chosen = read_class_list(cfg.classes) if cfg.classes else None
    train_set = task.build_dataset(cfg.data, "train", inputs, train=True, aug=aug, subset=chosen,
                                   skip_bad_images=cfg.skip_bad_images)
    if prompted_by_labels(task.model_name(cfg.model)):
        keep_all_labels(cfg, train_set)
    classes = list(train_set.classes)
    val_set = task.build_dataset(cfg.data, "val", inputs, train=False, classes=classes, subset=chosen,
                                 skip_bad_images=cfg.skip_bad_images)
    train_set = spread_subset(train_set, cfg.limit_train)
    val_set = spread_subset(val_set, cfg.limit_val)
    if len(train_set) < cfg.batch_size * cfg.grad_accum * info.world_size:
        accum = f" x {cfg.grad_accum} accumulated" if cfg.grad_accum > 1 else ""
        raise BioattnError(
            f"the training set has {len(train_set)} images, fewer than one global batch "
            f"({cfg.batch_size}{accum} x {info.world_size} processes)"
        )
    if cfg.repeated_aug:
        sampler = RepeatAugSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True)
    else:
        sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=True)
    train_loader = training_loader(cfg, feed, train_set, sampler, inputs, aug, info)
    # label maps evaluated at their own sizes do not stack into batches
    val_batch = 1 if getattr(base_dataset(val_set), "sizes_vary", False) else cfg.batch_size
    val_loader = DataLoader(_Shard(val_set, info.rank, info.world_size), batch_size=val_batch,
                            shuffle=False, num_workers=cfg.workers, persistent_workers=cfg.workers > 0)
    return TrainData(task, train_set, val_set, classes, inputs, sampler, train_loader, val_loader)


def keep_all_labels(cfg: TrainConfig, train_set: Dataset) -> None:
    """For a model trained under priors drawn from its labels (``--model`` of
    :func:`bioattn.models.prompted_by_labels`): two-object embedded training images give both
    objects' classes as their target, from which the model draws the prompted one (other data
    keep their one class per image; the validation images keep the first object's class, which
    top-1 scores). Mixing targets is refused: a mixed target names no class to prompt."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        raise BioattnError(f"--mixup and --cutmix mix the targets, but {cfg.model} draws its prior from each "
                           "image's classes: set both to 0")
    base = base_dataset(train_set)
    arrays = getattr(base, "arrays", None)
    if isinstance(base, EmbeddedDataset) and arrays is not None and arrays.pair:
        base.keep_all_labels()


def loader_kind(cfg: TrainConfig, task: Task, device: torch.device) -> str:
    """How training batches reach the device: ``decode`` (``--decode gpu``: the loader reads the
    files' bytes, the device decodes and augments them, :class:`DecodeOnDevice`), ``prefetch``
    (8-bit images copied on a side stream, normalised and erased on the device: timm's
    ``PrefetchLoader``; ``--prefetch``, by default on with CUDA) or ``plain`` (the loader's
    normalised batches). The first two need an image folder."""
    folder = task.spec.image_folders and not is_embedded(cfg.data) and not is_domain_spec(cfg.data)
    if cfg.decode == "gpu":
        if not folder:
            raise BioattnError(f"--decode gpu decodes the JPEG files of an image-folder data set; "
                               f"'{cfg.data}' is not one")
        return "decode"
    if cfg.prefetch and not folder:
        raise BioattnError(f"--prefetch on loads 8-bit images of an image-folder data set; '{cfg.data}' "
                           "is not one")
    prefetch = cfg.prefetch if cfg.prefetch is not None else (folder and device.type == "cuda")
    return "prefetch" if prefetch else "plain"


class EpochSeeded(Dataset):
    """``dataset`` whose loader workers re-seed their random generators when an epoch starts,
    from the seed the main process set with :meth:`set_seed` (plus the worker's number).

    An epoch's augmentation then depends only on (seed, epoch, rank, worker), also with
    persistent workers, which live through every epoch: a resumed run draws what an
    uninterrupted one would. Read in the main process (no workers), the data takes its draws
    from the main process's generators, seeded per epoch by the trainer.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._seed = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._seeded: int | None = None

    def set_seed(self, seed: int) -> None:
        self._seed[0] = seed % (2**63)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        worker = get_worker_info()
        if worker is not None:
            seed = int(self._seed[0])
            if seed != self._seeded:
                self._seeded = seed
                seed_everything(epoch_seed(seed, 0, worker.id + 1))
        return self.dataset[index]


def training_loader(cfg: TrainConfig, feed: str, train_set: Dataset, sampler: Any, inputs: InputConfig,
                    aug: Augmentation, info: DistInfo) -> Any:
    """The training batches as :func:`loader_kind` ``feed`` says: for images held in memory (the
    embedded data) whole batches made and augmented in the main process
    (:class:`~bioattn.data.batched.InMemoryBatches`, unless ``--in-memory off``); else a
    DataLoader (workers kept alive between epochs, pinned memory with CUDA, re-seeded per epoch
    by :class:`EpochSeeded`), wrapped in timm's ``PrefetchLoader`` or in :class:`DecodeOnDevice`."""
    cuda = info.device.type == "cuda"
    if feed == "plain" and cfg.in_memory is not False:
        recipe = BatchRecipe(size=inputs.img_size, mean=inputs.mean, std=inputs.std,
                             random_resized_crop=aug.random_resized_crop, hflip=aug.hflip,
                             color_jitter=aug.color_jitter, auto_augment=aug.auto_augment, re_prob=aug.re_prob,
                             re_mode=aug.re_mode, re_count=aug.re_count, interpolation=aug.interpolation)
        batches = in_memory_loader(train_set, sampler, cfg.batch_size, recipe)
        if batches is not None:
            return batches
        if cfg.in_memory:
            raise BioattnError(f"--in-memory on makes batches of images held in memory (the embedded data); "
                               f"'{cfg.data}' is read from files: leave out --in-memory")
    images = train_set
    if feed == "decode":
        folder = base_dataset(train_set)
        images = EncodedImages(folder)
        if isinstance(train_set, Subset):
            images = Subset(images, train_set.indices)
    # the loader's own generator: its per-epoch draw leaves the trainer's random stream alone
    loader = DataLoader(EpochSeeded(images), batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.workers, drop_last=True, pin_memory=cuda,
                        persistent_workers=cfg.workers > 0, generator=torch.Generator(),
                        collate_fn=collate_encoded if feed == "decode" else None)
    if feed == "prefetch":
        # as timm's transform: random erasing belongs to the augmenting recipe only
        erase = aug.re_prob if (aug.random_resized_crop or aug.auto_augment) else 0.0
        return PrefetchLoader(loader, mean=inputs.mean, std=inputs.std, device=info.device,
                              re_prob=erase, re_mode=aug.re_mode, re_count=aug.re_count)
    if feed == "decode":
        return DecodeOnDevice(loader, base_dataset(images), inputs.img_size, inputs.mean, inputs.std, aug,
                              info.device)
    return loader


def seed_loader_workers(loader: Any, seed: int) -> None:
    """Set the epoch's seed of an in-memory loader, or of the :class:`EpochSeeded` data set under
    ``loader``'s wrappers."""
    if isinstance(loader, InMemoryBatches):
        loader.set_seed(seed)
        return
    while not isinstance(loader, DataLoader):
        loader = loader.loader
    if isinstance(loader.dataset, EpochSeeded):
        loader.dataset.set_seed(seed)

