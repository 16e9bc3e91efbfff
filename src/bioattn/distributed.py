"""torch.distributed set-up for ``torchrun`` launches (single- and multi-node).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; without
them the process runs alone. NCCL is used on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import BioattnError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The device a process computes on: ``auto`` (or None) picks this process's GPU when there
    is one, else the CPU; ``cuda`` means this process's GPU (``local_rank``); ``cuda:N``, ``cpu``
    and other torch device strings are taken as they are, and checked."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device) == "cuda":
        device = f"cuda:{local_rank}"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BioattnError(f"bad device '{device}': {str(exc).splitlines()[0]}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BioattnError(f"device {device} requested but no GPU is available")
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a list of numbers over all processes."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_tensor(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all processes (a copy; the input is left as it is)."""
    if not info.enabled:
        return tensor.clone()
    out = tensor.detach().clone().to(info.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_tensors(tensors: list[torch.Tensor], info: DistInfo) -> list[list[torch.Tensor]]:
    """Every process's ``tensors`` (on the CPU), in rank order: for figures that are not sums,
    such as average precision, which needs every score."""
    local = [t.detach().cpu() for t in tensors]
    if not info.enabled:
        return [local]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, local)
    return gathered


def all_true(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` holds on every process."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_reduce_min_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The element-wise minimum of ``tensor`` (on this process's device) over all processes,
    in place; returns it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group.

    Every DDP wrapper must be freed first: one that outlives the group holds its last reference,
    and freeing it then runs gloo's teardown while holding the GIL, which deadlocks against
    gloo's worker threads. The garbage collection frees wrappers caught in reference cycles.
    """
    if info.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
