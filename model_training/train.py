"""Train one model per category: T1 end to end, T2 head fine-tuning on cached features, then decoding
calibration and consistency rules fitted on the validation split.

    python -m model_training.train --data DIR --category NAME|all --out RUN_DIR [--backbone ...]
        [--image-size N] [--epochs-t1 N] [--epochs-t2 M] [--batch-size B] [--resume] ...

Multi-GPU: ``torchrun --nproc-per-node G -m model_training.train ...`` (DDP for T1; rank 0 runs
validation, T2, calibration and writes the checkpoint). ``--help`` lists every option with its default.
The file reads top to bottom: setup, data, model, T1, T2, decoding, checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from catalog.dataset import LabelRow, read_split
from catalog.decoding import ConsistencyRule, Decoder
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import Category, load_taxonomy
from model_training.augment import Augment
from model_training.backbone import build_backbone
from model_training.calibration import fit_calibration
from model_training.checkpoint import load_state_strict, make_info, read_info, save_checkpoint
from model_training.config import TrainConfig, parse_config
from model_training.data import ImageDataset, complete_rows, encode_targets, stratified_split
from model_training.losses import MaskedMultiTaskLoss, class_counts, log_priors, mmd
from model_training.model import CategoryModel, value_orders_for
from model_training.plots import METRICS_NAME, PLOT_NAME, append_metrics, plot_curves, read_metrics
from model_training.rules import mine_rules, select_rules
from model_training.validation import attribute_hm, attribute_scores, collect_logits, format_attribute_report

STATE_NAME = "train_state.pt"
BEST_T1_NAME = "best_t1.safetensors"


# ----------------------------------------------------------------------------- setup


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


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Single process, or DDP when launched by torchrun (which sets WORLD_SIZE/RANK/LOCAL_RANK)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
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


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Any:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class WithFeatures(nn.Module):
    """Training-time wrapper: logits and pooled features from one forward (what DDP wraps)."""

    def __init__(self, model: CategoryModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        features = self.model.features(pixel_values)
        return self.model.forward_heads(features), self.model.pooled(features)


# ----------------------------------------------------------------------------- T1


def endless(loader: DataLoader[Any]) -> Iterator[Tensor]:
    while True:
        for pixels, _ in loader:
            yield pixels


def train_one_epoch(cfg: TrainConfig, runtime: Runtime, step_model: nn.Module, loader: DataLoader[Any],
                    criterion: MaskedMultiTaskLoss, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                    target_images: Iterator[Tensor] | None, desc: str) -> float:
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
            autocast = torch.autocast(runtime.device.type, dtype=runtime.amp_dtype) if runtime.amp_dtype \
                else nullcontext()
            with autocast:
                logits, pooled = step_model(pixels)
                logits = {name: value[:batch] for name, value in logits.items()}
                loss, _ = criterion(logits, target)
                if target_images is not None:
                    loss = loss + cfg.mmd_weight * mmd(pooled[:batch], pooled[batch:])
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if last_micro:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(step_model.parameters(), 1.0)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        total += float(loss.detach())
        batches += 1
        bar.set_postfix(loss=f"{total / batches:.3f}")
    return total / max(1, batches)


@torch.no_grad()
def validation_loss(criterion: MaskedMultiTaskLoss, logits: dict[str, np.ndarray], targets: np.ndarray) -> float:
    loss, _ = criterion({k: torch.from_numpy(v) for k, v in logits.items()}, torch.from_numpy(targets))
    return float(loss)


# ----------------------------------------------------------------------------- T2


@torch.no_grad()
def extract_features(model: CategoryModel, loader: DataLoader[Any], runtime: Runtime) -> tuple[Tensor, np.ndarray]:
    """The frozen backbone's feature maps, once, kept on the CPU in fp16 (T2 reuses them for every head
    and epoch instead of re-running the backbone per head, as the published code did)."""
    model.eval()
    chunks: list[Tensor] = []
    targets: list[np.ndarray] = []
    for pixels, target in loader:
        autocast = torch.autocast(runtime.device.type, dtype=runtime.amp_dtype) if runtime.amp_dtype \
            else nullcontext()
        with autocast:
            chunks.append(model.features(pixels.to(runtime.device)).to("cpu", torch.float16))
        targets.append(target.numpy())
    return torch.cat(chunks), np.concatenate(targets)


@torch.no_grad()
def head_logits(head: nn.Module, features: Tensor, device: torch.device, batch_size: int = 256) -> np.ndarray:
    head.eval()
    parts = [head(features[i:i + batch_size].to(device).float()).float().cpu().numpy()
             for i in range(0, len(features), batch_size)]
    return np.concatenate(parts)


def finetune_heads(cfg: TrainConfig, runtime: Runtime, model: CategoryModel, criterion: MaskedMultiTaskLoss,
                   train: tuple[Tensor, np.ndarray], val: tuple[Tensor, np.ndarray], run_dir: Path) -> None:
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


# ----------------------------------------------------------------------------- one category


def category_rows(rows: Sequence[LabelRow], category: Category, cfg: TrainConfig) -> list[LabelRow]:
    selected = [r for r in rows if r.category == category.name]
    if cfg.max_rows and len(selected) > cfg.max_rows:
        selected = random.Random(cfg.seed).sample(selected, cfg.max_rows)
    return selected


def train_category(cfg: TrainConfig, runtime: Runtime, category: Category, rows: Sequence[LabelRow],
                   run_dir: Path, target_rows: Sequence[LabelRow] = ()) -> dict[str, Any]:
    """Train, tune and save one category's checkpoint in ``run_dir``; returns its validation metrics."""
    started = time.time()
    if cfg.resume and (run_dir / "checkpoint.json").is_file():
        info = read_info(run_dir)
        if info.metrics.get("complete"):
            log(runtime, f"{category.name}: already complete in {run_dir}, skipped (--resume)")
            return info.metrics
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = PreprocessSpec(height=cfg.image_size, width=cfg.image_size, resize=cfg.resize,
                          interpolation=cfg.interpolation)
    value_orders = value_orders_for(category)
    names = list(value_orders)

    # --- data: stratified split; every row trains the heads it has labels for
    targets = encode_targets(rows, value_orders)
    train_idx, val_idx = stratified_split(targets, cfg.val_fraction, cfg.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"{category.name}: not enough rows to train ({len(rows)})")
    # T2, rule mining and class priors always see every training row; only T1 may be restricted.
    t1_idx = np.intersect1d(train_idx, complete_rows(targets)) if cfg.drop_incomplete else train_idx
    log(runtime, f"{category.name}: {len(t1_idx)} T1 rows, {len(train_idx)} T2 rows, {len(val_idx)} validation "
                 f"rows -> {run_dir}")
    if len(t1_idx) == 0:
        log(runtime, f"{category.name}: no complete rows, T1 is skipped (--drop-incomplete)")
    train_set = ImageDataset([rows[i] for i in t1_idx], targets[t1_idx], spec,
                             Augment(cfg.augment_p, cfg.max_rotation), seed=cfg.seed)
    val_set = ImageDataset([rows[i] for i in val_idx], targets[val_idx], spec)
    if cfg.cache_images:
        train_set.preload(max(2, cfg.num_workers))
        val_set.preload(max(2, cfg.num_workers))
    sampler: DistributedSampler[Any] | None = (
        DistributedSampler(train_set, seed=cfg.seed) if runtime.distributed else None)
    pin = runtime.device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=sampler is None and len(train_set) > 0,
                              sampler=sampler,
                              num_workers=cfg.num_workers, pin_memory=pin, drop_last=len(train_set) > cfg.batch_size,
                              generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size * 2, num_workers=cfg.num_workers, pin_memory=pin)
    target_images = None
    if cfg.mmd_weight > 0 and target_rows:
        target_set = ImageDataset(list(target_rows), encode_targets(target_rows, value_orders), spec)
        target_images = endless(DataLoader(target_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                           num_workers=cfg.num_workers))

    # --- model, loss, optimiser
    model = CategoryModel(build_backbone(cfg.backbone, drop_path_rate=cfg.drop_path or None), value_orders,
                          head_hidden=cfg.head_hidden, head_dropout=cfg.head_dropout).to(runtime.device)
    counts = class_counts(targets[train_idx], [len(v) for v in value_orders.values()])
    criterion = MaskedMultiTaskLoss(names, counts, cfg.loss, cfg.loss_tau, cfg.label_smoothing).to(runtime.device)
    optimizer = torch.optim.AdamW(
        [{"params": list(model.backbone.parameters()), "lr": cfg.lr},
         {"params": list(model.heads.parameters()), "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(max(1, steps_per_epoch * cfg.epochs_t1), cfg.warmup_fraction))
    scaler = torch.amp.GradScaler() if runtime.amp_dtype == torch.float16 else None
    step_model: nn.Module = WithFeatures(model)
    if runtime.distributed:
        step_model = DistributedDataParallel(
            step_model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)

    # --- resume after a crash: weights, optimiser, schedule and RNG as of the last finished epoch
    start_epoch, best_score = 0, -1.0
    state_path = run_dir / STATE_NAME
    if cfg.resume and state_path.is_file():
        state = torch.load(state_path, map_location=runtime.device, weights_only=False)
        load_state_strict(model, state["model"], str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_score = int(state["epoch"]) + 1, float(state["best_score"])
        log(runtime, f"{category.name}: resumed after epoch {start_epoch} (best score {best_score:.4f})")
    elif runtime.is_main:
        (run_dir / METRICS_NAME).unlink(missing_ok=True)
    barrier(runtime)

    # --- T1: end to end, the best epoch by competition score is kept
    raw_decoder = Decoder(category)
    for epoch in range(start_epoch, cfg.epochs_t1 if len(train_set) else 0):
        train_set.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_loss = train_one_epoch(cfg, runtime, step_model, train_loader, criterion, optimizer, scheduler,
                                     scaler, target_images, desc=f"{category.slug} T1 {epoch + 1}/{cfg.epochs_t1}")
        if runtime.is_main:
            logits, val_targets = collect_logits(model, val_loader, runtime.device, names, runtime.amp_dtype)
            scores = attribute_scores(raw_decoder, logits, val_targets)
            score = float(np.mean(list(scores.values()))) if scores else 0.0
            val_loss = validation_loss(criterion.cpu(), logits, val_targets)
            criterion.to(runtime.device)
            append_metrics(run_dir, {"phase": "t1", "epoch": epoch + 1, "train_loss": train_loss,
                                     "val_loss": val_loss, "val_score": score, "attributes": scores,
                                     "seconds": round(time.time() - started, 1)})
            improved = score > best_score
            if improved:
                best_score = score
                save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                          str(run_dir / BEST_T1_NAME))
            log(runtime, f"{category.slug} T1 epoch {epoch + 1}/{cfg.epochs_t1}: train loss {train_loss:.4f} "
                         f"val loss {val_loss:.4f} score {score:.4f}{' *' if improved else ''}\n"
                         f"    {format_attribute_report(scores)}")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                        "epoch": epoch, "best_score": best_score}, state_path)
        barrier(runtime)
    if not runtime.is_main:
        return {}
    if (run_dir / BEST_T1_NAME).is_file():
        load_state_strict(model, load_file(str(run_dir / BEST_T1_NAME), device=str(runtime.device)),
                          str(run_dir / BEST_T1_NAME))

    # --- T2: heads on cached features of a frozen backbone
    model.freeze_backbone()
    plain_set = ImageDataset([rows[i] for i in train_idx], targets[train_idx], spec)
    if cfg.drop_incomplete:
        if cfg.cache_images:
            plain_set.preload(max(2, cfg.num_workers))
    else:
        plain_set.cache = train_set.cache  # the un-augmented view of the same cached images
    plain = DataLoader(plain_set, batch_size=cfg.batch_size * 2, num_workers=cfg.num_workers)
    val_cache = extract_features(model, val_loader, runtime)
    val_targets = val_cache[1]
    logits_t1 = {name: head_logits(model.heads[name], val_cache[0], runtime.device) for name in names}
    score_t1 = category_score_of(raw_decoder, logits_t1, val_targets)
    score_t2 = score_t1
    if cfg.epochs_t2 > 0:
        train_cache = extract_features(model, plain, runtime)
        finetune_heads(cfg, runtime, model, criterion, train_cache, val_cache, run_dir)
        del train_cache
    logits = {name: head_logits(model.heads[name], val_cache[0], runtime.device) for name in names}
    score_t2 = category_score_of(raw_decoder, logits, val_targets)
    log(runtime, f"{category.slug} validation score: T1 {score_t1:.4f} -> T2 {score_t2:.4f}")

    # --- decoding tuned for the metric: calibration, then rules that raise the validation score
    priors = [log_priors(c) for c in counts]
    calibration = fit_calibration(logits, val_targets, names, log_priors=priors) if cfg.calibrate else {}
    score_cal = category_score_of(Decoder(category, calibration), logits, val_targets)
    log(runtime, f"{category.slug} calibration (temperature + class offsets): {score_t2:.4f} -> {score_cal:.4f}")
    rules: list[ConsistencyRule] = []
    score_rules = score_cal
    if cfg.rules:
        candidates = mine_rules(targets[train_idx], value_orders, min_support=cfg.rule_min_support,
                                min_confidence=cfg.rule_min_confidence)
        rules, trials = select_rules(candidates, category, calibration, logits, val_targets)
        score_rules = category_score_of(Decoder(category, calibration, tuple(rules)), logits, val_targets)
        for trial in trials:
            log(runtime, f"    rule {trial.rule} (conf {trial.rule.confidence:.3f}, support {trial.rule.support}): "
                         f"{trial.score_before:.4f} -> {trial.score_with:.4f} {'kept' if trial.kept else 'dropped'}")
        log(runtime, f"{category.slug} consistency rules: {len(rules)} of {len(candidates)} kept: "
                     f"{score_cal:.4f} -> {score_rules:.4f}")

    # --- checkpoint
    final_scores = attribute_scores(Decoder(category, calibration, tuple(rules)), logits, val_targets)
    metrics = {
        "complete": True,
        "val_score": score_rules,
        "val_score_t1": score_t1,
        "val_score_t2": score_t2,
        "val_score_calibrated": score_cal,
        "val_score_rules": score_rules,
        "val_attributes": final_scores,
        "train_rows": len(train_idx),
        "val_rows": len(val_idx),
        "seconds": round(time.time() - started, 1),
    }
    model.freeze_backbone(False)
    info = make_info(model, category, spec, cfg.backbone, calibration=calibration, rules=rules, metrics=metrics,
                     train_config=cfg.to_dict())
    save_checkpoint(run_dir, model, info)
    plot_curves(read_metrics(run_dir), run_dir / PLOT_NAME, title=f"{category.name} ({cfg.backbone})")
    state_path.unlink(missing_ok=True)
    (run_dir / BEST_T1_NAME).unlink(missing_ok=True)
    log(runtime, f"{category.slug}: done in {metrics['seconds']:.0f} s, validation score {score_rules:.4f}")
    return metrics


def category_score_of(decoder: Decoder, logits: dict[str, np.ndarray], targets: np.ndarray) -> float:
    scores = attribute_scores(decoder, logits, targets)
    return float(np.mean(list(scores.values()))) if scores else 0.0


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(argv)
    runtime = setup_runtime(cfg)
    torch.backends.cudnn.benchmark = runtime.device.type == "cuda"
    taxonomy = load_taxonomy()
    rows = read_split(cfg.data, "train", taxonomy)
    test_rows: list[LabelRow] = read_split(cfg.data, "test", taxonomy) if cfg.mmd_weight > 0 else []
    names = taxonomy.names if cfg.category == "all" else (taxonomy.category(cfg.category).name,)
    out = Path(cfg.out)
    summary: dict[str, Any] = {}
    started = time.time()
    for name in names:
        category = taxonomy.category(name)
        selected = category_rows(rows, category, cfg)
        if not selected:
            log(runtime, f"{name}: no training rows in {cfg.data}, skipped")
            continue
        run_dir = out / category.slug if cfg.category == "all" else out
        targets = [r for r in test_rows if r.category == name]
        summary[name] = train_category(cfg, runtime, category, selected, run_dir, targets)
    if runtime.is_main:
        scored = [m["val_score"] for m in summary.values() if m]
        result = {"val_score_mean": float(np.mean(scored)) if scored else None,
                  "seconds": round(time.time() - started, 1),
                  "categories": {k: {key: v for key, v in m.items() if key != "val_attributes"}
                                 for k, m in summary.items()}}
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_summary.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"done in {result['seconds']:.0f} s; mean validation score {result['val_score_mean']}", flush=True)
    if runtime.distributed:
        torch_dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
