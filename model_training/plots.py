"""The metrics log (one JSON object per line) and its PNG plot of loss and score curves."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "curves.png"


def append_metrics(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    path = Path(run_dir) / METRICS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(dict(record), default=float) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(records: Sequence[Mapping[str, Any]], out: str | Path, title: str = "") -> Path:
    """Training/validation loss and validation score per T1 epoch; T2 head fine-tuning in a third panel."""
    import matplotlib

    matplotlib.use("Agg")  # headless: training runs on servers and in CI
    import matplotlib.pyplot as plt

    t1 = [r for r in records if r.get("phase") == "t1"]
    t2 = [r for r in records if r.get("phase") == "t2"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    epochs = [r["epoch"] for r in t1]
    axes[0].plot(epochs, [r["train_loss"] for r in t1], marker="o", label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in t1], marker="o", label="validation")
    axes[0].set(title="T1 loss (sum over heads)", xlabel="epoch")
    axes[0].legend()
    axes[1].plot(epochs, [r["val_score"] for r in t1], marker="o", color="C2")
    axes[1].set(title="T1 validation score", xlabel="epoch")
    for name in sorted({r["attribute"] for r in t2}):
        rows = [r for r in t2 if r["attribute"] == name]
        axes[2].plot([r["epoch"] for r in rows], [r["val_hm"] for r in rows], marker=".", label=name)
    axes[2].set(title="T2 per-head validation HM", xlabel="epoch")
    if t2:
        axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(out)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
