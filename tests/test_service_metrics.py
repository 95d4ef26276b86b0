"""``service/metrics.py`` as an operator sees it: the standard process collectors, no ``_created``
series, routes labelled by template (static files and the API docs too), and unknown paths kept out of
the rejections."""

from __future__ import annotations

import re

import pytest

from tests.service.inprocess import serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_metrics_are_the_ones_operators_expect(tmp_path):
    async with serve(tmp_path) as client:
        for path in ("/static/app.js", "/docs", "/favicon.ico", "/no/such/path", "/v2/models/jeans"):
            await client.get(path)
        text = (await client.get("/metrics")).text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "python_info"} <= names
    assert not [n for n in names if n.endswith("_created")]
    routes = set(re.findall(r'catalog_http_request_duration_seconds_count\{method="GET",route="([^"]+)",status="(\d+)"',
                            text))
    assert {("/static", "200"), ("/docs", "200"), ("unmatched", "404"), ("/v2/models/{name}", "404")} <= routes
    rejections = dict(re.findall(r'catalog_rejections_total\{reason="([^"]+)"\} ([0-9.]+)', text))
    assert rejections == {"model_not_found": "1.0"}  # the unknown paths are not refused work
