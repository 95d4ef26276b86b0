"""The model repository served with ONNX Runtime (the default backend): each model's sessions (a shared one,
and a lone one for lone batches: ``service/session_layout.py``, ``service/session_choice.py``), checked
against its manifest; batching, decoding and metrics are ``service/model_runner.py``'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from catalog.manifest import Manifest, ManifestError
from service.metrics import ServiceMetrics
from service.model_runner import ModelRunner as OnnxModel
from service.model_runner import RepositoryPredictor, Runtime, batcher_config, discover
from service.session_choice import Sessions
from service.session_layout import CPU_PROVIDER, session_layout
from service.settings import Settings

__all__ = ["OnnxModel", "OnnxPredictor", "batcher_config", "check_session", "discover", "open_sessions",
           "session_logits", "session_options", "session_outputs"]
"""``OnnxModel``, ``batcher_config`` and ``discover`` live in ``service/model_runner.py`` (shared by every
backend); re-exported for the importers that knew them here."""


def session_options(threads: int, *, spinning: bool = False) -> ort.SessionOptions:
    """``spinning``: the intra-op threads spin between the parallel parts of a call instead of sleeping,
    and stop spinning when the call returns (see :mod:`service.session_choice`)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Parallelism comes from intra-op threads and from batches run side by side on the batcher's threads
    # (service/session_layout.py); more inter-op threads only oversubscribe the cores that preprocess uploads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn a core for a while after every run; they would steal it from preprocessing
    # and keep an idle service busy. Spinning sessions stop it when the call returns.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def open_sessions(model_file: Path, settings: Settings) -> Sessions[ort.InferenceSession]:
    """The shared session and, as ``service/session_layout.py`` decides for the provider it runs on, the
    lone one."""
    def open_session(threads: int, spinning: bool = False) -> ort.InferenceSession:
        return ort.InferenceSession(str(model_file), session_options(threads, spinning=spinning),
                                    providers=settings.providers)

    cpu_first = settings.providers[0] == CPU_PROVIDER
    threads = session_layout(settings, CPU_PROVIDER).shared_threads if cpu_first else settings.resolved_session_threads
    shared = open_session(threads)
    layout = session_layout(settings, shared.get_providers()[0])
    if layout.shared_threads != threads:  # a device provider that fell back to the CPU: size it as the CPU's
        shared = open_session(layout.shared_threads)
    return Sessions(shared, None if layout.lone_threads is None else open_session(layout.lone_threads,
                                                                                  layout.lone_spins))


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

    sessions: dict[str, Sessions[ort.InferenceSession]]
    """Each model's sessions, by slug: what its batches run on, read at every call."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        super().__init__(settings, metrics)
        self.sessions = {}

    def open_runtime(self, folder: Path, manifest: Manifest) -> Runtime:
        sessions = open_sessions(folder / manifest.model_file, self._settings)
        check_session(folder, manifest, sessions.shared)
        if self._settings.warmup:  # the runner warms one session; a first lone request may meet the other
            for session in sessions.every:
                session_outputs(session, manifest, np.zeros((1, *manifest.preprocess_spec().input_shape), np.float32))
        self.sessions[manifest.slug] = sessions

        def run(batch: np.ndarray, admitted: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            return self.sessions[manifest.slug].run(len(batch), admitted,
                                                    lambda session: session_outputs(session, manifest, batch))

        return Runtime(run, sessions.shared.get_providers()[0], manifest.precision)


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
