"""The serving path (app, CLI, predictor) must never import torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["service.app", "service.__main__", "service.onnx_predictor", "service.batching",
                                    "service.backends", "service.model_runner", "service.device_upload",
                                    "service.remote_predictor", "service.inference_process", "service.workers"])
def test_service_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported by {module}'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batcher_imports_nothing_of_http_onnx_or_images():
    code = ("import sys, service.batching; bad = {'fastapi', 'starlette', 'onnxruntime', 'PIL', 'numpy'} "
            "& set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def assert_predictor_built_without_torch(settings: str, predictor: str, extra_argument: str = "") -> None:
    """In a fresh interpreter: ``create_predictor(Settings(<settings>), ServiceMetrics()<extra_argument>)`` is a
    ``predictor`` and torch was never imported."""
    code = ("import sys; from service.backends import create_predictor; from service.metrics import ServiceMetrics; "
            "from service.settings import Settings; from service.inference_protocol import InferenceAddress; "
            f"p = create_predictor(Settings({settings}), ServiceMetrics(){extra_argument}); "
            f"assert type(p).__name__ == {predictor!r}, p; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_default_backend_builds_its_predictor_without_importing_torch(tmp_path):
    assert_predictor_built_without_torch(f"repository={str(tmp_path)!r}", "OnnxPredictor")


def test_a_front_end_of_the_torch_backend_builds_its_predictor_without_importing_torch(tmp_path):
    # With SHARED_INFERENCE only the inference process loads the backend.
    assert_predictor_built_without_torch(
        f"repository={str(tmp_path)!r}, backend='torch', workers=2, shared_inference=True", "RemotePredictor",
        ", InferenceAddress('/nowhere', b'k')")
