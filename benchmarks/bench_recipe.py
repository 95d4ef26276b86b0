"""The recipe on one small synthetic catalog: every backbone family, an ensemble against its members (both
ways of averaging), and the effect of LLRD and EMA.

    .venv/bin/python benchmarks/bench_recipe.py [--work build/recipe] [--per-category 200] [--image-size 64]
        [--epochs 3] [--category men_tshirts] [--only NAME ...]

Every family is a tiny random-init model (no hub on these machines: the numbers compare code paths and CPU
cost, not pretrained towers). Each run trains one category in-process with the same data, seed and
schedule; "val" is the checkpoint's tuned validation score, "test" the competition score of
``model_training.predict``'s decoding on the catalog's held-out test split, "ms/image" the eval forward
pass at the training size (batch 32, the best of five). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    ConvNextV2Config,
    ConvNextV2Model,
    Dinov2Config,
    Dinov2Model,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from catalog.dataset import read_labels, read_split
from catalog.metric import score
from catalog.taxonomy import load_taxonomy
from model_training.checkpoint import load_checkpoint
from model_training.ensemble import Combine, load_predictor
from model_training.predict import predict_rows_for
from model_training.synthetic.catalog_writer import build_catalog
from model_training.train import main as train_main

VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
          "image_size": 64, "patch_size": 8}
HF_TINY: dict[str, tuple[type[PreTrainedModel], type[PretrainedConfig], dict[str, object]]] = {
    "convnextv2": (ConvNextV2Model, ConvNextV2Config, {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 2, 1]}),
    "clip": (CLIPVisionModel, CLIPVisionConfig, VISION),
    "siglip": (SiglipVisionModel, SiglipVisionConfig, VISION),
    "dinov2": (Dinov2Model, Dinov2Config, VISION),
}
COMMON = ["--batch-size", "16", "--num-workers", "0", "--head-hidden", "64", "--cache-images", "--no-progress",
          "--lr", "1e-3", "--head-lr", "1e-3", "--t2-lr", "1e-3", "--epochs-t2", "2", "--rule-min-support", "5"]
RUNS: dict[str, list[str]] = {
    "convnext-atto (hf-convnext)": ["--backbone", "convnext-atto"],
    "convnextv2 tiny": ["--backbone", "@convnextv2"],
    "vit-test (hf-vit)": ["--backbone", "vit-test"],
    "clip tiny": ["--backbone", "@clip"],
    "siglip tiny": ["--backbone", "@siglip"],
    "dinov2 tiny": ["--backbone", "@dinov2"],
    "convnext-atto + LLRD 0.7": ["--backbone", "convnext-atto", "--llrd", "0.7"],
    "convnext-atto + EMA 0.9": ["--backbone", "convnext-atto", "--ema-decay", "0.9"],
    "convnext-atto + LLRD 0.7 + EMA 0.9": ["--backbone", "convnext-atto", "--llrd", "0.7", "--ema-decay", "0.9"],
}
ENSEMBLE = ("convnext-atto (hf-convnext)", "vit-test (hf-vit)", "clip tiny")


def tiny_dir(kind: str, folder: Path) -> str:
    """A ``save_pretrained`` directory of a small random-init (library default init) ``kind`` tower."""
    path = folder / kind
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        model_class, config_class, values = HF_TINY[kind]
        model_class(config_class(**values)).save_pretrained(path)
    return str(path)


def test_score(data: Path, category: str, model: torch.nn.Module, info) -> float:  # type: ignore[no-untyped-def]
    rows = [r for r in read_split(data, "test") if r.category == category]
    truth = [r for r in read_labels(data / "test_truth.csv") if r.category == category]
    predicted = predict_rows_for(model, info, rows, batch_size=32)
    return score(truth, {r.id: r for r in predicted}).score


def ms_per_image(model: torch.nn.Module, size: int, batch: int = 32) -> float:
    x = torch.randn(batch, 3, size, size)
    times = []
    with torch.no_grad():
        model(x[:2])
        for _ in range(5):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return min(times) / batch * 1000


def train_run(args: argparse.Namespace, name: str, extra: list[str]) -> tuple[Path, float]:
    out = args.work / "runs" / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "")
    extra = [tiny_dir(e[1:], args.work / "towers") if e.startswith("@") else e for e in extra]
    started = time.time()
    code = train_main(["--data", str(args.work / "catalog"), "--category", args.category, "--out", str(out),
                       "--image-size", str(args.image_size), "--epochs-t1", str(args.epochs), *COMMON, *extra,
                       "--resume"])
    if code != 0:
        raise SystemExit(f"training {name} failed ({code})")
    return out, time.time() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/recipe"))
    parser.add_argument("--per-category", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--category", default="men_tshirts")
    parser.add_argument("--only", nargs="*", default=None, help="run names to train (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    category = load_taxonomy().category(args.category).name
    data = args.work / "catalog"
    if not (data / "train.csv").is_file():
        build_catalog(data, per_category=args.per_category, seed=0, progress=False)
    started = time.time()
    lines = ["| run | val | test | train s | ms/image |", "| --- | ---: | ---: | ---: | ---: |"]
    runs: dict[str, Path] = {}
    for name, extra in RUNS.items():
        if args.only is not None and name not in args.only:
            continue
        out, seconds = train_run(args, name, extra)
        runs[name] = out
        model, info = load_checkpoint(out)
        lines.append(f"| {name} | {info.metrics['val_score']:.4f} | {test_score(data, category, model, info):.4f} | "
                     f"{seconds:.0f} | {ms_per_image(model, args.image_size):.2f} |")
    members = [runs[name] for name in ENSEMBLE if name in runs]
    if len(members) > 1:
        combines: tuple[Combine, ...] = ("log_probs", "logits")
        for combine in combines:
            loaded = load_predictor(members, combine=combine)
            label = "calibrated log-probabilities" if combine == "log_probs" else "raw logits"
            lines.append(f"| ensemble of {len(members)} ({label}) | | "
                         f"{test_score(data, category, loaded.model, loaded.info):.4f} | | "
                         f"{ms_per_image(loaded.model, args.image_size):.2f} |")
    print(f"{category}, {args.per_category} rows per category (80 % train), {args.image_size} px, {args.epochs} T1 "
          f"epochs; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"{time.time() - started:.0f} s\n")
    print("\n".join(lines))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
