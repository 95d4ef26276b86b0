"""Score a submission against a truth file with the competition metric.

    python -m model_training.evaluate --truth TRUTH.csv --pred PRED.csv [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from catalog.dataset import DatasetError, read_labels, read_predictions
from catalog.metric import score


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--truth", required=True, help="CSV with true labels (train.csv format)")
    parser.add_argument("--pred", required=True, help="submission CSV (id,Category,len,attr_1..attr_10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        truth = read_labels(args.truth)
        predictions = read_predictions(args.pred)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = score(truth, predictions)
    if args.json:
        print(json.dumps(report.to_json(), indent=None))
    else:
        print(report.format_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
