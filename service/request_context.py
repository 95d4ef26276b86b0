"""Which request a log line belongs to: an ``X-Request-ID`` accepted from the client (or generated),
returned on the response, carried in a context variable into every log line written while the request
runs, and one JSON access-log line per request."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

REQUEST_ID_HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
"""A client's id is kept only if it is short and plain, so it cannot forge log lines or bloat them."""

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("service.access")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _ACCEPTED.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record, for formats that show it (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str) -> None:
    """Log lines with their request id on stderr; the access log as bare JSON lines (one object per line,
    for log shippers), on stderr too."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    lines = logging.StreamHandler()
    lines.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers = [lines]
    access_log.propagate = False


def log_access(method: str, path: str, route: str, status: int, started: float, client: tuple[str, int] | None,
               received: int) -> None:
    """One JSON line per request on ``service.access`` (when that logger is enabled)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(json.dumps({
            "time": round(time.time(), 3), "request_id": request_id.get(), "method": method, "path": path,
            "route": route, "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1e3, 2), "bytes_in": received,
            "client": client[0] if client else None,
        }))
