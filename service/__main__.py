"""``python -m service [--repository DIR] [--host H] [--port P]``: load the models, then serve.

With no arguments and no ``CATALOG_SERVICE_*`` variables it serves the demo repository (``models/demo``)
on 127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.backends import create_predictor
from service.errors import ModelLoadError
from service.http_protocol import guarded_protocol
from service.metrics import ServiceMetrics
from service.pipeline import ServiceState
from service.request_context import access_log, configure_logging
from service.settings import ENV_PREFIX, Settings
from service.tracing import configure_exporter

if TYPE_CHECKING:
    from service.workers import WorkerRole


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, readiness turns 503 and new predictions are refused *before* uvicorn stops
    listening and waits (up to the drain timeout) for in-flight requests; the lifespan then drains the
    batchers and the process exits."""

    def __init__(self, config: uvicorn.Config, state: ServiceState,
                 on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._state = state
        self._exit_at: float | None = None
        self._on_started = on_started

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.begin_drain()
        delay = self._state.settings.shutdown_delay_s
        if delay > 0 and self._exit_at is None and not self.should_exit:
            # Keep listening (readiness already 503) so load balancers take the pod out first; a second
            # signal stops at once.
            self._exit_at = time.monotonic() + delay
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", help=f"model repository (env {ENV_PREFIX}REPOSITORY; default models/demo)")
    parser.add_argument("--host", help=f"interface (env {ENV_PREFIX}HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port (env {ENV_PREFIX}PORT; default 8000)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    overrides: dict[str, Any] = {k: v for k, v in (("repository", args.repository), ("host", args.host),
                                                   ("port", args.port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(p) for p in problem["loc"]) or "settings"
            print(f"error: invalid setting {field}: {problem['msg']}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        from service.workers import supervise

        return supervise(settings, args.log_level)
    return serve(settings, args.log_level)


def serve(settings: Settings, log_level: str, worker: WorkerRole | None = None) -> int:
    """Load the models, then serve until a signal has drained the server: this process alone, or as one of
    ``WORKERS`` processes on the listening socket the parent hands it."""
    access_log.disabled = not settings.access_log
    metrics = ServiceMetrics(supervisor_pid=worker.supervisor_pid if worker else None)
    predictor = create_predictor(settings, metrics, worker.inference if worker else None)
    try:
        predictor.load()  # before binding the port, so a broken model is a clear message and exit 1
    except ModelLoadError as error:
        print(f"error: cannot serve: {error}", file=sys.stderr)
        return 1
    if settings.tracing:
        try:
            configure_exporter()
        except ImportError as error:
            print(f"error: TRACING is on but the tracing extra is not installed ({error}): pip install '.[tracing]'",
                  file=sys.stderr)
            return 2
    app = create_app(settings, predictor, metrics)
    shown_host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
    if worker is None or worker.index == 0:
        print(f"serving {len(predictor.models())} models from {settings.repository}: open http://{shown_host}:"
              f"{settings.port} to try them (API docs at /docs, metrics at /metrics)", flush=True)
    # The drain timeout bounds uvicorn's wait for in-flight requests (a float works: it goes to
    # asyncio.wait_for); the lifespan then gets what is left of it for the batchers.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            timeout_graceful_shutdown=settings.drain_timeout_s,  # type: ignore[arg-type]
                            access_log=False, timeout_keep_alive=settings.keep_alive_timeout_s,
                            http=guarded_protocol(settings.max_head_bytes, settings.head_timeout_s),
                            limit_concurrency=settings.max_connections)
    # uvicorn re-raises the captured signal once it has shut down; after a completed drain we want a
    # plain successful exit, so the handlers it restores and re-raises into are no-ops.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server = DrainingServer(config, app.state.service, worker.report_started if worker else None)
    server.run(worker.listeners() if worker else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
