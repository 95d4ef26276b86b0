"""The process a training runs in: device, DDP rank and world size, mixed precision, seeding, logging.

A single process by default; under ``torchrun`` (which sets WORLD_SIZE/RANK/LOCAL_RANK) one process per
GPU joined in a process group. Only rank 0 logs, validates and writes files.
"""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
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
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp_dtype = None
    if cfg.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(device, rank, world_size, amp_dtype)


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


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        torch_dist.barrier()
