"""The backfill's output rows: what the service answers for the same image and model version, flattened
into columns (the challenge row ``attr_1..attr_10``, each slot's confidence and abstention), or the
service's error code for a row whose image failed."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from catalog.decoding import Row
from catalog.taxonomy import ATTRIBUTE_COLUMNS, Category
from service.postprocess import attribute_results, challenge_row


def confidence_column(column: str) -> str:
    return f"{column}_confidence"


def abstained_column(column: str) -> str:
    return f"{column}_abstained"


OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("category", pa.string()), ("model", pa.string()), ("model_version", pa.int32()),
    *((c, pa.string()) for c in ATTRIBUTE_COLUMNS),
    *((confidence_column(c), pa.float64()) for c in ATTRIBUTE_COLUMNS),
    *((abstained_column(c), pa.bool_()) for c in ATTRIBUTE_COLUMNS),
    ("error", pa.string()), ("error_detail", pa.string()),
])
"""Every shard's schema. ``attr_k`` is the decoded value even when abstaining (the service's ``row``) and
``dummy`` past the category's attributes; confidence and abstention are null there. An error row has
``error`` (the service's code, e.g. ``invalid_image``, ``payload_too_large``, or ``read_failed``) and
null predictions."""

INTERNAL_SCHEMA = pa.schema([
    ("row", pa.int64()), ("shard", pa.int32()),
    ("read_s", pa.float64()), ("decode_s", pa.float64()), ("infer_s", pa.float64()),
])
"""Carried beside the output to the driver: where the row goes and the time it cost; never written."""
STAGE_SCHEMA = pa.unify_schemas([OUTPUT_SCHEMA, INTERNAL_SCHEMA])


def prediction_record(category: Category, row: Row, threshold: float) -> dict[str, Any]:
    """The output columns of one predicted image (``error`` null), from the service's own functions."""
    results = attribute_results(row, threshold)
    record: dict[str, Any] = dict(challenge_row(category, row))
    for attribute in category.attributes:
        result = results[attribute.name]
        record[confidence_column(attribute.column)] = result.confidence
        record[abstained_column(attribute.column)] = result.abstained
    return record
