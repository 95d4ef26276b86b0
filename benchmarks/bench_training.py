"""Ablation of the training recipe on one synthetic catalog, scored on its test split.

    .venv/bin/python benchmarks/bench_training.py [--data DIR] [--work DIR] [--reuse-full RUN_DIR] [--per-category N]

Trains the demo configuration three ways on the same data and seed -- the full recipe, without T2, and
dropping every row with a missing label in T1 (the published phase 1) -- and decodes the full run with
and without calibration and rules. Every number is the competition score of a submission written by
``model_training.predict`` and scored by ``model_training.evaluate``, plus the majority-class baseline.
Prints a markdown table. ``--reuse-full`` takes a finished ``make demo-train`` run instead of training it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from catalog.dataset import LabelRow, read_labels, read_split, write_submission
from catalog.taxonomy import load_taxonomy

PY = sys.executable
DEMO_TRAIN = ["--backbone", "convnext-atto", "--image-size", "128", "--epochs-t1", "10", "--epochs-t2", "5",
              "--batch-size", "32", "--head-hidden", "64", "--lr", "1e-3", "--head-lr", "1e-3", "--t2-lr", "1e-3",
              "--num-workers", "0", "--cache-images", "--no-progress"]


def run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-3000:]}")
    return done.stdout


def evaluate(data: Path, submission: Path) -> float:
    out = run([PY, "-m", "model_training.evaluate", "--truth", str(data / "test_truth.csv"), "--pred", str(submission),
               "--json"])
    return float(json.loads(out)["score"])


def train(data: Path, out: Path, extra: list[str]) -> float:
    started = time.time()
    run([PY, "-m", "model_training.train", "--data", str(data), "--category", "all", "--out", str(out),
         *DEMO_TRAIN, *extra, "--resume"])  # --resume: a finished category is not trained again
    return time.time() - started


def predict(data: Path, run_dir: Path, submission: Path, extra: list[str] = ()) -> float:  # type: ignore[assignment]
    run([PY, "-m", "model_training.predict", "--checkpoint", str(run_dir), "--data", str(data), "--split", "test",
         "--out", str(submission), *extra])
    return evaluate(data, submission)


def majority(data: Path, submission: Path) -> float:
    """Every test row gets, per attribute, the most frequent training value of its category."""
    taxonomy = load_taxonomy()
    train = read_split(data, "train", taxonomy)
    modes: dict[str, dict[str, str]] = {}
    for name in taxonomy.names:
        rows = [r for r in train if r.category == name]
        modes[name] = {}
        for attribute in taxonomy.category(name).attributes:
            values = Counter(r.labels[attribute.name] for r in rows if r.labels[attribute.name] is not None)
            if values:
                modes[name][attribute.name] = values.most_common(1)[0][0]
    test = read_labels(data / "test.csv", taxonomy=taxonomy)
    write_submission([LabelRow(r.id, r.category, dict(modes[r.category])) for r in test], submission, taxonomy)
    return evaluate(data, submission)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="synthetic catalog (generated when absent)")
    parser.add_argument("--work", type=Path, default=Path("build/bench_training"))
    parser.add_argument("--per-category", type=int, default=400)
    parser.add_argument("--reuse-full", type=Path, default=None, help="a finished demo run of the full recipe")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = args.data or work / "catalog"
    if not (data / "train.csv").is_file():
        run([PY, "-m", "model_training.synthetic", "--out", str(data), "--per-category", str(args.per_category),
             "--seed", "0", "--quiet"])
    seconds: dict[str, float] = {}
    full = args.reuse_full or work / "full"
    if args.reuse_full is None:
        seconds["full"] = train(data, full, [])
    seconds["no_t2"] = train(data, work / "no_t2", ["--epochs-t2", "0", "--no-calibrate", "--no-rules"])
    seconds["drop_incomplete"] = train(data, work / "drop_incomplete", ["--drop-incomplete"])

    scores = {
        "majority": majority(data, work / "majority.csv"),
        "t1": predict(data, work / "no_t2", work / "t1.csv"),
        "t2": predict(data, full, work / "t2.csv", ["--no-calibration", "--no-rules"]),
        "calibrated": predict(data, full, work / "calibrated.csv", ["--no-rules"]),
        "full": predict(data, full, work / "full.csv"),
        "drop_incomplete": predict(data, work / "drop_incomplete", work / "drop_incomplete.csv"),
    }
    rows = [
        ("majority-class baseline", scores["majority"], None),
        ("T1 only, raw argmax", scores["t1"], None),
        ("+ T2 (heads on cached features)", scores["t2"], scores["t2"] - scores["t1"]),
        ("+ calibration (temperature, class offsets)", scores["calibrated"], scores["calibrated"] - scores["t2"]),
        ("+ consistency rules = full recipe", scores["full"], scores["full"] - scores["calibrated"]),
        ("full recipe but T1 drops incomplete rows", scores["drop_incomplete"],
         scores["drop_incomplete"] - scores["full"]),
    ]
    n_train = len((data / "train.csv").read_text().splitlines()) - 1
    n_test = len((data / "test.csv").read_text().splitlines()) - 1
    print(f"catalog: {data} ({n_train} train rows, {n_test} test rows)")
    print("| variant | test score | delta |")
    print("| --- | ---: | ---: |")
    for name, value, delta in rows:
        print(f"| {name} | {value:.4f} | {'' if delta is None else f'{delta:+.4f}'} |")
    print(f"masked loss vs dropping incomplete rows: {scores['full'] - scores['drop_incomplete']:+.4f}")
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
