"""Train one model per category: T1 end to end, T2 head fine-tuning on cached features, then decoding
calibration and consistency rules fitted on the validation split (the CLI is :mod:`model_training.train`).

Multi-GPU: DDP for T1; rank 0 runs validation, T2, calibration and writes the checkpoint while the other
ranks wait for it. :func:`train_category` reads top to bottom: data, model, resume, T1, T2, decoding,
checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, DistributedSampler

from catalog.dataset import LabelRow, read_split
from catalog.decoding import Decoder
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import Category, load_taxonomy
from model_training.augment import Augment
from model_training.backbone import Backbone, build_backbone
from model_training.checkpoint import INFO_NAME, load_state_strict, make_info, read_info, save_checkpoint
from model_training.config import TrainConfig
from model_training.data import ImageDataset, category_rows, complete_rows, encode_targets, stratified_split
from model_training.decoding_tuning import HeadLogits, TunedDecoding, tune_decoding
from model_training.end_to_end import WithFeatures, endless, train_one_epoch, warmup_cosine
from model_training.head_finetune import all_head_logits, extract_features, finetune_heads
from model_training.losses import MaskedMultiTaskLoss, class_counts
from model_training.model import CategoryModel, value_orders_for
from model_training.ood import FittedOod, fit_category_ood, save_ood
from model_training.optim import (
    backbone_lr,
    backbone_param_groups,
    check_channels_last,
    compiled,
    ema_updater,
    make_ema,
)
from model_training.plots import METRICS_NAME, PLOT_NAME, append_metrics, plot_curves, read_metrics
from model_training.resume import STATE_NAME, Resumable, load_state, save_state
from model_training.runtime import Runtime, log, seed_everything, setup_runtime, wait_for_main
from model_training.validation import (
    attribute_scores,
    category_score,
    collect_logits,
    format_attribute_report,
    mean_attribute_score,
    validation_loss,
)

BEST_T1_NAME = "best_t1.safetensors"


@dataclass(frozen=True)
class CategoryRun:
    """What every step of one category's training shares: the options, the process, the category, the
    folder it writes to, the preprocessing it trains with and when it started."""

    cfg: TrainConfig
    runtime: Runtime
    category: Category
    run_dir: Path
    spec: PreprocessSpec
    value_orders: dict[str, tuple[str, ...]]
    started: float

    def log(self, message: str) -> None:
        log(self.runtime, message)


@dataclass(frozen=True)
class Split:
    """Value indices of every row (-1 where missing) and the row indices of each use. T2, rule mining and
    class priors always see every training row; only T1 may be restricted to the complete ones."""

    targets: np.ndarray
    train: np.ndarray
    val: np.ndarray
    t1: np.ndarray


@dataclass(frozen=True)
class Loaders:
    t1_set: ImageDataset
    t1: DataLoader[Any]
    sampler: DistributedSampler[Any]
    """Shuffles from (seed, epoch) alone, so a resumed run sees the same order (one shard per rank)."""
    val: DataLoader[Any]
    target_images: Iterator[Tensor] | None
    """Unlabelled test-split images for the MMD term, or None when it is off."""


@dataclass(frozen=True)
class Training:
    model: CategoryModel
    step_model: nn.Module
    """What T1 steps: ``model`` returning its pooled features too, wrapped in DDP when distributed."""
    criterion: MaskedMultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    ema: AveragedModel | None = None
    """With ``--ema-decay``: the weights' moving average, what is validated and kept instead of ``model``."""

    @property
    def evaluated(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def train_category(cfg: TrainConfig, runtime: Runtime, category: Category, rows: Sequence[LabelRow], run_dir: Path,
                   target_rows: Sequence[LabelRow] = (), other_rows: Sequence[LabelRow] = ()) -> dict[str, Any]:
    """Train, tune and save one category's checkpoint in ``run_dir``; returns its validation metrics
    (``other_rows``: the data's other categories, which the OOD detector's category check contrasts with)."""
    started = time.time()
    finished = completed_metrics(cfg, runtime, category, run_dir)
    if finished is not None:
        return finished
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    backbone = build_backbone(cfg.backbone, image_size=cfg.image_size, drop_path_rate=cfg.drop_path or None)
    log(runtime, f"backbone {backbone.loaded_from}; mean/std from {backbone.pretrained_cfg.source}")
    spec = PreprocessSpec(height=cfg.image_size, width=cfg.image_size, resize=cfg.resize,
                          interpolation=cfg.interpolation, mean=backbone.pretrained_cfg.mean,
                          std=backbone.pretrained_cfg.std)
    run = CategoryRun(cfg, runtime, category, run_dir, spec, value_orders_for(category), started)
    split = split_rows(run, rows)
    loaders = build_loaders(run, rows, split, target_rows)
    counts = class_counts(split.targets[split.train], [len(v) for v in run.value_orders.values()])
    training = build_training(run, backbone, counts, len(loaders.t1))
    start_epoch, best_score = resume_or_start(run, training)
    train_end_to_end(run, training, loaders, start_epoch, best_score)
    metrics: dict[str, Any] = {}
    if runtime.is_main:
        load_best_t1(run, training.model)
        train_set = feature_set(run, rows, split, loaders.t1_set)
        heads = finetune_on_features(run, training, train_set, loaders.val)
        decoding = tune_decoding(cfg, runtime, category, heads, split.targets[split.train], counts)
        ood = fit_category_ood(cfg, training.model, train_set, loaders.val, runtime.device, run.log, other_rows)
        metrics = write_checkpoint(run, training.model, split, heads, decoding, ood)
    # The other ranks wait for rank 0 here instead of entering the next category's collectives, where
    # rank 0's T2 could outlast the training group's timeout.
    wait_for_main(runtime)
    return metrics


def completed_metrics(cfg: TrainConfig, runtime: Runtime, category: Category, run_dir: Path) -> dict[str, Any] | None:
    """With ``--resume``, the metrics of a checkpoint already completed in ``run_dir`` (None: train it)."""
    if not (cfg.resume and (run_dir / INFO_NAME).is_file()):
        return None
    metrics = read_info(run_dir).metrics
    if not metrics.get("complete"):
        return None
    log(runtime, f"{category.name}: already complete in {run_dir}, skipped (--resume)")
    return metrics


def split_rows(run: CategoryRun, rows: Sequence[LabelRow]) -> Split:
    """Stratified train/validation split; every row trains the heads it has labels for."""
    cfg = run.cfg
    targets = encode_targets(rows, run.value_orders)
    train_idx, val_idx = stratified_split(targets, cfg.val_fraction, cfg.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"{run.category.name}: not enough rows to train ({len(rows)})")
    t1_idx = np.intersect1d(train_idx, complete_rows(targets)) if cfg.drop_incomplete else train_idx
    run.log(f"{run.category.name}: {len(t1_idx)} T1 rows, {len(train_idx)} T2 rows, {len(val_idx)} validation "
            f"rows -> {run.run_dir}")
    if len(t1_idx) == 0:
        run.log(f"{run.category.name}: no complete rows, T1 is skipped (--drop-incomplete)")
    return Split(targets, train_idx, val_idx, t1_idx)


def cached(cfg: TrainConfig, dataset: ImageDataset) -> ImageDataset:
    """``dataset`` with its images decoded and resized into memory when ``--cache-images`` asks for it."""
    if cfg.cache_images:
        dataset.preload(max(2, cfg.num_workers))
    return dataset


def build_loaders(run: CategoryRun, rows: Sequence[LabelRow], split: Split,
                  target_rows: Sequence[LabelRow]) -> Loaders:
    """The augmented T1 loader (sharded under DDP), the validation loader and the MMD target images."""
    cfg, runtime, spec = run.cfg, run.runtime, run.spec
    t1_set = cached(cfg, ImageDataset([rows[i] for i in split.t1], split.targets[split.t1], spec,
                                      Augment(cfg.augment_p, cfg.max_rotation), seed=cfg.seed))
    val_set = cached(cfg, ImageDataset([rows[i] for i in split.val], split.targets[split.val], spec))
    sampler: DistributedSampler[Any] = DistributedSampler(t1_set, num_replicas=runtime.world_size,
                                                          rank=runtime.rank, seed=cfg.seed)
    pin = runtime.device.type == "cuda"
    t1 = DataLoader(t1_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                    pin_memory=pin, drop_last=len(t1_set) > cfg.batch_size)
    val = DataLoader(val_set, batch_size=cfg.batch_size * 2, num_workers=cfg.num_workers, pin_memory=pin)
    target_images = None
    if cfg.mmd_weight > 0 and target_rows:
        target_set = ImageDataset(list(target_rows), encode_targets(target_rows, run.value_orders), spec)
        target_images = endless(DataLoader(target_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                           num_workers=cfg.num_workers))
    return Loaders(t1_set, t1, sampler, val, target_images)


def build_training(run: CategoryRun, backbone: Backbone, counts: list[np.ndarray], batches_per_epoch: int) -> Training:
    """Model, loss, AdamW (backbone and heads at their own rates) with a warm-up cosine schedule."""
    cfg, runtime = run.cfg, run.runtime
    model = CategoryModel(backbone, run.value_orders, head_hidden=cfg.head_hidden,
                          head_dropout=cfg.head_dropout).to(runtime.device)
    criterion = MaskedMultiTaskLoss(list(run.value_orders), counts, cfg.loss, cfg.loss_tau,
                                    cfg.label_smoothing).to(runtime.device)
    lr = backbone_lr(backbone, cfg.lr)
    run.log(f"backbone lr {lr:g}{' (the family default)' if cfg.lr is None else ''}, layer decay {cfg.llrd:g}, "
            f"EMA decay {cfg.ema_decay:g}")
    optimizer = torch.optim.AdamW(
        [*backbone_param_groups(backbone, lr, cfg.llrd), {"params": list(model.heads.parameters()), "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(max(1, steps_per_epoch * cfg.epochs_t1), cfg.warmup_fraction))
    scaler = torch.amp.GradScaler() if runtime.amp_dtype == torch.float16 else None
    if cfg.channels_last:
        check_channels_last(backbone)
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    step_model: nn.Module = WithFeatures(model, channels_last=cfg.channels_last)
    if runtime.distributed:
        step_model = DistributedDataParallel(
            step_model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    if cfg.compile:
        step_model = compiled(step_model, runtime.device)
    return Training(model, step_model, criterion, optimizer, scheduler, scaler, make_ema(model, cfg.ema_decay))


def resume_or_start(run: CategoryRun, training: Training) -> tuple[int, float]:
    """``(first T1 epoch, best score so far)``: after a crash, weights, optimiser, schedule and RNG as of
    the last finished epoch (``--resume``); otherwise a fresh start with an empty metrics log."""
    start_epoch, best_score = 0, -1.0
    state_path = run.run_dir / STATE_NAME
    if run.cfg.resume and state_path.is_file():
        start_epoch, best_score = load_state(state_path, resumable(training), run.runtime.device)
        run.log(f"{run.category.name}: resumed after epoch {start_epoch} (best score {best_score:.4f})")
    elif run.runtime.is_main:
        (run.run_dir / METRICS_NAME).unlink(missing_ok=True)
    wait_for_main(run.runtime)
    return start_epoch, best_score


def resumable(training: Training) -> Resumable:
    return Resumable(training.model, training.optimizer, training.scheduler, training.scaler, training.ema)


def train_end_to_end(run: CategoryRun, training: Training, loaders: Loaders, start_epoch: int,
                     best_score: float) -> None:
    """T1: every epoch is validated on rank 0; the best by competition score is kept in ``BEST_T1_NAME``."""
    cfg = run.cfg
    for epoch in range(start_epoch, cfg.epochs_t1 if len(loaders.t1_set) else 0):
        loaders.t1_set.set_epoch(epoch)
        loaders.sampler.set_epoch(epoch)
        train_loss = train_one_epoch(cfg, run.runtime, training.step_model, loaders.t1, training.criterion,
                                     training.optimizer, training.scheduler, training.scaler, loaders.target_images,
                                     desc=f"{run.category.slug} T1 {epoch + 1}/{cfg.epochs_t1}",
                                     after_step=ema_updater(training.ema, training.model))
        if run.runtime.is_main:
            best_score = validate_epoch(run, training, loaders.val, epoch, train_loss, best_score)
        wait_for_main(run.runtime)


def validate_epoch(run: CategoryRun, training: Training, val_loader: DataLoader[Any], epoch: int,
                   train_loss: float, best_score: float) -> float:
    """Score one T1 epoch, keep its weights if it is the best so far and save the state ``--resume`` needs;
    returns the best score."""
    runtime, model = run.runtime, training.evaluated
    logits, val_targets = collect_logits(model, val_loader, runtime.device, list(run.value_orders),
                                         runtime.amp_dtype)
    scores = attribute_scores(Decoder(run.category), logits, val_targets)
    score = mean_attribute_score(scores)
    val_loss = validation_loss(training.criterion, logits, val_targets, runtime.device)
    append_metrics(run.run_dir, {"phase": "t1", "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                                 "val_score": score, "attributes": scores,
                                 "seconds": round(time.time() - run.started, 1)})
    improved = score > best_score
    if improved:
        best_score = score
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(run.run_dir / BEST_T1_NAME))
    run.log(f"{run.category.slug} T1 epoch {epoch + 1}/{run.cfg.epochs_t1}: train loss {train_loss:.4f} "
            f"val loss {val_loss:.4f} score {score:.4f}{' *' if improved else ''}\n"
            f"    {format_attribute_report(scores)}")
    save_state(run.run_dir / STATE_NAME, resumable(training), epoch, best_score)
    return best_score


def load_best_t1(run: CategoryRun, model: CategoryModel) -> None:
    """The best T1 epoch's weights, if T1 ran (otherwise the model stays as built or resumed)."""
    path = run.run_dir / BEST_T1_NAME
    if path.is_file():
        load_state_strict(model, load_file(str(path), device=str(run.runtime.device)), str(path))


def feature_set(run: CategoryRun, rows: Sequence[LabelRow], split: Split, t1_set: ImageDataset) -> ImageDataset:
    """Every training row, un-augmented, for T2's features: T1's images when T1 saw them all."""
    if not run.cfg.drop_incomplete:
        return t1_set.unaugmented()
    return cached(run.cfg, ImageDataset([rows[i] for i in split.train], split.targets[split.train], run.spec))


def finetune_on_features(run: CategoryRun, training: Training, train_set: ImageDataset,
                         val_loader: DataLoader[Any]) -> HeadLogits:
    """T2: heads on cached features of the frozen backbone (skipped with ``--epochs-t2 0``)."""
    cfg, runtime, model = run.cfg, run.runtime, training.model
    model.freeze_backbone()
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size * 2, num_workers=cfg.num_workers)
    val_features = extract_features(model, val_loader, runtime)
    val_targets = val_features[1]
    raw_decoder = Decoder(run.category)
    score_t1 = category_score(raw_decoder, all_head_logits(model, val_features[0], runtime.device), val_targets)
    if cfg.epochs_t2 > 0:
        train_features = extract_features(model, train_loader, runtime)
        finetune_heads(cfg, runtime, model, training.criterion, train_features, val_features, run.run_dir)
        del train_features
    logits = all_head_logits(model, val_features[0], runtime.device)
    score_t2 = category_score(raw_decoder, logits, val_targets)
    run.log(f"{run.category.slug} validation score: T1 {score_t1:.4f} -> T2 {score_t2:.4f}")
    return HeadLogits(logits, val_targets, score_t1, score_t2)


def write_checkpoint(run: CategoryRun, model: CategoryModel, split: Split, heads: HeadLogits,
                     decoding: TunedDecoding, ood: FittedOod | None) -> dict[str, Any]:
    """The checkpoint (with its OOD detector), its metrics and curves; T1's resume state and best weights
    are then removed."""
    cfg, category = run.cfg, run.category
    final = Decoder(category, decoding.calibration, tuple(decoding.rules))
    metrics = {
        "complete": True,
        "val_score": decoding.score_rules,
        "val_score_t1": heads.score_t1,
        "val_score_t2": heads.score_t2,
        "val_score_calibrated": decoding.score_calibrated,
        "val_score_rules": decoding.score_rules,
        "val_attributes": attribute_scores(final, heads.logits, heads.targets),
        "train_rows": len(split.train),
        "val_rows": len(split.val),
        "seconds": round(time.time() - run.started, 1),
    }
    model.freeze_backbone(False)
    info = make_info(model, category, run.spec, cfg.backbone, calibration=decoding.calibration,
                     rules=decoding.rules, metrics=metrics, train_config=cfg.to_dict(),
                     ood=save_ood(run.run_dir, ood) if ood is not None else None)
    save_checkpoint(run.run_dir, model, info)
    plot_curves(read_metrics(run.run_dir), run.run_dir / PLOT_NAME, title=f"{category.name} ({cfg.backbone})")
    (run.run_dir / STATE_NAME).unlink(missing_ok=True)
    (run.run_dir / BEST_T1_NAME).unlink(missing_ok=True)
    run.log(f"{category.slug}: done in {metrics['seconds']:.0f} s, validation score {decoding.score_rules:.4f}")
    return metrics


def train(cfg: TrainConfig) -> int:
    """Every selected category in turn, then ``train_summary.json``."""
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
        summary[name] = train_category(cfg, runtime, category, selected, run_dir, targets, rows)
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

