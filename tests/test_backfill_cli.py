"""``backfill/__main__.py``: argument and listing problems exit 2 with one line naming them, before Ray
starts (the runs themselves are in tests/integration/test_backfill.py)."""

from __future__ import annotations

import pytest

from backfill.__main__ import config_from, main, parser
from benchmarks.onnx_factory import build_repository
from tests.helpers import write_csv


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_problems_found_before_any_work_exit_2_naming_them(tmp_path, capsys):
    repository = build_repository(tmp_path / "repo", slugs=("kurtis",))
    listing = write_csv(tmp_path / "l.csv", [{"id": "a", "category": "Sarees", "image": "x.jpg"}],
                        ["id", "category", "image"])
    base = ["--repository", str(repository), "--out", str(tmp_path / "out")]
    code, err = run(capsys, *base, "--input", str(listing))
    assert code == 2 and "sarees" in err and "no numbered versions" in err
    code, err = run(capsys, *base, "--input", str(tmp_path / "absent.csv"))
    assert code == 2 and "no such listing file" in err
    kurti = write_csv(tmp_path / "k.csv", [{"id": "a", "category": "Kurtis", "image": "x.jpg"}],
                      ["id", "category", "image"])
    code, err = run(capsys, *base, "--input", str(kurti), "--format", "csv")
    assert code == 2 and "ids are integers" in err
    code, err = run(capsys, *base, "--input", str(kurti), "--threshold", "1.5")
    assert code == 2 and "--threshold must be from 0 to 1" in err
    code, err = run(capsys, *base, "--input", str(kurti), "--version", "kurtis")
    assert code == 2 and "SLUG=VERSION" in err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_arguments_become_the_config(tmp_path):
    args = parser().parse_args(["--repository", "r", "--input", "l.csv", "--out", "o", "--resume", "--format", "csv",
                                "--shard-size", "50", "--threshold", "0.3", "--version", "sarees=2", "--actors", "3",
                                "--session-threads", "2", "--address", "head:6379"])
    config = config_from(args)
    assert (config.resume, config.output_format, config.shard_size, config.threshold) == (True, "csv", 50, 0.3)
    assert config.pins == {"sarees": 2} and config.address == "head:6379"
    assert (config.pipeline.actors, config.pipeline.session_threads) == (3, 2)
    assert config_from(parser().parse_args(["--repository", "r", "--input", "l", "--out", "o"])).threshold == 0.5
    with pytest.raises(SystemExit):
        parser().parse_args(["--repository", "r", "--input", "l", "--out", "o", "--shard-size", "0"])
