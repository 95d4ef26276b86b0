"""Settings: environment with the CATALOG_SERVICE_ prefix, and errors that name the bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_environment_with_prefix_and_comma_lists(tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_SERVICE_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("CATALOG_SERVICE_CATEGORIES", "sarees, kurtis")
    monkeypatch.setenv("CATALOG_SERVICE_VERSIONS", '{"sarees": 2}')
    monkeypatch.setenv("CATALOG_SERVICE_MAX_QUEUE_DELAY_S", "0.002")
    settings = Settings()
    assert settings.repository == tmp_path and settings.categories == ["sarees", "kurtis"]
    assert settings.versions == {"sarees": 2} and settings.max_queue_delay_s == 0.002
    assert settings.providers[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"repository": "/no/such/dir"}, "'/no/such/dir' is not a directory"),
        ({"max_batch_size": 0}, "greater than or equal to 1"),
        ({"max_queue_delay_s": -0.5}, "greater than or equal to 0"),
        ({"execution_providers": ["NoSuchExecutionProvider"]}, "['NoSuchExecutionProvider'] not available"),
        ({"versions": {"sarees": 0}}, "{'sarees': 0}"),
        ({"categories": ["kurtis"], "versions": {"sarees": 1}}, "versions pinned for ['sarees']"),
        ({"api_key": "short"}, "at least 8 characters"),
        ({"max_batch_sizes": 4}, "max_batch_sizes"),
        ({"backend": "tensorflow"}, "'onnxruntime' or 'torch'"),
        ({"torch_dtype": "bfloat16"}, "torch_dtype apply only with backend 'torch' (backend is 'onnxruntime')"),
        ({"gpu_decode": True, "torch_compile": "default"}, "torch_compile, gpu_decode apply only with backend"),
    ],
)
def test_nonsense_is_rejected_naming_the_value(tmp_path, changes, message):
    with pytest.raises(ValidationError) as caught:
        Settings(**{"repository": tmp_path, **changes})
    assert message in str(caught.value)


def test_several_workers_on_a_gpu_are_refused_naming_the_way_out(tmp_path, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValidationError) as error:
        Settings(repository=tmp_path, workers=2)  # CUDA is picked by default where it is available
    assert "workers=2 with CUDAExecutionProvider would load every model 2 times" in str(error.value)
    assert "CATALOG_SERVICE_WORKERS=1" in str(error.value)
    assert Settings(repository=tmp_path, workers=2, execution_providers=["CPUExecutionProvider"]).workers == 2
    assert Settings(repository=tmp_path, workers=1).providers[0] == "CUDAExecutionProvider"


def test_several_workers_with_the_torch_backend_need_it_pinned_to_the_cpu(tmp_path):
    with pytest.raises(ValidationError, match="torch_device='auto' could load every model 2 times"):
        Settings(repository=tmp_path, workers=2, backend="torch")
    assert Settings(repository=tmp_path, workers=2, backend="torch", torch_device="cpu").workers == 2


@pytest.mark.parametrize(("changes", "named"), [
    ({"spin_when_idle": True}, "spin_when_idle"),
    ({"execution_providers": ["CPUExecutionProvider"]}, "execution_providers"),
])
def test_onnx_runtime_settings_are_refused_with_the_torch_backend(tmp_path, changes, named):
    with pytest.raises(ValidationError, match=f"{named} appl(y|ies) only with backend 'onnxruntime'"):
        Settings(repository=tmp_path, backend="torch", **changes)


def test_shared_inference_lets_several_workers_serve_one_gpu_with_one_copy(tmp_path, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValidationError, match="CATALOG_SERVICE_SHARED_INFERENCE=true"):
        Settings(repository=tmp_path, workers=2)
    assert Settings(repository=tmp_path, workers=2, shared_inference=True).providers[0] == "CUDAExecutionProvider"
    assert Settings(repository=tmp_path, workers=2, backend="torch", shared_inference=True).torch_device == "auto"


@pytest.mark.parametrize(("changes", "message"), [
    ({"shared_inference": True}, "shared_inference=True needs workers > 1"),
    ({"shared_inference": True, "workers": 2, "backend": "torch", "gpu_decode": True},
     "with shared_inference=True the front ends that read the uploads run none"),
])
def test_shared_inference_refuses_what_it_cannot_apply(tmp_path, changes, message):
    with pytest.raises(ValidationError, match=message):
        Settings(repository=tmp_path, **changes)


def test_the_inference_process_takes_the_budget_and_the_front_ends_split_it(tmp_path, monkeypatch):
    monkeypatch.setattr("service.settings.cpu_budget", lambda: 8)
    independent = Settings(repository=tmp_path, workers=4)
    shared = Settings(repository=tmp_path, workers=4, shared_inference=True)
    assert (independent.resolved_session_threads, independent.resolved_preprocess_threads) == (2, 2)
    assert (shared.resolved_session_threads, shared.resolved_preprocess_threads) == (8, 2)
