"""Every Prometheus metric the service exports, declared here and nowhere else, on a registry per app
(so tests can build many apps). Names carry base units (``_seconds``, ``_total``); buckets are fixed.

With ``WORKERS`` > 1 each worker process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (set by
the parent before any worker imports prometheus_client) and ``/metrics``, from whichever worker answers,
merges every worker's files: counters and histograms are summed over every worker that ever ran (a restarted
worker's counts stay), gauges over the live ones by their ``multiprocess_mode``. Python's GC metrics are
per process and are left out there; CPU and memory are those of the whole process tree (``process_tree``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.process_tree import ProcessTreeCollector
from service.schemas import AttributeResult, Conflict, OutOfDistribution

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# Every counter and histogram would otherwise export a ``_created`` timestamp series beside it,
# doubling the exposition for a value no dashboard or alert uses.
disable_created_metrics()


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, supervisor_pid: int | None = None) -> None:
        """``supervisor_pid``: in a worker process (``WORKERS`` > 1), the parent's pid, whose process tree
        the exposition reports CPU and memory of."""
        self.registry = registry or CollectorRegistry()
        self._supervisor_pid = supervisor_pid
        r = self.registry
        if supervisor_pid is None:
            # Process (CPU, memory, open files), Python platform and GC metrics, as the default registry has.
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(collector)
        self.request_seconds = Histogram(
            "catalog_http_request_duration_seconds", "HTTP request latency by route template and status.",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.preprocess_seconds = Histogram(
            "catalog_preprocess_duration_seconds", "Preprocessing one upload: reading the file, resizing, normalising.",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.queue_wait_seconds = Histogram(
            "catalog_queue_wait_duration_seconds", "Time an image waited in the batch queue before its batch started.",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.compute_seconds = Histogram(
            "catalog_batch_compute_duration_seconds", "Model run plus decoding of one batch's attributes.",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram(
            "catalog_batch_size", "Images per model call.", ["model"], buckets=BATCH_BUCKETS, registry=r)
        # The multiprocess modes apply with WORKERS > 1 only: the service's load is the sum over its workers.
        self.queue_depth = Gauge(
            "catalog_queue_depth", "Images waiting for a batch.", ["model"], registry=r, multiprocess_mode="livesum")
        self.admitted = Gauge(
            "catalog_admitted_images", "Images admitted and not yet answered (preprocessing, queued or running).",
            ["model"], registry=r, multiprocess_mode="livesum")
        self.images_total = Counter(
            "catalog_images_processed_total", "Images run through a model (rate() gives images/s).",
            ["model"], registry=r)
        self.rejections_total = Counter(
            "catalog_rejections_total", "Requests refused, by reason (error code).", ["reason"], registry=r)
        self.predictions_total = Counter(
            "catalog_predictions_total", "Predicted values, for drift monitoring.",
            ["model", "attribute", "value"], registry=r)
        self.abstentions_total = Counter(
            "catalog_abstentions_total", "Attributes left null for low confidence.", ["model", "attribute"],
            registry=r)
        self.conflicts_total = Counter(
            "catalog_conflicts_total", "Declared values the image contradicts.", ["model", "attribute"],
            registry=r)
        self.ood_scored_total = Counter(
            "catalog_ood_scored_total", "Answered images scored by the model's out-of-distribution detector.",
            ["model"], registry=r)
        self.ood_flagged_total = Counter(
            "catalog_ood_flagged_total", "Answered images flagged as unlike the model's training images.",
            ["model"], registry=r)
        self._declare_model_state(r)

    def _declare_model_state(self, r: CollectorRegistry) -> None:
        """What is loaded where, and the inference process's own model calls."""
        self.model_info = Gauge(
            "catalog_model_info", "Loaded model (value 1), with its version, precision and execution provider.",
            ["model", "version", "precision", "provider"], registry=r, multiprocess_mode="livemax")
        self.model_copies = Gauge(
            "catalog_model_copies", "Processes holding the model loaded (its sessions or module): one per worker "
            "with WORKERS, one in all with SHARED_INFERENCE.", ["model"], registry=r, multiprocess_mode="livesum")
        self.inference_batch_size = Histogram(
            "catalog_inference_batch_size", "Images per model call in the inference process (SHARED_INFERENCE), "
            "where batches of the same model from several workers are joined.", ["model"], buckets=BATCH_BUCKETS,
            registry=r)
        self.inference_seconds = Histogram(
            "catalog_inference_duration_seconds", "One model call in the inference process (SHARED_INFERENCE), "
            "without the hop from and to the worker.", ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        # With several workers a request may land on any of them: the model is ready when every live one
        # serves it.
        self.model_ready = Gauge(
            "catalog_model_ready", "1 when the model serves, 0 when it failed to load or the server drains.",
            ["model"], registry=r, multiprocess_mode="livemin")

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: this registry, or with several workers every worker's values."""
        if self._supervisor_pid is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        merged.register(PLATFORM_COLLECTOR)
        merged.register(ProcessTreeCollector(self._supervisor_pid))
        return generate_latest(merged)

    def observe_timings(self, model: str, preprocess_s: float, queue_wait_s: float) -> None:
        """One image's per-request timings, whatever route it came by."""
        self.preprocess_seconds.labels(model).observe(preprocess_s)
        self.queue_wait_seconds.labels(model).observe(queue_wait_s)

    def count_answer(self, model: str, attributes: Mapping[str, AttributeResult],
                     conflicts: Sequence[Conflict] = (), ood: OutOfDistribution | None = None) -> None:
        """One image's predicted values (for drift), abstentions, conflicts and OOD flag, whatever route it
        came by."""
        if ood is not None:
            self.ood_scored_total.labels(model).inc()
            if ood.flagged:
                self.ood_flagged_total.labels(model).inc()
        for name, result in attributes.items():
            self.predictions_total.labels(model, name, result.decoded_value).inc()
            if result.abstained:
                self.abstentions_total.labels(model, name).inc()
        for conflict in conflicts:
            self.conflicts_total.labels(model, conflict.attribute).inc()
