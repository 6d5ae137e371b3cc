"""The processes of a run: one, or the torchrun group this one belongs to (DistributedDataParallel: gloo on
the CPU, nccl on GPUs), the device each uses, and the sums and unions of what each counted."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import RunError, error
from ..spec import Spec


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _world(device: torch.device) -> World:
    """One process, or the torchrun group this process belongs to (joined here)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError([error("--device cuda, but torch sees no CUDA device", "--device",
                               hint="use --device cpu (or auto)")])
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def distributed(spec: Spec, device: str) -> tuple[torch.device, World]:
    """The device and the process group (joined when launched by torchrun)."""
    dev = _device(device)
    world = _world(dev)
    if spec.train.batch_size % world.size:
        raise RunError([error(f"the batch of {spec.train.batch_size} does not split over {world.size} processes",
                               "--batch-size", hint=f"use a multiple of {world.size}")])
    return dev, world


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_union(indices: set[int], world: World) -> set[int]:
    if world.size == 1:
        return indices
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, sorted(indices))
    return {i for part in gathered for i in part}
