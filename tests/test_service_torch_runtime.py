"""``service/torch_runtime.py``: what the torch backend decides from its settings on this (CPU-only) host,
and the batch sizes a compiled model is built for. Serving is tested end to end in
``tests/integration/test_service_torch_backend.py``."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from catalog.manifest import load_manifest
from service.errors import ModelLoadError
from service.settings import Settings
from service.torch_runtime import TorchRunner, buckets, load_module, resolve_choice
from tests.torch_repository import SLUG, torch_repository


def settings(tmp_path, **values) -> Settings:
    return Settings(repository=tmp_path, backend="torch", **values)


def test_auto_is_fp32_on_the_cpu_here(tmp_path):
    choice = resolve_choice(settings(tmp_path))
    assert (choice.device.type, choice.dtype, choice.precision, choice.provider) == (
        "cpu", torch.float32, "fp32", "torch-cpu")
    assert resolve_choice(settings(tmp_path, torch_dtype="bfloat16")).precision == "bf16"


@pytest.mark.parametrize(("values", "message"), [
    ({"torch_device": "cuda"}, "torch_device 'cuda': torch .* sees no CUDA device"),
    ({"torch_compile": "reduce-overhead"}, "records CUDA graphs and needs torch_device cuda"),
    ({"gpu_decode": True}, "gpu_decode needs the torch backend on CUDA"),
])
def test_choices_this_host_cannot_honour_are_refused(tmp_path, values, message):
    if torch.cuda.is_available():
        pytest.skip("a CUDA host honours these")
    with pytest.raises(ModelLoadError, match=message):
        resolve_choice(settings(tmp_path, **values))


def test_compiled_models_see_power_of_two_buckets_up_to_the_largest_batch():
    assert buckets(16) == [1, 2, 4, 8, 16]
    assert buckets(12) == [1, 2, 4, 8, 12]
    assert buckets(1) == [1]


def test_a_padded_batch_answers_what_the_unpadded_one_does(tmp_path):
    repository, _ = torch_repository(tmp_path)
    folder = repository / SLUG / "1"
    manifest = load_manifest(folder)
    choice = resolve_choice(settings(repository))
    plain = TorchRunner(load_module(folder, manifest, settings(repository), choice.device), manifest, choice, 8)
    batch = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    padded_runner = TorchRunner(load_module(folder, manifest, settings(repository), choice.device), manifest, choice, 8)
    padded_runner._sizes = buckets(8)  # what compiling sets up, without compiling
    (logits, ood), (padded, padded_ood) = plain.run(batch), padded_runner.run(batch)
    assert ood is not None and padded_ood is not None and len(padded_ood) == 3
    assert all(np.allclose(logits[k], padded[k], atol=1e-5) for k in logits)
    assert np.allclose(ood, padded_ood, rtol=1e-5)
    assert plain.verify(folder) < 1e-4


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_composite_detector_scores_in_fp32_under_reduced_precision(tmp_path, dtype):
    # Autocast ran the detector's whitening in bf16: the standardised score was 10 thresholds off, so the
    # default dtype on CUDA refused every composite model at load.
    repository, _ = torch_repository(tmp_path, method="composite")
    folder = repository / SLUG / "1"
    manifest = load_manifest(folder)
    choice = resolve_choice(settings(repository, torch_dtype=dtype))
    runner = TorchRunner(load_module(folder, manifest, settings(repository), choice.device), manifest, choice, 8)
    assert manifest.ood is not None and manifest.ood.method == "composite"
    assert runner.verify(folder) < 0.05 * manifest.ood.threshold


def test_with_cuda_graphs_every_call_runs_on_one_thread_whoever_asks(tmp_path, monkeypatch):
    # CUDA graphs are per thread: warm-up on the loading thread and batches from the batcher's threads must
    # all reach the model on one thread. Compiling is skipped (no CUDA here); the dispatch is what is tested.
    repository, _ = torch_repository(tmp_path)
    folder = repository / SLUG / "1"
    manifest = load_manifest(folder)
    choice = dataclasses.replace(resolve_choice(settings(repository)), compile_mode="reduce-overhead")
    monkeypatch.setattr(torch, "compile", lambda module, **options: module)
    module = load_module(folder, manifest, settings(repository), choice.device)
    seen: set[int] = set()
    module.register_forward_pre_hook(lambda *_: seen.add(threading.get_ident()))
    runner = TorchRunner(module, manifest, choice, 4)
    batch = np.zeros((2, 3, 32, 32), np.float32)
    runner.warm_up()
    with ThreadPoolExecutor(3) as callers:
        answers = list(callers.map(lambda _: runner.run(batch), range(6)))
    assert len(seen) == 1 and threading.get_ident() not in seen
    assert all(np.array_equal(a[0][k], answers[0][0][k]) for a in answers for k in a[0])


def test_more_batches_in_flight_than_cuda_graphs_allow_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_batches_in_flight=2 cannot apply with torch_compile 'reduce-overhead'"):
        settings(tmp_path, torch_compile="reduce-overhead", max_batches_in_flight=2)
