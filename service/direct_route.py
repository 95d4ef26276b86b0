"""``POST /predict`` handed from the server straight to its route, past FastAPI's routing layers.

Between uvicorn and a route, FastAPI runs about twenty layers of ASGI calls (error, telemetry and
body-limit middleware, the exception middleware, the exit stack, two routers, the route and its request
wrapper), and each upload pays them: about 0.15 ms of event-loop CPU per request, a sixth of the
service's own per-request cost on this machine (BENCHMARKS.md, "Where the service's time goes").
:class:`ServiceApp` sends ``POST /predict`` through the same middleware the app installs
(``service.middleware.middleware_chain``) to the same route function, and answers the errors it raises
with the app's own exception handlers; every other request, and ``/predict`` itself while tracing is
on (FastAPI's request span lives in the skipped layers), takes FastAPI's way. The route stays declared
on the app, so the OpenAPI document is unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Any]
"""An exception handler as FastAPI keeps them (ours are all coroutine functions)."""

PATH, METHOD = "/predict", "POST"


class ServiceApp(FastAPI):
    """FastAPI, with ``POST /predict`` given to :attr:`direct` when one is set."""

    direct: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.direct is not None and scope["type"] == "http" and scope["path"] == PATH
                and scope["method"] == METHOD):
            scope["app"] = self
            await self.direct(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class DirectRoute:
    """Calls ``route``'s endpoint as FastAPI would: a ``Request`` in, its ``Response`` out; an error it
    raises is answered by the handler FastAPI's exception middleware would pick (by the error's class),
    and one with no such handler goes on to the middleware around this (which answers it 500)."""

    def __init__(self, route: APIRoute, handlers: Mapping[Any, Handler]) -> None:
        self._route = route
        self._endpoint: Endpoint = route.endpoint
        # As Starlette's ExceptionMiddleware: ``Exception`` (and 500) belong to the outer error handling.
        self._handlers = {kind: handler for kind, handler in handlers.items()
                          if isinstance(kind, type) and kind is not Exception}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self._route  # what the request-timing middleware labels the request by
        request = Request(scope, receive, send)
        try:
            response = await self._endpoint(request)
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                raise
            answer = handler(request, error)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler_for(self, error: Exception) -> Handler | None:
        for kind in type(error).__mro__:
            handler = self._handlers.get(kind)
            if handler is not None:
                return handler
        return None


def find_route(router: APIRouter, path: str, method: str) -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"the router has no {method} {path} route")
