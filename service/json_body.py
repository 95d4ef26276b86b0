"""A route class for JSON bodies from untrusted clients (the v2 infer route): the API key is checked
before the body is parsed, the body's structure is bounded before any object is built, and the parse
runs off the event loop, so a small crafted body can neither stall other requests nor cost gigabytes.

FastAPI parses a JSON body before it solves the route's dependencies (the API key among them) and does
so on the event loop; this class does both first, then hands FastAPI the parsed value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from service.deps import check_api_key
from service.errors import InvalidRequestError, PayloadTooLargeError
from service.pipeline import ServiceState

FIELD_ALLOWANCE = 256
"""JSON elements a request may hold besides one per image: its fields, outputs and parameters."""


def max_elements(state: ServiceState) -> int:
    return 2 * state.settings.max_batch_items + FIELD_ALLOWANCE


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


class KeyFirstJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked_then_parsed(request: Request) -> Response:
            state: ServiceState = request.app.state.service
            check_api_key(state, request.headers.get("x-api-key"), request.headers.get("authorization"))
            body = await request.body()
            if body:
                # Starlette's Request caches its parsed JSON here; FastAPI then validates that value.
                request._json = await asyncio.to_thread(parse_bounded, body, max_elements(state))
            return await handler(request)

        return checked_then_parsed
