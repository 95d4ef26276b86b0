import csv

import pytest

from catalog.dataset import (
    SUBMISSION_COLUMNS,
    DatasetError,
    LabelRow,
    read_labels,
    read_predictions,
    read_split,
    write_labels,
    write_submission,
)
from tests.helpers import write_csv, write_image

MEN = {"Category": "Men Tshirts", "len": 5, "attr_1": "white", "attr_2": "polo", "attr_3": "solid",
       "attr_4": "solid", "attr_5": "short sleeves"}


def make_split(tmp_path, rows, split="train", images=True):
    write_csv(tmp_path / f"{split}.csv", rows)
    if images:
        for row in rows:
            write_image(tmp_path / f"{split}_images" / f"{int(row['id']):06d}.jpg")
    return tmp_path


def test_reads_labels_and_keeps_missing_as_none(tmp_path):
    rows = [{"id": 0, **MEN}, {"id": 7, **MEN, "attr_2": "", "attr_5": ""}]
    data = read_split(make_split(tmp_path, rows), "train")
    assert [r.id for r in data] == [0, 7]
    assert data[0].labels["neck"] == "polo"
    assert data[1].labels["neck"] is None and data[1].labels["sleeve_length"] is None
    assert data[1].image_path == tmp_path / "train_images" / "000007.jpg"


def test_test_csv_without_labels_gives_all_missing(tmp_path):
    write_csv(tmp_path / "test.csv", [{"id": 3, "Category": "Sarees"}], header=["id", "Category"])
    write_image(tmp_path / "test_images" / "000003.jpg")
    (row,) = read_split(tmp_path, "test")
    assert row.category == "Sarees" and len(row.labels) == 10 and set(row.labels.values()) == {None}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"Category": "Jeans"}, "line 2: id 0: unknown category 'Jeans'"),
        ({"attr_5": "elbow sleeves"}, "line 2: id 0, attr_5: 'elbow sleeves' is not an allowed value"),
        ({"len": 6}, "line 2: id 0: len 6 disagrees with the taxonomy"),
        ({"id": "x1"}, "line 2: id 'x1' is not an integer"),
    ],
)
def test_bad_rows_raise_naming_row_and_file(tmp_path, change, expected):
    write_csv(tmp_path / "train.csv", [{"id": 0, **MEN, **change}])
    with pytest.raises(DatasetError) as info:
        read_labels(tmp_path / "train.csv")
    assert str(tmp_path / "train.csv") in str(info.value)
    assert expected in str(info.value)


def test_missing_image_raises_naming_the_file(tmp_path):
    make_split(tmp_path, [{"id": 0, **MEN}, {"id": 1, **MEN}])
    (tmp_path / "train_images" / "000001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"line 3: id 1: image .*000001.jpg does not exist"):
        read_split(tmp_path, "train")


def test_duplicate_id_is_an_error(tmp_path):
    write_csv(tmp_path / "train.csv", [{"id": 4, **MEN}, {"id": 4, **MEN}])
    with pytest.raises(DatasetError, match="line 3: id 4 repeats the row on line 2"):
        read_labels(tmp_path / "train.csv")


def test_submission_has_exact_challenge_format(tmp_path):
    rows = [LabelRow(5, "Men Tshirts", {"color": "black", "neck": "round", "pattern": "printed",
                                        "print_or_pattern_type": "typography", "sleeve_length": None})]
    path = tmp_path / "sub.csv"
    assert write_submission(rows, path) == 1
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        assert tuple(next(reader)) == SUBMISSION_COLUMNS
        assert next(reader) == ["5", "Men Tshirts", "5", "black", "round", "printed", "typography", "",
                                "dummy", "dummy", "dummy", "dummy", "dummy"]
    again = read_labels(path)
    assert again[0].labels["color"] == "black" and again[0].labels["sleeve_length"] is None


def test_submission_rejects_value_outside_taxonomy(tmp_path):
    with pytest.raises(ValueError, match="'purple' is not an allowed value of attribute 'color'"):
        write_submission([LabelRow(1, "Men Tshirts", {"color": "purple"})], tmp_path / "s.csv")


def test_write_labels_round_trips(tmp_path):
    rows = [LabelRow(1, "Kurtis", {"color": "red", "length": None})]
    write_labels(rows, tmp_path / "t.csv")
    (back,) = read_labels(tmp_path / "t.csv")
    assert back.labels["color"] == "red" and back.labels["length"] is None
    write_labels(rows, tmp_path / "ids.csv", with_labels=False)
    assert (tmp_path / "ids.csv").read_text().splitlines() == ["id,Category", "1,Kurtis"]


def test_read_predictions_keeps_invalid_values(tmp_path):
    write_csv(tmp_path / "p.csv", [{"id": 0, **MEN, "attr_1": "purple"}])
    preds = read_predictions(tmp_path / "p.csv")
    assert preds[0].labels["color"] == "purple"
