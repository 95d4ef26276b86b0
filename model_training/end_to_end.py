"""T1, end-to-end training: one epoch of backbone + heads, its learning-rate schedule, and the optional
MMD pull toward unlabelled target-domain images."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from model_training.config import TrainConfig
from model_training.losses import MaskedMultiTaskLoss, mmd
from model_training.model import CategoryModel
from model_training.runtime import Runtime, autocast


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step: linear warm-up, then cosine decay to 0 at ``total_steps``."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class WithFeatures(nn.Module):
    """Training-time wrapper: logits and pooled features from one forward (what DDP wraps)."""

    def __init__(self, model: CategoryModel, *, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, pixel_values: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        features = self.model.features(pixel_values)
        return self.model.forward_heads(features), self.model.pooled(features)


def endless(loader: DataLoader[Any]) -> Iterator[Tensor]:
    """The loader's images over and over (the target domain is sampled alongside every source batch)."""
    while True:
        for pixels, _ in loader:
            yield pixels


def train_one_epoch(cfg: TrainConfig, runtime: Runtime, step_model: nn.Module, loader: DataLoader[Any],
                    criterion: MaskedMultiTaskLoss, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                    target_images: Iterator[Tensor] | None, desc: str,
                    after_step: Callable[[], None] | None = None) -> float:
    """One pass over ``loader`` with gradient accumulation; returns the mean training loss. ``after_step``
    runs after every optimiser step (the EMA update)."""
    step_model.train()
    total, batches = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    n = len(loader)
    bar = tqdm(loader, desc=desc, disable=not (cfg.progress and runtime.is_main), leave=False)
    for step, (pixels, target) in enumerate(bar):
        pixels = pixels.to(runtime.device, non_blocking=True)
        target = target.to(runtime.device, non_blocking=True)
        batch = pixels.shape[0]
        if target_images is not None:
            # One forward over source + target images: ConvNeXt has no batch statistics, so nothing leaks.
            pixels = torch.cat([pixels, next(target_images).to(runtime.device)])
        last_micro = (step + 1) % cfg.grad_accum == 0 or step + 1 == n
        sync: AbstractContextManager[Any] = nullcontext()
        if runtime.distributed and not last_micro:
            assert isinstance(step_model, DistributedDataParallel)
            sync = step_model.no_sync()
        with sync:
            with autocast(runtime.device, runtime.amp_dtype):
                logits, pooled = step_model(pixels)
                logits = {name: value[:batch] for name, value in logits.items()}
                loss, _ = criterion(logits, target)
                if target_images is not None:
                    loss = loss + cfg.mmd_weight * mmd(pooled[:batch], pooled[batch:])
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if last_micro:
            optimizer_step(step_model, optimizer, scheduler, scaler)
            if after_step is not None:
                after_step()
        total += float(loss.detach())
        batches += 1
        bar.set_postfix(loss=f"{total / batches:.3f}")
    return total / max(1, batches)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None) -> None:
    """Clip the accumulated gradients to norm 1, step (through the fp16 scaler if any), advance the schedule."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
