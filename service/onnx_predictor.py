"""The model repository served with ONNX Runtime (the default backend): one session per model, checked
against its manifest; batching, decoding and metrics are ``service/model_runner.py``'s."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from catalog.manifest import Manifest, ManifestError
from service.model_runner import ModelRunner as OnnxModel
from service.model_runner import RepositoryPredictor, Runtime, batcher_config, discover

__all__ = ["OnnxModel", "OnnxPredictor", "batcher_config", "check_session", "discover", "session_logits",
           "session_options", "session_outputs"]
"""``OnnxModel``, ``batcher_config`` and ``discover`` live in ``service/model_runner.py`` (shared by every
backend); re-exported for the importers that knew them here."""


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One model call at a time per session: parallelism comes from intra-op threads, and more
    # inter-op threads only oversubscribe the cores that preprocess uploads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn a core after every run; they would steal it from preprocessing and keep an
    # idle service busy.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def session_logits(session: ort.InferenceSession, manifest: Manifest, batch: np.ndarray) -> dict[str, np.ndarray]:
    """One model call on a stacked ``(N, 3, H, W)`` batch: the logits of every attribute, by attribute name
    (what :func:`catalog.decoding.predict_rows` decodes). Shared by the service and the backfill."""
    return session_outputs(session, manifest, batch)[0]


def session_outputs(session: ort.InferenceSession, manifest: Manifest,
                    batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The logits of every attribute and, when the model has a detector, each image's OOD score (the same
    call: one more output of the graph)."""
    names = [*manifest.output_names, manifest.ood.output] if manifest.ood else manifest.output_names
    outputs = session.run(names, {manifest.input.name: batch})
    logits = {spec.name: np.asarray(out, dtype=np.float32) for spec, out in zip(manifest.attributes, outputs,
                                                                                 strict=False)}
    return logits, np.asarray(outputs[-1], dtype=np.float32) if manifest.ood else None


class OnnxPredictor(RepositoryPredictor):
    """The default predictor: ONNX Runtime sessions over a model repository."""

    def open_runtime(self, folder: Path, manifest: Manifest) -> Runtime:
        session = ort.InferenceSession(str(folder / manifest.model_file),
                                       session_options(self._settings.resolved_session_threads),
                                       providers=self._settings.providers)
        check_session(folder, manifest, session)
        return Runtime(partial(session_outputs, session, manifest), session.get_providers()[0], manifest.precision)


def check_session(folder: Path, manifest: Manifest, session: ort.InferenceSession) -> None:
    """The ONNX file has the input and outputs its manifest names."""
    inputs = [i.name for i in session.get_inputs()]
    if manifest.input.name not in inputs:
        raise ManifestError(f"{folder}: model has inputs {inputs}, manifest says {manifest.input.name!r}")
    outputs = {o.name for o in session.get_outputs()}
    expected = [*manifest.output_names, manifest.ood.output] if manifest.ood else manifest.output_names
    missing = [name for name in expected if name not in outputs]
    if missing:
        raise ManifestError(f"{folder}: model lacks outputs {missing}; it has {sorted(outputs)}")
