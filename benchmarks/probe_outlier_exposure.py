"""Outlier-exposure probe: does an auxiliary "is this category X" head, trained with other categories'
training images as negatives, make the demo backbone separate other categories' test images?

Per category and mode (``base``: the demo's T1 recipe; ``oe``: + category head on pooled features and as
many negatives as positives per step), trains convnext-atto 128 px from random init (T1 only, best epoch
by validation competition score, raw decoder: no T2/calibration/rules, the same for both modes), then on the
catalog's test split measures: AUROC of -category logit and of Mahalanobis (shared-shrunk covariance fitted
on own un-augmented training features, model_training.ood.fit_detector) for own test vs the other four
categories' test images (all and per category), and the competition score (catalog.metric.score) on own test.

BENCHMARKS.md, "Unfamiliar images", holds its results. From the repository root:

    PYTHONPATH=. .venv/bin/python benchmarks/probe_outlier_exposure.py --data build/demo/catalog \\
        --categories men_tshirts --modes base,oe --epochs 30 --cat-weight 10 --out build/oe
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from catalog.dataset import LabelRow, read_labels, read_split
from catalog.decoding import Decoder
from catalog.metric import score as competition_score
from catalog.preprocessing import DEFAULT_INTERPOLATION, DEFAULT_RESIZE, PreprocessSpec
from catalog.taxonomy import load_taxonomy
from model_training.augment import Augment
from model_training.backbone import build_backbone
from model_training.data import ImageDataset, encode_targets, stratified_split
from model_training.end_to_end import warmup_cosine
from model_training.heads import AttentionHead
from model_training.losses import MISSING, MaskedMultiTaskLoss, class_counts
from model_training.model import CategoryModel, value_orders_for
from model_training.ood import fit_detector
from model_training.validation import category_score, decode_indices


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(out score > in score) + 0.5 P(tie): higher score = more out-of-distribution."""
    from scipy.stats import rankdata
    s = np.concatenate([in_scores, out_scores])
    r = rankdata(s)
    n_in, n_out = len(in_scores), len(out_scores)
    return float((r[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


@torch.no_grad()
def run_eval(model: CategoryModel, cat_head: nn.Module | None, dataset: Any,
             batch: int = 64) -> tuple[torch.Tensor, np.ndarray | None, dict[str, np.ndarray]]:
    model.eval()
    pooled: list[torch.Tensor] = []
    cat_logit: list[torch.Tensor] = []
    logits: dict[str, list[torch.Tensor]] = {n: [] for n in model.attribute_names}
    for pixels, _ in DataLoader(dataset, batch_size=batch):
        feats = model.features(pixels)
        p = model.pooled(feats)
        pooled.append(p)
        if cat_head is not None:
            cat_head.eval()
            cat_logit.append(cat_head(feats))
        for n, v in model.forward_heads(feats).items():
            logits[n].append(v)
    model.train()
    return (torch.cat(pooled).double(),
            torch.cat(cat_logit).numpy() if cat_logit else None,
            {n: torch.cat(v).numpy() for n, v in logits.items()})


class CatHead(nn.Module):
    """feature map (N, C, h, w) -> one logit per image: ``linear`` on the pooled vector (LayerNorm + Linear)
    or ``attention``: the attribute heads' AttentionHead with 2 classes (logit = difference)."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.net: nn.Module
        if kind == "linear":
            self.net = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, 1))
        else:
            self.net = AttentionHead(channels, 2, 64, 0.2)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return self.net(feats.mean(dim=(2, 3))).squeeze(1)
        out = self.net(feats)
        return out[:, 1] - out[:, 0]


def train_one(args: Any, taxonomy: Any, cat_name: str, mode: str, train_rows: Any, truth_rows: Any) -> dict:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    category = taxonomy.category(cat_name)
    vo = value_orders_for(category)
    own = [r for r in train_rows if r.category == category.name]
    others = [r for r in train_rows if r.category != category.name]
    targets = encode_targets(own, vo)
    tr, va = stratified_split(targets, 0.15, args.seed)
    backbone = build_backbone("convnext-atto", image_size=args.image_size)
    spec = PreprocessSpec(height=args.image_size, width=args.image_size, resize=DEFAULT_RESIZE,
                          interpolation=DEFAULT_INTERPOLATION, mean=backbone.pretrained_cfg.mean,
                          std=backbone.pretrained_cfg.std)
    aug = Augment(0.5, 10.0)
    pos_set = ImageDataset([own[i] for i in tr], targets[tr], spec, aug, seed=args.seed)
    pos_set.preload(2)
    val_set = ImageDataset([own[i] for i in va], targets[va], spec)
    val_set.preload(2)
    A = len(vo)
    neg_set = None
    if mode == "oe":
        neg_set = ImageDataset(others, np.full((len(others), A), MISSING, np.int64), spec, aug, seed=args.seed + 1)
        neg_set.preload(2)
    model = CategoryModel(backbone, vo, head_hidden=64, head_dropout=0.2)
    C = model.num_features
    cat_head = CatHead(C, args.cat_head) if mode == "oe" else None
    counts = class_counts(targets[tr], [len(v) for v in vo.values()])
    criterion = MaskedMultiTaskLoss(list(vo), counts, "ce")
    groups = [{"params": list(backbone.parameters()), "lr": args.lr},
              {"params": list(model.heads.parameters()), "lr": args.lr}]
    if cat_head is not None:
        groups.append({"params": list(cat_head.parameters()), "lr": args.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.05)
    B = args.batch_size
    steps = len(pos_set) // B  # drop_last, as the demo (len > batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(max(1, steps * args.epochs), 0.05))
    all_params = [p for g in groups for p in g["params"]]
    decoder = Decoder(category)
    best, best_state, log = -1.0, None, []
    t0 = time.time()
    for epoch in range(args.epochs):
        te = time.time()
        pos_set.set_epoch(epoch)
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        pos_loader = DataLoader(pos_set, batch_size=B, shuffle=True, generator=g, drop_last=True)
        neg_iter = None
        if neg_set is not None:
            neg_set.set_epoch(epoch)
            n_neg = round(args.neg_ratio * B)
            idx = np.random.default_rng(args.seed * 1000 + epoch).choice(len(neg_set), steps * n_neg, replace=False)
            neg_iter = iter(DataLoader(Subset(neg_set, idx.tolist()), batch_size=n_neg))
        model.train()
        if cat_head is not None:
            cat_head.train()
        tot_attr, tot_cat = 0.0, 0.0
        for pixels, target in pos_loader:
            n_pos = pixels.shape[0]
            if neg_iter is not None:
                neg_pixels, _ = next(neg_iter)
                pixels = torch.cat([pixels, neg_pixels])
            feats = model.features(pixels)
            logits = model.forward_heads(feats[:n_pos])
            loss, _ = criterion(logits, target)
            tot_attr += float(loss)
            loss = args.attr_weight * loss
            if cat_head is not None:
                y = torch.cat([torch.ones(n_pos), torch.zeros(pixels.shape[0] - n_pos)])
                cat_loss = F.binary_cross_entropy_with_logits(cat_head(feats), y)
                tot_cat += float(cat_loss)
                loss = loss + args.cat_weight * cat_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(all_params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        _, _, vlog = run_eval(model, None, val_set)
        score = category_score(decoder, vlog, targets[va])
        improved = score > best or (args.select_last and epoch + 1 == args.epochs)
        if improved:
            best = score
            best_state = (copy.deepcopy(model.state_dict()),
                          copy.deepcopy(cat_head.state_dict()) if cat_head is not None else None, epoch + 1)
        entry = {"epoch": epoch + 1, "attr_loss": tot_attr / steps, "cat_loss": tot_cat / steps,
                 "val_score": score, "seconds": round(time.time() - te, 1)}
        log.append(entry)
        print(f"[{cat_name} {mode}] epoch {epoch + 1}/{args.epochs} attr {entry['attr_loss']:.3f} "
              f"cat {entry['cat_loss']:.3f} val {score:.4f}{' *' if improved else ''} {entry['seconds']} s",
              flush=True)
    train_seconds = time.time() - t0
    assert best_state is not None
    model.load_state_dict(best_state[0])
    if cat_head is not None and best_state[1] is not None:
        cat_head.load_state_dict(best_state[1])

    # Evaluation
    train_eval = pos_set.unaugmented()
    train_pooled, _, _ = run_eval(model, cat_head, train_eval)
    val_pooled, val_cat, _ = run_eval(model, cat_head, val_set)
    test_targets = np.full((len(truth_rows), A), MISSING, np.int64)
    test_set = ImageDataset(truth_rows, test_targets, spec)
    test_set.preload(2)
    test_pooled, test_cat, test_logits = run_eval(model, cat_head, test_set)
    detector = fit_detector("mahalanobis", train_pooled)
    with torch.no_grad():
        maha = detector(test_pooled.float(), {}).double().numpy()
        maha_val = detector(val_pooled.float(), {}).double().numpy()
    cats = np.array([r.category for r in truth_rows])
    own_mask = cats == category.name
    scores = {"mahalanobis": (maha, maha_val)}
    if test_cat is not None and val_cat is not None:
        scores["category_head"] = (-test_cat, -val_cat)
    ood = {}
    for name, (s, s_val) in scores.items():
        threshold = float(np.quantile(s_val, 0.95))
        res = {"auroc_all": auroc(s[own_mask], s[~own_mask]),
               "false_alarms_at_val95": float((s[own_mask] > threshold).mean()),
               "detected_at_val95": float((s[~own_mask] > threshold).mean())}
        for other in sorted(set(cats) - {category.name}):
            res[f"auroc[{other}]"] = auroc(s[own_mask], s[cats == other])
        ood[name] = res
    if cat_head is not None and neg_set is not None:
        sample = np.random.default_rng(0).choice(len(neg_set), min(320, len(neg_set)), replace=False)
        neg_eval = neg_set.unaugmented()
        _, train_cat, _ = run_eval(model, cat_head, train_eval)
        _, neg_cat, _ = run_eval(model, cat_head, Subset(neg_eval, sample.tolist()))
        assert train_cat is not None and neg_cat is not None
        ood["category_head"]["train_auroc"] = auroc(-train_cat, -neg_cat)
    own_idx = np.flatnonzero(own_mask)
    own_logits = {n: v[own_idx] for n, v in test_logits.items()}
    pred_idx = decode_indices(decoder, own_logits)
    names = category.attribute_names
    preds = {truth_rows[i].id: LabelRow(truth_rows[i].id, category.name,
                                        {n: vo[n][pred_idx[k, a]] for a, n in enumerate(names)})
             for k, i in enumerate(own_idx)}
    report = competition_score([truth_rows[i] for i in own_idx], preds, taxonomy)
    result = {"category": cat_name, "mode": mode, "epochs": args.epochs, "best_epoch": best_state[2],
              "best_val_score": best, "train_seconds": round(train_seconds, 1),
              "test_score": report.categories[category.name].score,
              "test_attributes": {a.name: a.hm for a in report.categories[category.name].scored},
              "ood": ood, "log": log, "train_rows": len(tr), "val_rows": len(va),
              "negatives_pool": len(others) if mode == "oe" else 0}
    print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=1), flush=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="build/demo/catalog")
    p.add_argument("--categories", default="men_tshirts,women_tshirts")
    p.add_argument("--modes", default="base,oe")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--neg-ratio", type=float, default=1.0)
    p.add_argument("--cat-weight", type=float, default=1.0)
    p.add_argument("--cat-head", choices=("linear", "attention"), default="linear")
    p.add_argument("--attr-weight", type=float, default=1.0)
    p.add_argument("--select-last", action="store_true", help="keep the last epoch (e.g. with --attr-weight 0)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/work/explore/oe/results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    taxonomy = load_taxonomy()
    train_rows = read_split(args.data, "train", taxonomy)
    truth_rows = read_labels(Path(args.data) / "test_truth.csv", Path(args.data) / "test_images", taxonomy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for cat in args.categories.split(","):
        name = taxonomy.category(cat).name
        for mode in args.modes.split(","):
            result = train_one(args, taxonomy, name, mode, train_rows, truth_rows)
            (out / f"{taxonomy.category(cat).slug}_{mode}_s{args.seed}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
