"""The model's own limit: the best ONNX Runtime configuration a small search finds on this machine, not
the service's settings (a cost in the service's own session options would otherwise cancel out).

Searched: intra-op threads x spinning (off; on, ONNX Runtime's default; on but stopped when the last run
returns, ``session.force_spinning_stop``) x batch size, and one intra-op thread with as many calls at
once as there are cores (what the service does under load, ``service/session_layout.py``). Throughput is
in-process preprocessing pipelined in a thread pool feeding model calls; latency is one image preprocessed
and run alone."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from benchmarks.bench_service import LIMITS, Model, in_process_throughput
from catalog.manifest import load_manifest, resolve_version
from service.images import preprocess_upload

SPINNING = {
    "off": {"session.intra_op.allow_spinning": "0"},
    "on": {"session.intra_op.allow_spinning": "1"},
    "on, stopped after runs": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
}


@dataclass(frozen=True)
class Config:
    threads: int
    spinning: str
    calls: int = 1
    """Model calls at once, each from its own thread (for throughput; latency is one image alone)."""

    def __str__(self) -> str:
        parallel = f", {self.calls} calls at once" if self.calls > 1 else ""
        return f"{self.threads} thread(s), spinning {self.spinning}{parallel}"


def load_model(repository: Path, slug: str, config: Config) -> Model:
    folder = resolve_version(repository, slug)
    manifest = load_manifest(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in SPINNING[config.spinning].items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(folder / manifest.model_file), options, providers=["CPUExecutionProvider"])
    return Model(session, manifest.preprocess_spec(), manifest.input.name, manifest.output_names)


def lone_latency_s(model: Model, jpegs: list[bytes], count: int) -> list[float]:
    """Seconds for one upload preprocessed and run alone, ``count`` times in a row."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        model.run([preprocess_upload(jpegs[i % len(jpegs)], model.spec, LIMITS)])  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    return times


@dataclass
class Search:
    throughput: dict[tuple[Config, int], float]
    """Images/s by (configuration, batch size): the best of the sweeps."""
    latency_ms: dict[Config, float]
    """Median milliseconds of one image alone, by configuration."""

    @property
    def fastest(self) -> tuple[Config, int]:
        return max(self.throughput, key=self.throughput.__getitem__)

    @property
    def quickest(self) -> Config:
        """The latency reference, among configurations whose threads do not spin on after a call: the
        benchmark alternates it with requests to a server, which a spinning tail would slow."""
        quiet_after = [c for c in self.latency_ms if c.spinning != "on" or c.threads == 1]
        return min(quiet_after, key=self.latency_ms.__getitem__)

    def lines(self) -> list[str]:
        configs = list(self.latency_ms)
        batches = sorted({batch for _, batch in self.throughput})
        out = ["| ONNX Runtime configuration | " + " | ".join(f"img/s, batch {b}" for b in batches)
               + " | one image alone, ms |", "| --- |" + " ---: |" * (len(batches) + 1)]
        for config in configs:
            cells = [f"{self.throughput[config, b]:.1f}" for b in batches]
            out.append(f"| {config} | " + " | ".join(cells) + f" | {self.latency_ms[config]:.1f} |")
        config, batch = self.fastest
        out.append(f"\nThroughput winner: {config}, batch {batch} ({self.throughput[config, batch]:.1f} img/s); "
                   f"latency winner: {self.quickest} ({self.latency_ms[self.quickest]:.1f} ms; of the configurations "
                   "that do not spin after a call).")
        return out


def search(repository: Path, slug: str, jpegs: list[bytes], thread_counts: list[int], batches: list[int],
           seconds: float, decode_threads: int) -> tuple[Search, dict[Config, Model]]:
    """Two interleaved sweeps over every configuration (the best of each kept: one sweep on a VM can
    crown a configuration by a drift); a cell runs about ``seconds``."""
    configs = [Config(t, s) for t in thread_counts for s in SPINNING]
    if decode_threads > 1:
        configs.append(Config(1, "off", decode_threads))
    models = {config: load_model(repository, slug, config) for config in configs}
    result = Search({}, {})
    per_image_s = statistics.median(lone_latency_s(next(iter(models.values())), jpegs, 4))
    images = max(16, int(seconds / per_image_s))
    latencies: dict[Config, list[float]] = {config: [] for config in models}
    for _ in range(2):
        for config, model in models.items():
            latencies[config] += lone_latency_s(model, jpegs, max(5, images // 4))
            for batch in batches:
                rate = in_process_throughput(model, jpegs, batch, max(images, 2 * batch), decode_threads,
                                             config.calls)[0]
                result.throughput[config, batch] = max(rate, result.throughput.get((config, batch), 0.0))
    result.latency_ms = {config: statistics.median(values) * 1e3 for config, values in latencies.items()}
    return result, models
