"""Process-group set-up that works alone, under `torchrun`, and under the `deepspeed` launcher."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> Dist:
    """Join (or, for a lone process, create) the process group; gloo on CPU, NCCL on GPUs."""
    if "RANK" not in os.environ:  # plain `python -m pipeline.train`: a group of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        _init_without_leftovers(backend)
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device)


def _init_without_leftovers(backend: str) -> None:
    """deepspeed.init_distributed, whose shared-memory all-reduce buffers (CPU, one node) are
    unlinked once every rank has mapped them; stale ones of earlier runs go first."""
    import deepspeed

    from . import shm_buffers

    port = os.environ.get("MASTER_PORT", "")
    shm_buffers.remove_stale(int(port) if port.isdigit() else None)
    if not shm_buffers.created_by_deepspeed(backend):
        deepspeed.init_distributed(dist_backend=backend)
        return
    name = shm_buffers.buffer_name(int(os.environ["RANK"]))
    shm_buffers.record(name)
    deepspeed.init_distributed(dist_backend=backend)
    torch.distributed.barrier()  # every rank has mapped every peer's buffer
    shm_buffers.release(name)


def all_mean(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.item() / torch.distributed.get_world_size()


def all_means(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each value's mean over the ranks, in one all-reduce (every rank has the same keys)."""
    if not values:
        return {}
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return {k: v / torch.distributed.get_world_size() for k, v in zip(values, t.tolist())}
