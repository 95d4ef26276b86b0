"""uvicorn's httptools protocol with the limits it lacks: a cap on the size of a request's head (431)
and on the time to send it (408), so a client cannot hold memory with a huge header or a connection
with a head sent a byte at a time. Body size and body time are bounded in the ASGI layer
(``service/middleware.py``); idle keep-alive and the number of connections by uvicorn's own settings.

The answers (these two, and uvicorn's 400 for a request it cannot parse) are the JSON error body,
written straight to the socket before the connection is closed: the application never sees such a
request, so they are logged, one line each, rather than counted in its metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("service.http")

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}
_CODES = {400: "bad_request", 408: "request_timeout", 431: "header_too_large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Give uvicorn :func:`guarded_protocol`'s subclass, which sets the two limits (from the settings)."""

    max_head_bytes: int
    head_timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True
        self._head_bytes = 0  # of the head parsed so far
        self._head_received = 0  # of the chunks received while the head was incomplete
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused: nothing more is parsed on this connection
        super().data_received(data)
        # Counted per chunk received, not per parsed header: the parser hands a header over only once
        # it is complete, and buffers (copying) until then, so one endless header must be cut here.
        if self._head_pending and not self.transport.is_closing():
            self._head_received += len(data)
            if self._head_received > self.max_head_bytes:
                self._refuse(431, f"request head exceeds {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        # A keep-alive connection's next head is timed from its first byte; until then the connection
        # is idle, and uvicorn's keep-alive timeout applies.
        super().on_message_begin()
        self._head_pending, self._head_bytes, self._head_received = True, 0, 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        """A head that arrived whole in one chunk is measured as it is parsed."""
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._refuse(431, f"request head exceeds {self.max_head_bytes} bytes")
            raise ValueError("request head too large")  # stops the parser; the 431 is decided already

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self._refusal is not None:
            self._send_refusal()  # the refusal of a pipelined request waited for this response
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_pending:
            self._refuse(408, f"request head not received within {self.head_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close; after the response in progress, if a pipelined request is refused
        while an earlier one is still being answered (its answer must not be lost or misattributed)."""
        if self.transport.is_closing() or self._refusal is not None:
            return
        self._refusal = (status, message)
        self.transport.pause_reading()
        if self.cycle is None or self.cycle.response_complete:
            self._send_refusal()

    def _send_refusal(self) -> None:
        if self._refusal is None or self.transport.is_closing():
            return
        status, message = self._refusal
        log.warning("refused %s:%s: %d %s", *(self.client or ("?", "?")), status, message)
        body = json.dumps({"error": message, "code": _CODES[status]}).encode()
        self.transport.write(
            f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.transport.close()


def guarded_protocol(max_head_bytes: int, head_timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``), with these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s})
