"""Spreading a triage over processes with ``torch.distributed`` (as launched by ``torchrun``).

``torchrun --nproc_per_node N -m faccent_widget triage ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in each process's environment. :func:`context` reads them,
joins the process group (``nccl`` when the process has a CUDA device, ``gloo`` otherwise) and gives
the process its device: ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU. Without those
variables (or with ``WORLD_SIZE=1``) everything runs in one process and the barriers are no-ops.

Work is split deterministically: item ``i`` of a list goes to rank ``i % world_size``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

__all__ = ["DistContext", "RankError", "context", "shard"]

T = TypeVar("T")

#: How long a process waits at a barrier for the slowest one (accentuating a big shard takes hours).
BARRIER_TIMEOUT = datetime.timedelta(hours=24)


class RankError(RuntimeError):
    """A check failed on some rank; raised on every rank so that none waits at a barrier."""


@dataclass
class DistContext:
    """Rank, world size and device of this process; ``owns_group`` when :func:`context` created the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op in a single process)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if dist.get_backend() == "nccl" and self.device is not None and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (a picklable object)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def agree(self, error: str | None) -> None:
        """Raise :class:`RankError` on every rank if any rank passes an error message (else return).

        Lets one rank's failed check (say, a settings mismatch seen by rank 0) stop all of them
        instead of leaving the others waiting at the next barrier.
        """
        if not self.distributed:
            if error:
                raise RankError(error)
            return
        errors = [e for e in self.gather(error) if e]
        if errors:
            raise RankError(errors[0])

    def close(self) -> None:
        """Leave the process group if this context created it."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def context(device: str | torch.device | None = None) -> DistContext:
    """The distributed context from the environment (see the module docstring).

    ``device``: force a device for this process (default: ``cuda:LOCAL_RANK`` under torchrun with
    CUDA, else the given/implicit single-process device, ``None`` meaning "the model's").
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext(device=torch.device(device) if device is not None else None)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
        owns = True
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev, owns_group=owns
    )


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items of ``rank``: positions ``rank, rank + world_size, …``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0…world_size-1, got rank={rank}, world_size={world_size}")
    return list(items[rank::world_size])
