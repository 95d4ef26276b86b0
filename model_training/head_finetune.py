"""T2, head fine-tuning: the backbone is frozen, its feature maps are computed once, and each head trains
on every row labelled for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from model_training.config import TrainConfig
from model_training.losses import MaskedMultiTaskLoss
from model_training.model import CategoryModel
from model_training.plots import append_metrics
from model_training.runtime import Runtime, autocast
from model_training.validation import attribute_hm

Features = tuple[Tensor, np.ndarray]
"""Feature maps (N, C, H, W) in fp16 on the CPU, and their (N, A) targets."""


@torch.no_grad()
def extract_features(model: CategoryModel, loader: DataLoader[Any], runtime: Runtime) -> Features:
    """The frozen backbone's feature maps, once, kept on the CPU in fp16 (T2 reuses them for every head
    and epoch instead of re-running the backbone per head, as the published code did)."""
    model.eval()
    chunks: list[Tensor] = []
    targets: list[np.ndarray] = []
    for pixels, target in loader:
        with autocast(runtime.device, runtime.amp_dtype):
            chunks.append(model.features(pixels.to(runtime.device)).to("cpu", torch.float16))
        targets.append(target.numpy())
    return torch.cat(chunks), np.concatenate(targets)


@torch.no_grad()
def head_logits(head: nn.Module, features: Tensor, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """One head's float32 logits over cached features, in eval mode."""
    head.eval()
    parts = [head(features[i:i + batch_size].to(device).float()).float().cpu().numpy()
             for i in range(0, len(features), batch_size)]
    return np.concatenate(parts)


def all_head_logits(model: CategoryModel, features: Tensor, device: torch.device) -> dict[str, np.ndarray]:
    """Every head's logits over cached features, keyed by attribute name in head order."""
    return {name: head_logits(model.heads[name], features, device) for name in model.attribute_names}


def finetune_heads(cfg: TrainConfig, runtime: Runtime, model: CategoryModel, criterion: MaskedMultiTaskLoss,
                   train: Features, val: Features, run_dir: Path) -> None:
    """T2: each head trains on every row labelled for it, backbone frozen; per head the epoch with the
    best validation HM is kept (epoch 0 = the T1 head, so T2 cannot lower the validation score)."""
    train_features, train_targets = train
    val_features, val_targets = val
    generator = torch.Generator().manual_seed(cfg.seed)
    for a, name in enumerate(model.attribute_names):
        head = model.heads[name]
        k = len(model.value_orders[name])
        labelled = np.flatnonzero(train_targets[:, a] >= 0)
        best = attribute_hm(val_targets[:, a], head_logits(head, val_features, runtime.device).argmax(1), k)
        best_state = {key: v.clone() for key, v in head.state_dict().items()}
        append_metrics(run_dir, {"phase": "t2", "attribute": name, "epoch": 0, "val_hm": best, "train_loss": None})
        if len(labelled) == 0:
            continue
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.t2_lr, weight_decay=cfg.weight_decay)
        y_all = torch.from_numpy(train_targets[:, a])
        for epoch in range(1, cfg.epochs_t2 + 1):
            head.train()
            order = torch.from_numpy(labelled)[torch.randperm(len(labelled), generator=generator)]
            losses = []
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                logits = head(train_features[idx].to(runtime.device).float())
                loss = criterion.attribute_loss(a, logits, y_all[idx].to(runtime.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            hm = attribute_hm(val_targets[:, a], head_logits(head, val_features, runtime.device).argmax(1), k)
            append_metrics(run_dir, {"phase": "t2", "attribute": name, "epoch": epoch, "val_hm": hm,
                                     "train_loss": float(np.mean(losses))})
            if hm > best:
                best, best_state = hm, {key: v.clone() for key, v in head.state_dict().items()}
        head.load_state_dict(best_state)
