"""``python -m model_training.synthetic`` writes the challenge's layout, byte-identically for any --workers."""

import filecmp
import hashlib
from pathlib import Path

import pytest
from PIL import Image

from catalog.dataset import read_labels, read_split
from catalog.taxonomy import load_taxonomy
from model_training.synthetic.__main__ import main
from model_training.synthetic.catalog_writer import build_catalog

TAXONOMY = load_taxonomy()


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "catalog"
    summary = build_catalog(out, per_category=5, test_fraction=0.4, seed=3, workers=1, progress=False)
    assert (summary.n_train, summary.n_test) == (15, 10)
    return out


def test_layout_and_csvs_follow_the_challenge_format(catalog_dir):
    for name in ("train.csv", "test.csv", "test_truth.csv", "category_attributes.parquet"):
        assert (catalog_dir / name).is_file(), name
    train = read_split(catalog_dir, "train")
    test = read_split(catalog_dir, "test")
    truth = read_labels(catalog_dir / "test_truth.csv")
    assert [r.id for r in train] == list(range(15))
    assert [r.id for r in test] == list(range(10))
    assert [(r.id, r.category) for r in truth] == [(r.id, r.category) for r in test]
    assert all(v is None for r in test for v in r.labels.values()), "test.csv must not leak labels"
    assert any(v is not None for r in truth for v in r.labels.values())
    assert (catalog_dir / "test.csv").read_text().splitlines()[0] == "id,Category"
    for split in (train, test):
        counts = {name: sum(r.category == name for r in split) for name in TAXONOMY.names}
        assert len(set(counts.values())) == 1, counts
    shipped = Path(__import__("catalog").__file__).parent / "data" / "category_attributes.parquet"
    assert filecmp.cmp(shipped, catalog_dir / "category_attributes.parquet", shallow=False)
    for row in train + test:
        assert row.image_path is not None
        with Image.open(row.image_path) as image:
            assert image.format == "JPEG"
            assert image.width == 512 and 380 <= image.height <= 768


def test_same_seed_is_byte_identical_whatever_the_workers(catalog_dir, tmp_path):
    again = tmp_path / "again"
    build_catalog(again, per_category=5, test_fraction=0.4, seed=3, workers=2, progress=False)
    assert digest(again) == digest(catalog_dir)
    other = tmp_path / "other"
    build_catalog(other, per_category=5, test_fraction=0.4, seed=4, workers=1, progress=False)
    assert digest(other)["train_images/000000.jpg"] != digest(catalog_dir)["train_images/000000.jpg"]


def test_cli_writes_the_catalog_and_a_preview(tmp_path, capsys):
    out = tmp_path / "cli"
    preview = tmp_path / "preview.png"
    code = main(["--out", str(out), "--per-category", "2", "--test-fraction", "0.5", "--seed", "1",
                 "--difficulty", "hard", "--quiet", "--preview", str(preview)])
    assert code == 0
    assert len(read_split(out, "train")) == 5 and len(read_split(out, "test")) == 5
    with Image.open(preview) as sheet:
        assert sheet.width > 512
    assert "images/s" in capsys.readouterr().out


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="difficulty"):
        build_catalog(tmp_path, per_category=1, difficulty="nightmare", progress=False)
    with pytest.raises(ValueError, match="test fraction"):
        build_catalog(tmp_path, per_category=1, test_fraction=1.5, progress=False)
