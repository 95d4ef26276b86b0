"""How T1 optimises a large pretrained tower: layer-wise learning-rate decay over the backbone's ordered
blocks, the family's default learning rate, an exponential moving average of the weights, and the opt-in
speed flags (channels-last, ``torch.compile``), each refused where it cannot apply rather than ignored."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from model_training.backbones.base import Backbone


class OptionError(ValueError):
    """A training option that cannot apply to this backbone or platform."""


def backbone_lr(backbone: Backbone, lr: float | None) -> float:
    """``--lr`` when given, else the family's default (1e-5 for CLIP, SigLIP and open_clip towers)."""
    return lr if lr is not None else type(backbone).default_lr


def backbone_param_groups(backbone: Backbone, lr: float, llrd: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: one at ``lr`` without decay (``llrd`` 1), else one per depth, the i-th of n
    ordered blocks at ``lr * llrd ** (n - 1 - i)``: the final norm trains at ``lr``, the stem slowest."""
    if llrd == 1.0:
        return [{"params": list(backbone.parameters()), "lr": lr}]
    if not 0.0 < llrd < 1.0:
        raise OptionError(f"--llrd must be in (0, 1] (1 is off), got {llrd}")
    blocks = backbone.ordered_blocks()
    depth_of: dict[int, int] = {}
    for depth, block in enumerate(blocks):
        for parameter in block.parameters():
            depth_of.setdefault(id(parameter), depth)
    by_depth: dict[int, list[nn.Parameter]] = {}
    for parameter in backbone.parameters():
        by_depth.setdefault(depth_of.get(id(parameter), 0), []).append(parameter)
    return [{"params": params, "lr": lr * llrd ** (len(blocks) - 1 - depth)}
            for depth, params in sorted(by_depth.items())]


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA copy of ``model`` (buffers averaged too), or None when ``decay`` is 0."""
    if decay == 0.0:
        return None
    if not 0.0 < decay < 1.0:
        raise OptionError(f"--ema-decay must be in (0, 1) (0 is off), got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def ema_updater(ema: AveragedModel | None, model: nn.Module) -> Callable[[], None] | None:
    """What runs after each optimiser step: fold ``model``'s new weights into the EMA (None without one)."""
    if ema is None:
        return None
    return lambda: ema.update_parameters(model)


def check_channels_last(backbone: Backbone) -> None:
    if not type(backbone).channels_last_helps:
        raise OptionError(f"--channels-last applies to convolutional backbones; {backbone.family} is not one")


def compiled(module: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(module)``; an error where it cannot run (torch.compile fails only at the first batch
    otherwise, or falls back silently)."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise OptionError("--compile: torch.compile is not supported on this platform/Python")
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise OptionError("--compile on the CPU needs a C++ compiler (inductor builds kernels); none is on PATH")
    return torch.compile(module)  # type: ignore[return-value]
