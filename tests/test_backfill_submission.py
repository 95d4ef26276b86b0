"""``backfill/submission.py``: the challenge CSV from the shards, in listing order, that the scorer reads."""

from __future__ import annotations

import pyarrow as pa

from backfill.schema import STAGE_SCHEMA
from backfill.shards import write_shard
from backfill.submission import write_submission_csv
from catalog.dataset import read_predictions


def test_csv_rows_come_from_the_shards_and_failed_images_are_empty(tmp_path):
    kurti = {"category": "Kurtis", "attr_1": "red", "attr_2": "straight", "attr_3": "calf length",
             "attr_4": "daily", "attr_5": "net", "attr_6": "solid", "attr_7": "solid", "attr_8": "short sleeves",
             "attr_9": "regular", "attr_10": "dummy"}
    write_shard(tmp_path, 0, pa.Table.from_pylist([{"id": "10", "row": 0, "shard": 0, **kurti}], schema=STAGE_SCHEMA))
    failed = {"id": "3", "row": 1, "shard": 1, "category": "Kurtis", "error": "invalid_image"}
    write_shard(tmp_path, 1, pa.Table.from_pylist([failed], schema=STAGE_SCHEMA))
    path = write_submission_csv(tmp_path, 2)
    lines = path.read_text().splitlines()
    assert lines[0] == "id,Category,len,attr_1,attr_2,attr_3,attr_4,attr_5,attr_6,attr_7,attr_8,attr_9,attr_10"
    assert lines[1:] == ["10,Kurtis,9,red,straight,calf length,daily,net,solid,solid,short sleeves,regular,dummy",
                         "3,Kurtis,9,,,,,,,,,,dummy"]
    predictions = read_predictions(path)
    assert predictions[10].labels["color"] == "red" and predictions[3].labels["color"] is None
