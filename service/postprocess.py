"""From decoded rows to answers: the request's threshold and abstention at it, supplier-mismatch
conflicts, the challenge-style row and the response body."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any

from catalog.dataset import UNUSED_SLOT
from catalog.decoding import Row
from catalog.taxonomy import ATTRIBUTE_COLUMNS, Category, TaxonomyError
from service.errors import InvalidDeclaredError, InvalidRequestError
from service.schemas import (
    Alternative,
    AttributeResult,
    CategoryCheck,
    Conflict,
    OutOfDistribution,
    PredictResponse,
    Timings,
)

OOD_ACTIONS = ("abstain", "keep")
OOD_ACTION_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(OOD_ACTIONS), "description": (
    "for an image unlike the model's training images: abstain on every attribute, or keep the predictions "
    "(default: the server's)")}
THRESHOLD_SCHEMA: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1,
                                    "description": "abstain below this confidence, 0 to 1 (default: the server's)"}


def parse_threshold(value: object) -> float | None:
    """A request's threshold, from a form field, the query string or a JSON parameter: None when not
    given, else a number from 0 to 1 (booleans and NaN are refused, naming the value)."""
    if value is None or value == "":
        return None
    number = math.nan
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if not 0.0 <= number <= 1.0:  # also refuses nan
        raise InvalidRequestError(f"threshold must be a number from 0 to 1; got {value!r}")
    return number


def parse_ood_action(value: object) -> str | None:
    """A request's ``ood`` field: what to do with a flagged image, ``abstain`` or ``keep`` (None: the server's
    default)."""
    if value is None or value == "":
        return None
    if value not in OOD_ACTIONS:
        raise InvalidRequestError(f"ood must be one of {', '.join(OOD_ACTIONS)}; got {value!r}")
    return str(value)


def parse_declared(text: str | None, category: Category) -> dict[str, str]:
    """The ``declared`` form field (a JSON object of attribute name or column -> value) checked against
    the taxonomy; every problem is named in one 422."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidDeclaredError(f"declared must be a JSON object: {error}") from None
    except ValueError:  # an integer of thousands of digits: Python refuses to convert it
        raise InvalidDeclaredError("declared holds a number too long to read; values are category names") from None
    except RecursionError:  # "[[[[..." nested past the parser's stack
        raise InvalidDeclaredError("declared must be a flat JSON object; it is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidDeclaredError(f"declared must be a JSON object, got {type(data).__name__}")
    return validate_declared(data, category)


def validate_declared(data: Mapping[str, object], category: Category) -> dict[str, str]:
    declared: dict[str, str] = {}
    problems: list[str] = []
    for key, value in data.items():
        if value is None or value == "":
            continue  # the supplier left it blank: nothing to compare
        try:
            attribute = category.attribute(str(key))
            declared[attribute.name] = attribute.validate(str(value))
        except TaxonomyError as error:
            problems.append(str(error))
    if problems:
        raise InvalidDeclaredError("declared attributes outside the taxonomy: " + "; ".join(problems))
    return declared


def find_conflicts(category: Category, row: Row, declared: Mapping[str, str], min_confidence: float) -> list[Conflict]:
    """Declared values that differ from what the image shows with at least ``min_confidence``."""
    conflicts = []
    for attribute in category.attributes:
        stated = declared.get(attribute.name)
        prediction = row[attribute.name]
        if stated is None or stated == prediction.value or prediction.confidence < min_confidence:
            continue
        conflicts.append(Conflict(attribute=attribute.name, column=attribute.column, declared=stated,
                                  predicted=prediction.value, confidence=prediction.confidence))
    return conflicts


def attribute_results(row: Row, threshold: float, *, abstain_all: bool = False) -> dict[str, AttributeResult]:
    """Each attribute's answer: the one place abstention is applied (on every attribute with ``abstain_all``,
    for an image the model's detector flags)."""
    results = {}
    for name, p in row.items():
        abstained = abstain_all or p.confidence < threshold
        results[name] = AttributeResult(
            value=None if abstained else p.value, confidence=p.confidence, abstained=abstained,
            decoded_value=p.value, top_k=[Alternative(value=v, confidence=c) for v, c in p.top_k],
        )
    return results


def challenge_row(category: Category, row: Row) -> dict[str, str]:
    """``attr_1..attr_10`` as a submission row: the decoded value even when abstaining (the challenge
    scores every slot, so a best guess beats a blank), ``dummy`` past the category's length."""
    values = {a.column: row[a.name].value for a in category.attributes}
    return {column: values.get(column, UNUSED_SLOT) for column in ATTRIBUTE_COLUMNS}


def out_of_distribution(score: float | None, threshold: float | None) -> OutOfDistribution | None:
    """The image's OOD verdict, or None when the model has no detector."""
    if score is None or threshold is None:
        return None
    return OutOfDistribution(score=round(score, 6), threshold=threshold, flagged=score > threshold)


def withheld(ood: OutOfDistribution | None, ood_action: str) -> bool:
    """Whether a flagged image's predictions are withheld (every attribute abstains, no conflicts)."""
    return ood is not None and ood.flagged and ood_action == "abstain"


def build_response(*, model: str, version: int, category: Category, row: Row, threshold: float,
                   declared: Mapping[str, str], conflict_threshold: float, timings: Timings,
                   ood: OutOfDistribution | None = None, ood_action: str = "abstain",
                   category_check: CategoryCheck | None = None) -> PredictResponse:
    hold = withheld(ood, ood_action)
    return PredictResponse(
        model=model, model_version=version, category=category.name, threshold=threshold,
        attributes=attribute_results(row, threshold, abstain_all=hold),
        conflicts=[] if hold else find_conflicts(category, row, declared, conflict_threshold),
        row=challenge_row(category, row), timings=timings, out_of_distribution=ood, category_check=category_check,
    )
