import json
from pathlib import Path

import pytest

from catalog.dataset import LabelRow, read_labels, read_split
from catalog.metric import score
from catalog.taxonomy import load_taxonomy
from model_training.checkpoint import load_checkpoint
from model_training.plots import read_metrics
from model_training.predict import predict_rows_for
from model_training.train import main
from tests.tiny_catalog import TINY, make_catalog


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
