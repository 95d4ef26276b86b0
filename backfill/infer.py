"""The inference stage (a pool of Ray actors): each actor opens one ONNX Runtime session per model with
the service's session options, runs decoded images in batches and decodes the logits jointly with the
manifest's calibration and rules, exactly as the service's ``OnnxModel.run_batch`` does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa

from backfill.models import ModelBundle
from backfill.schema import INTERNAL_SCHEMA, OUTPUT_SCHEMA, STAGE_SCHEMA, prediction_record
from catalog.decoding import Decoder, predict_rows
from catalog.manifest import Manifest
from catalog.taxonomy import Category
from service.onnx_predictor import session_logits

GPU_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def providers_for(has_gpu: bool) -> list[str]:
    """CUDA when the actor was given a GPU, else the CPU; a GPU that ONNX Runtime cannot use is an error,
    not a quiet fall back to the CPU."""
    if not has_gpu:
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError("this actor has a GPU but onnxruntime has no CUDAExecutionProvider; install "
                           "onnxruntime-gpu (the gpu extra) or run with --gpus-per-actor 0")
    return GPU_PROVIDERS


@dataclass(frozen=True)
class LoadedModel:
    bundle: ModelBundle
    session: ort.InferenceSession
    manifest: Manifest
    decoder: Decoder
    category: Category

    @classmethod
    def open(cls, bundle: ModelBundle, threads: int, providers: list[str]) -> LoadedModel:
        manifest = bundle.manifest
        return cls(bundle, bundle.open_session(threads, providers), manifest, manifest.decoder(),
                   manifest.taxonomy_category())

    def predict(self, pixels: list[bytes], threshold: float) -> list[dict[str, Any]]:
        shape = self.bundle.spec.input_shape
        stacked = np.stack([np.frombuffer(p, dtype=np.float32).reshape(shape) for p in pixels])
        # top_k=1: the output keeps no alternatives, and the decoded value does not depend on k.
        rows = predict_rows(self.decoder, session_logits(self.session, self.manifest, stacked), top_k=1)
        return [prediction_record(self.category, row, threshold) for row in rows]

    def identity(self) -> dict[str, Any]:
        return {"category": self.category.name, "model": self.bundle.slug, "model_version": self.bundle.version}


class InferenceActor:
    """A Ray Data callable class: decoded rows in, output rows (plus the internal columns) out."""

    def __init__(self, bundles: dict[str, ModelBundle], threshold: float, threads: int) -> None:
        import ray  # the actor runs under Ray; the module stays importable without a cluster

        providers = providers_for(bool(ray.get_gpu_ids()))
        self._models = {slug: LoadedModel.open(bundle, threads, providers) for slug, bundle in bundles.items()}
        self._threshold = threshold

    def __call__(self, batch: pa.Table) -> pa.Table:
        return infer_batch(self._models, batch, self._threshold)


def infer_batch(models: dict[str, LoadedModel], batch: pa.Table, threshold: float) -> pa.Table:
    """One model call per category present in the batch; error rows pass through without one."""
    started = time.perf_counter()
    slugs = batch.column("slug").to_pylist()
    errors = batch.column("error").to_pylist()
    pixels = batch.column("pixels")
    records: list[dict[str, Any]] = [{"error": e, "error_detail": d}
                                     for e, d in zip(errors, batch.column("error_detail").to_pylist(), strict=True)]
    by_slug: dict[str, list[int]] = {}
    for i, (slug, error) in enumerate(zip(slugs, errors, strict=True)):
        if error is None:
            by_slug.setdefault(slug, []).append(i)
    for slug, indices in by_slug.items():
        predicted = models[slug].predict([pixels[i].as_py() for i in indices], threshold)
        for i, record in zip(indices, predicted, strict=True):
            records[i].update(record)
    for i, slug in enumerate(slugs):
        records[i].update(models[slug].identity(), id=batch.column("id")[i].as_py())
    per_row_s = (time.perf_counter() - started) / max(batch.num_rows, 1)
    table = pa.Table.from_pylist(records, schema=OUTPUT_SCHEMA)
    for name in INTERNAL_SCHEMA.names:
        column = pa.array(np.full(batch.num_rows, per_row_s)) if name == "infer_s" else batch.column(name)
        table = table.append_column(INTERNAL_SCHEMA.field(name), column)
    return table.cast(STAGE_SCHEMA)
