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
