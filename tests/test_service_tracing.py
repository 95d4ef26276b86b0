"""``service/tracing.py``: with TRACING on, a request's span has read, preprocess, queue and compute
children named by route; off, nothing is recorded; on without the extra is a clear error."""

from __future__ import annotations

import builtins

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.tracing import Tracing, TracingUnavailableError
from tests.service.fakes import image_bytes
from tests.service.inprocess import serve

pytestmark = pytest.mark.anyio
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)  # once per process: this module is the only one that sets it


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_a_traced_request_shows_where_its_time_went(tmp_path):
    EXPORTER.clear()
    async with serve(tmp_path, tracing=True) as client:
        response = await client.post("/predict?category=men_tshirts", content=image_bytes(),
                                     headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    finished = EXPORTER.get_finished_spans()
    spans = {span.name: span for span in finished}
    by_id = {span.context.span_id: span for span in finished}
    root = spans["POST /predict"]
    assert {"read", "preprocess", "queue", "compute"} <= set(spans)

    def ancestors(span):  # FastAPI adds spans of its own between ours
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            yield span

    for name in ("read", "preprocess", "queue", "compute"):
        assert root in list(ancestors(spans[name])), name
        assert root.start_time <= spans[name].start_time <= spans[name].end_time <= root.end_time + 1_000_000
    assert root.attributes["http.response.status_code"] == 200 and spans["compute"].attributes["batch_size"] == 1
    assert spans["preprocess"].end_time <= spans["queue"].start_time + 1 and spans["queue"].end_time <= (
        spans["compute"].start_time + 1)


async def test_without_tracing_nothing_is_recorded(tmp_path):
    EXPORTER.clear()
    async with serve(tmp_path) as client:  # a tracer provider is set, but TRACING is off
        await client.post("/predict?category=men_tshirts", content=image_bytes(),
                          headers={"Content-Type": "image/jpeg"})
    assert [span.name for span in EXPORTER.get_finished_spans()] == []


def test_tracing_on_without_the_extra_is_refused_naming_it(monkeypatch):
    real_import = builtins.__import__

    def no_opentelemetry(name, *args, **kwargs):
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_opentelemetry)
    with pytest.raises(TracingUnavailableError, match=r"pip install '\.\[tracing\]'"):
        Tracing(True)
