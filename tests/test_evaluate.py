import json
import random
import subprocess
import sys

from catalog.dataset import write_labels, write_submission
from catalog.real_labels import load_real_labels
from model_training.evaluate import main


def sample(n=600):
    return random.Random(1).sample(list(load_real_labels()), n)


def test_cli_scores_truth_against_itself_as_exactly_one(tmp_path):
    truth = sample()
    write_labels(truth, tmp_path / "truth.csv")
    write_submission(truth, tmp_path / "pred.csv")
    out = subprocess.run(
        [sys.executable, "-m", "model_training.evaluate", "--truth", str(tmp_path / "truth.csv"),
         "--pred", str(tmp_path / "pred.csv"), "--json"],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout)
    assert result["score"] == 1.0
    assert set(result["categories"]) == {"Men Tshirts", "Sarees", "Kurtis", "Women Tshirts", "Women Tops & Tunics"}
    color = result["categories"]["Kurtis"]["attributes"]["color"]
    assert set(color) >= {"micro_f1", "macro_f1", "hm", "n"} and color["hm"] == 1.0


def test_cli_prints_table_with_final_score(tmp_path, capsys):
    truth = sample(200)
    write_labels(truth, tmp_path / "truth.csv")
    write_submission(truth[:150], tmp_path / "pred.csv")
    assert main(["--truth", str(tmp_path / "truth.csv"), "--pred", str(tmp_path / "pred.csv")]) == 0
    out = capsys.readouterr().out
    assert "final score" in out and "truth rows had no prediction" in out


def test_cli_reports_bad_file_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "truth.csv").write_text("id,Category\n1,Jeans\n")
    write_submission([], tmp_path / "pred.csv")
    assert main(["--truth", str(tmp_path / "truth.csv"), "--pred", str(tmp_path / "pred.csv")]) == 2
    assert "unknown category 'Jeans'" in capsys.readouterr().err
