"""Typed dependencies shared by the routes."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from service.errors import UnauthorizedError
from service.pipeline import ServiceState


# Both dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread
# pool, a thread hop per request that costs more than the work itself.
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


async def require_api_key(
    state: State,
    x_api_key: Annotated[str | None, Header(description="the API key, when the service has one")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    check_api_key(state, x_api_key, authorization)


ApiKey = Depends(require_api_key)
