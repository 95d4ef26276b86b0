"""T1's resume state: everything an interrupted run needs to continue to the same weights as one that was
never stopped.

Written by rank 0 after every finished T1 epoch (``train_state.pt``). Besides weights, optimiser and
schedule it holds every random state the next epochs draw from (Python, NumPy, torch CPU and CUDA: head
dropout, stochastic depth), the fp16 grad scaler and the EMA weights when they are on. The data order needs
no state: the T1 sampler shuffles from ``(seed, epoch)`` and augmentations are seeded per (seed, epoch, row).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_training.checkpoint import load_state_strict

STATE_NAME = "train_state.pt"


@dataclass(frozen=True)
class Resumable:
    """The objects whose state a T1 epoch changes (``ema``/``scaler`` None when off)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    ema: nn.Module | None = None


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_state(path: Path, parts: Resumable, epoch: int, best_score: float) -> None:
    """The state after T1 epoch ``epoch`` (0-based), written to a temporary file then renamed, so an
    interruption while writing leaves the previous epoch's state intact."""
    state = {"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
             "scheduler": parts.scheduler.state_dict(), "rng": rng_states(), "epoch": epoch,
             "best_score": best_score,
             "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
             "ema": parts.ema.state_dict() if parts.ema is not None else None}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: Path, parts: Resumable, device: torch.device) -> tuple[int, float]:
    """Restore ``parts`` and the random states; returns ``(next epoch, best score so far)``. A state saved
    with the EMA or grad scaler on cannot resume a run with it off (or the reverse): that would change the
    result, so it is an error."""
    state = torch.load(path, map_location=device, weights_only=False)
    load_state_strict(parts.model, state["model"], str(path))
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    for name, module, saved in (("EMA", parts.ema, state.get("ema")), ("grad scaler", parts.scaler,
                                                                       state.get("scaler"))):
        if (module is None) != (saved is None):
            raise ValueError(f"{path}: saved {'with' if saved is not None else 'without'} the {name}; "
                             f"this run has it {'on' if module is not None else 'off'}")
        if module is not None and saved is not None:
            module.load_state_dict(saved)
    set_rng_states(state["rng"])
    return int(state["epoch"]) + 1, float(state["best_score"])
