"""The process a training runs in: device, DDP rank and world size, mixed precision, seeding, logging.

A single process by default; under ``torchrun`` (which sets WORLD_SIZE/RANK/LOCAL_RANK) one process per
GPU joined in a process group. Only rank 0 logs, validates and writes files; while it does, the other ranks
wait in :func:`wait_for_main` on a CPU (gloo) group with a long timeout, not in the training group's
collectives, whose timeout is sized for steps that every rank takes together.
"""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from model_training.config import TrainConfig


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None
    wait_group: Any = None
    """The gloo group :func:`wait_for_main` waits in (None in a single process)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; any other name is a torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Single process, or DDP when launched by torchrun (which sets WORLD_SIZE/RANK/LOCAL_RANK)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(cfg.device)
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        wait_group = init_distributed("nccl" if device.type == "cuda" else "gloo")
    amp_dtype = None
    if cfg.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(device, rank, world_size, amp_dtype, wait_group if world_size > 1 else None)


MAIN_WAIT_TIMEOUT = timedelta(hours=24)
"""How long the other ranks wait for rank 0's solo work (validation, T2, calibration, rules, checkpoint): T2
caches features of every training row, which on the largest category at 512 px takes far longer than the
default collective timeout (10 to 30 minutes). A crash on rank 0 still ends the job: torchrun stops every
worker when one fails."""


def init_distributed(backend: str, timeout: timedelta | None = None,
                     main_wait_timeout: timedelta = MAIN_WAIT_TIMEOUT) -> Any:
    """Join the process group (``timeout``: its collectives' limit, torch's default when None) and return
    the group the other ranks wait for rank 0 in (gloo, so no GPU spins while it waits)."""
    if timeout is None:
        torch_dist.init_process_group(backend)
    else:
        torch_dist.init_process_group(backend, timeout=timeout)
    return torch_dist.new_group(backend="gloo", timeout=main_wait_timeout)


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Mixed precision in ``amp_dtype`` on ``device``; full precision when ``amp_dtype`` is None."""
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log(runtime: Runtime, message: str) -> None:
    if runtime.is_main:
        print(message, flush=True)


def wait_for_main(runtime: Runtime) -> None:
    """Every rank meets here; the main rank arrives after its solo work (see :data:`MAIN_WAIT_TIMEOUT`)."""
    if runtime.distributed:
        torch_dist.barrier(group=runtime.wait_group)
