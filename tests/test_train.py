import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from catalog.dataset import LabelRow, read_labels, read_split, write_labels
from catalog.metric import score
from catalog.real_labels import load_real_labels
from catalog.taxonomy import load_taxonomy
from model_training.checkpoint import load_checkpoint
from model_training.plots import read_metrics
from model_training.predict import predict_rows_for
from model_training.train import main

COLORS = {"default": (120, 120, 120), "multicolor": (230, 160, 20), "white": (250, 250, 250), "black": (15, 15, 15)}


def draw(row: LabelRow, path: Path, size: int = 48) -> None:
    """Colour is the garment's fill, a printed pattern adds stripes, long sleeves widen the shape."""
    labels = row.labels
    image = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(image)
    fill = COLORS.get(labels.get("color") or "", (90, 60, 200))
    wide = labels.get("sleeve_length") == "long sleeves"
    d.rectangle([4 if wide else 14, 8, size - (4 if wide else 14), size - 6], fill=fill)
    if labels.get("pattern") == "printed":
        for x in range(0, size, 6):
            d.line([x, 8, x, size - 6], fill=(200, 20, 20), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


def make_catalog(root: Path, n_train: int = 48, n_test: int = 24, category: str = "Men Tshirts", seed: int = 0) -> Path:
    """A tiny challenge-layout catalog whose labels (sampled from the real table, missing ones included)
    are visible in the images."""
    real = [r for r in load_real_labels() if r.category == category]
    picked = random.Random(seed).sample(real, n_train + n_test)
    rows = [LabelRow(id=i, category=r.category, labels=dict(r.labels)) for i, r in enumerate(picked)]
    train, test = rows[:n_train], rows[n_train:]
    for split, split_rows in (("train", train), ("test", test)):
        for row in split_rows:
            draw(row, root / f"{split}_images" / f"{row.id:06d}.jpg")
    write_labels(train, root / "train.csv")
    write_labels(test, root / "test.csv", with_labels=False)
    write_labels(test, root / "test_truth.csv")
    return root


TINY = ["--backbone", "convnext-test", "--image-size", "32", "--batch-size", "8", "--num-workers", "0",
        "--head-hidden", "16", "--no-progress", "--lr", "3e-3", "--head-lr", "3e-3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_catalog(tmp_path_factory.mktemp("catalog"), n_train=96, n_test=40)
    out = root / "run"
    assert main(["--data", str(root), "--category", "men_tshirts", "--out", str(out), "--epochs-t1", "8",
                 "--epochs-t2", "3", "--rule-min-support", "3", *TINY]) == 0
    return root, out


def majority_score(root: Path) -> float:
    train = read_split(root, "train")
    truth = read_labels(root / "test_truth.csv")
    category = load_taxonomy()["men_tshirts"]
    majority = {}
    for attribute in category.attributes:
        values = [r.labels[attribute.name] for r in train if r.labels[attribute.name] is not None]
        majority[attribute.name] = max(set(values), key=values.count)
    predictions = {r.id: LabelRow(r.id, r.category, dict(majority)) for r in truth}
    return score(truth, predictions).score


def test_training_lowers_loss_and_writes_a_complete_run(trained):
    _, out = trained
    t1 = [r for r in read_metrics(out) if r["phase"] == "t1"]
    assert len(t1) == 8
    assert t1[-1]["train_loss"] < t1[0]["train_loss"]
    assert {"model.safetensors", "checkpoint.json", "metrics.jsonl", "curves.png"} <= {p.name for p in out.iterdir()}
    assert not (out / "train_state.pt").exists()
    _, info = load_checkpoint(out)
    metrics = info.metrics
    assert metrics["complete"]
    # every decoding step is only kept when it does not lower the validation score
    assert metrics["val_score_t2"] >= metrics["val_score_t1"] - 1e-9
    assert metrics["val_score_calibrated"] >= metrics["val_score_t2"] - 1e-9
    assert metrics["val_score_rules"] >= metrics["val_score_calibrated"] - 1e-9
    assert info.git_commit and info.train_config["epochs_t1"] == 8
    summary = json.loads((out / "train_summary.json").read_text())
    assert set(summary["categories"]) == {"Men Tshirts"}


def test_trained_model_beats_the_majority_baseline_on_test(trained):
    root, out = trained
    model, info = load_checkpoint(out)
    predictions = predict_rows_for(model, info, read_split(root, "test"), batch_size=16)
    truth = read_labels(root / "test_truth.csv")
    got = score(truth, {r.id: r for r in predictions}).score
    assert got > majority_score(root) + 0.05, got


def test_resume_skips_a_completed_category(trained, capsys):
    root, out = trained
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main(["--data", str(root), "--category", "men_tshirts", "--out", str(out), "--resume", *TINY]) == 0
    assert "already complete" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == before
