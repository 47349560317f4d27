"""Process-group set-up under torchrun, and the few collective helpers the trainer needs."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the data x context-parallel layout.

    Ranks [k * cp, (k + 1) * cp) form context-parallel group k and share one clip; the data-
    parallel rank is k.
    """

    rank: int
    size: int
    local_rank: int
    device: torch.device
    cp: int = 1
    cp_group: dist.ProcessGroup | None = field(default=None, compare=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp(self) -> int:
        return self.size // self.cp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.cp


def init_world(device_pref: str = "auto", cp: int = 1) -> World:
    """Read torchrun's environment; start the process group when there is more than one rank,
    and the context-parallel groups when cp > 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is available")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    log.info(
        "rank %d of %d, local rank %d on node %s (node rank %s), device %s",
        rank,
        size,
        local_rank,
        os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        os.environ.get("GROUP_RANK", "0"),  # torchrun's node rank
        device,
    )
    cp_group = None
    if cp > 1:
        if size % cp:
            raise RuntimeError(f"context_parallel_size={cp} does not divide the {size} ranks")
        for first in range(0, size, cp):  # every rank must create every group
            group = dist.new_group(list(range(first, first + cp)))
            if first <= rank < first + cp:
                cp_group = group
    return World(rank, size, local_rank, device, cp, cp_group)


def fsdp_mesh(world: World):
    """A one-dimensional mesh over every rank: FSDP shards the trained branch over all of
    them, CP groups included."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(world.device.type, (world.size,))


def full_value(value: torch.Tensor) -> float:
    """A scalar that may be a DTensor (a norm over FSDP-sharded gradients) as a float."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


def average_gradients(params: list[torch.nn.Parameter], world: World) -> None:
    """Sum over a context-parallel group (each rank holds part of one clip's gradient), mean
    over data-parallel groups: one all-reduce over all ranks divided by the DP size."""
    if world.size == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world.dp)


def cp_sum(value: float, world: World) -> float:
    """A per-shard partial sum (the loss) summed over this rank's context-parallel group."""
    if world.cp == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor, group=world.cp_group)
    return float(tensor.item())


def all_ranks_ok(ok: bool, world: World) -> bool:
    """True only if every rank says ok: one rank's bad input stops all of them together."""
    if world.size == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], device=world.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
