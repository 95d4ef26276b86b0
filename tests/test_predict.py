import json
import shutil
import subprocess
import sys

import pytest

from catalog.dataset import read_labels, read_predictions
from model_training.checkpoint import CheckpointError
from model_training.ensemble import group_checkpoints
from model_training.predict import main
from model_training.train import main as train_main
from tests.tiny_catalog import TINY, make_catalog


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two categories trained with --category all into one parent directory."""
    root = tmp_path_factory.mktemp("catalog")
    make_catalog(root / "a", n_train=24, n_test=8, category="Men Tshirts", seed=1)
    make_catalog(root / "b", n_train=24, n_test=8, category="Kurtis", seed=2)
    data = root / "data"
    (data / "train_images").mkdir(parents=True)
    (data / "test_images").mkdir(parents=True)
    for name in ("train.csv", "test.csv", "test_truth.csv"):
        a = (root / "a" / name).read_text().splitlines()
        b = (root / "b" / name).read_text().splitlines()[1:]
        # make ids unique across the two catalogs
        b = [str(int(line.split(",", 1)[0]) + 1000) + "," + line.split(",", 1)[1] for line in b]
        (data / name).write_text("\n".join(a + b) + "\n")
    for split in ("train", "test"):
        for p in (root / "a" / f"{split}_images").iterdir():
            shutil.copy(p, data / f"{split}_images" / p.name)
        for p in (root / "b" / f"{split}_images").iterdir():
            shutil.copy(p, data / f"{split}_images" / f"{int(p.stem) + 1000:06d}.jpg")
    out = root / "runs"
    assert train_main(["--data", str(data), "--category", "all", "--out", str(out), "--epochs-t1", "1",
                       "--epochs-t2", "1", *TINY]) == 0
    return data, out


def test_predict_writes_a_submission_that_evaluate_scores(runs, tmp_path):
    data, out = runs
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["kurtis", "men_tshirts"]
    submission = tmp_path / "submission.csv"
    assert main(["--checkpoint", str(out), "--data", str(data), "--split", "test", "--out", str(submission)]) == 0
    predictions = read_predictions(submission)
    truth = read_labels(data / "test_truth.csv")
    assert set(predictions) == {r.id for r in truth}
    assert all(v is not None for p in predictions.values() for v in p.labels.values())
    result = subprocess.run([sys.executable, "-m", "model_training.evaluate", "--truth", str(data / "test_truth.csv"),
                             "--pred", str(submission), "--json"], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert set(report["categories"]) == {"Men Tshirts", "Kurtis"}
    assert 0.0 < report["score"] <= 1.0
    assert all(c["missing_predictions"] == 0 for c in report["categories"].values())


def test_per_category_dirs_and_missing_category(runs, tmp_path, capsys):
    data, out = runs
    found = group_checkpoints([out / "men_tshirts", out / "kurtis"])
    assert found == {"Men Tshirts": [out / "men_tshirts"], "Kurtis": [out / "kurtis"]}
    with pytest.raises(CheckpointError, match="given twice"):
        group_checkpoints([out, out / "kurtis"])
    code = main(["--checkpoint", str(out / "kurtis"), "--data", str(data), "--out", str(tmp_path / "s.csv")])
    assert code == 2 and "no checkpoint for category ['Men Tshirts']" in capsys.readouterr().err


def test_two_runs_predict_as_one_ensemble_per_category_with_flip_tta(runs, tmp_path, capsys):
    data, out = runs
    second = tmp_path / "vit"
    assert train_main(["--data", str(data), "--category", "all", "--out", str(second), "--epochs-t1", "1",
                       "--epochs-t2", "0", *TINY, "--backbone", "vit-test", "--image-size", "48"]) == 0
    submission = tmp_path / "ensemble.csv"
    assert main(["--checkpoint", str(out), str(second), "--data", str(data), "--out", str(submission),
                 "--tta", "flip"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(ensemble) (flip TTA)") == 2
    truth = read_labels(data / "test_truth.csv")
    assert set(read_predictions(submission)) == {r.id for r in truth}


def test_category_restricts_prediction_to_the_categories_asked_for(runs, tmp_path, capsys):
    data, out = runs
    submission = tmp_path / "kurtis.csv"
    assert main(["--checkpoint", str(out / "kurtis"), "--data", str(data), "--out", str(submission),
                 "--category", "kurtis"]) == 0
    kurtis = {r.id for r in read_labels(data / "test_truth.csv") if r.category == "Kurtis"}
    assert set(read_predictions(submission)) == kurtis
    assert main(["--checkpoint", str(out), "--data", str(data), "--out", str(submission), "--category", "Hats"]) == 2
    assert "Hats" in capsys.readouterr().err
