"""JSON bodies from untrusted clients (the v2 infer route), bounded before any object is built: a small
crafted body (millions of numbers in 6 MB) must neither stall other requests nor cost gigabytes. The
caller runs the parse off the event loop, after checking the API key: FastAPI's own body parsing would
do it on the loop, before the route's dependencies (the key among them)."""

from __future__ import annotations

import json
from typing import Any

from service.errors import InvalidRequestError, PayloadTooLargeError

FIELD_ALLOWANCE = 256
"""JSON elements a request may hold besides one per image: its fields, outputs and parameters."""


def max_elements(max_batch_items: int) -> int:
    return 2 * max_batch_items + FIELD_ALLOWANCE


def parse_bounded(body: bytes, limit: int) -> Any:
    """``body`` parsed as JSON, refused (413) when it holds more than ``limit`` array or object elements.
    Every element after the first in an array or object is preceded by a comma, so counting commas (in C,
    before parsing) bounds them from above; commas inside strings only make the bound stricter."""
    elements = body.count(b",") + 1
    if elements > limit:
        raise PayloadTooLargeError(f"the JSON body holds up to {elements} elements; the limit is {limit} "
                                   "(one per image plus the request's fields)")
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidRequestError("the JSON body is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, or an integer of thousands of digits
        raise InvalidRequestError(f"the body is not valid JSON: {str(error)[:200]}") from None
