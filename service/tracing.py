"""Optional OpenTelemetry tracing (the ``tracing`` extra, setting ``TRACING``): FastAPI's own span per
request (its native telemetry, on when a tracer provider is configured), with the service's child spans
for where the time went: reading the body, preprocessing, waiting in the queue and the batch's compute.
Off by default, and then it costs one attribute check per request.

The stage spans are recorded after the fact from the timings the batcher measures (their start and end
times are placed back from the answer), so tracing adds no work to the hot path's threads.
"""

from __future__ import annotations

import time
from typing import Any

from service.predictor import Inference

SERVICE_NAME = "catalog-attributes"


class TracingUnavailableError(RuntimeError):
    """Tracing was asked for but the ``tracing`` extra is not installed."""


class Tracing:
    def __init__(self, enabled: bool) -> None:
        self._tracer: Any = None
        if enabled:
            try:
                from opentelemetry import trace
            except ImportError:
                raise TracingUnavailableError(
                    "TRACING is on but OpenTelemetry is not installed: pip install '.[tracing]'") from None
            self._tracer = trace.get_tracer(SERVICE_NAME)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def stage(self, name: str, seconds: float, ended_ns: int, **attributes: Any) -> int:
        """A child span of the current one that lasted ``seconds`` up to ``ended_ns``; returns its start."""
        started_ns = ended_ns - int(seconds * 1e9)
        if self._tracer is not None:
            span = self._tracer.start_span(name, start_time=started_ns)
            span.set_attributes(attributes)
            span.end(end_time=ended_ns)
        return started_ns

    def inference(self, model: str, inference: Inference) -> None:
        """Preprocess, queue and compute spans of one image, placed back from the moment it was answered."""
        if self._tracer is None:
            return
        end = self.stage("compute", inference.compute_s, time.time_ns(), model=model,
                         batch_size=inference.batch_size)
        end = self.stage("queue", inference.queue_wait_s, end, model=model)
        self.stage("preprocess", inference.preprocess_s, end, model=model)


def configure_exporter() -> None:
    """For ``python -m service``: spans go by OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the standard
    variables configure it), in batches, off the request path."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
