"""What the routes share: the service state as a typed dependency, and the API key check (run before any
body is read: inline on the routes that read their own body, by :class:`KeyFirstRoute` on the others)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from service.errors import UnauthorizedError
from service.pipeline import ServiceState


# ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool, a thread hop per
# request that costs more than the work itself.
async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]


def check_api_key(state: ServiceState, x_api_key: str | None, authorization: str | None) -> None:
    """Checks the key when one is configured; constant-time so timing does not leak its prefix."""
    expected = state.settings.api_key
    if expected is None:
        return
    given = x_api_key
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise UnauthorizedError("missing or wrong API key (send it in X-API-Key or Authorization: Bearer)")


class KeyFirstRoute(APIRoute):
    """For routes with a form body: FastAPI reads and parses the body before it solves the route's
    dependencies, so a dependency would check the API key only after an anonymous client had uploaded
    (and the server spooled) a whole request. This checks the key and the drain first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def key_first(request: Request) -> Response:
            state: ServiceState = request.app.state.service
            check_api_key(state, request.headers.get("x-api-key"), request.headers.get("authorization"))
            state.lifecycle.check_accepting()
            return await handler(request)

        return key_first
