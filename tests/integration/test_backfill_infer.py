"""``backfill/infer.py`` with real ONNX Runtime sessions (no Ray): the rows an inference actor returns
are the service's answers for the same tensors, flattened."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from backfill.decode import DECODED_SCHEMA
from backfill.infer import LoadedModel, infer_batch, providers_for
from backfill.models import load_models
from backfill.schema import STAGE_SCHEMA, abstained_column, confidence_column
from benchmarks.onnx_factory import build_repository
from service.metrics import ServiceMetrics
from service.onnx_predictor import OnnxPredictor
from service.postprocess import build_response
from service.schemas import Timings
from service.settings import Settings

SLUGS = ("men_tshirts", "sarees")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return build_repository(tmp_path_factory.mktemp("repo"), slugs=SLUGS)


def decoded(slugs: list[str], pixels: list[np.ndarray | None]) -> pa.Table:
    return pa.Table.from_pylist([
        {"row": i, "shard": 0, "id": f"id{i}", "slug": slug, "pixels": None if p is None else p.tobytes(),
         "error": "invalid_image" if p is None else None, "error_detail": "broken" if p is None else None,
         "read_s": 0.01, "decode_s": 0.02} for i, (slug, p) in enumerate(zip(slugs, pixels, strict=True))
    ], schema=DECODED_SCHEMA)


def test_rows_are_the_services_answers_for_the_same_tensors(repository):
    rng = np.random.default_rng(0)
    tensors = [rng.normal(size=(3, 32, 32)).astype(np.float32) for _ in range(5)]
    slugs = ["men_tshirts", "sarees", "men_tshirts", "sarees", "men_tshirts", "sarees"]
    pixels: list[np.ndarray | None] = [tensors[0], tensors[1], None, tensors[2], tensors[3], tensors[4]]
    models = {slug: LoadedModel.open(b, 1, ["CPUExecutionProvider"])
              for slug, b in load_models(repository, SLUGS, {}).items()}
    out = infer_batch(models, decoded(slugs, pixels), threshold=0.6)
    assert out.schema == STAGE_SCHEMA and out.column("row").to_pylist() == list(range(6))

    service = OnnxPredictor(Settings(repository=repository, session_threads=1), ServiceMetrics())
    service.load()
    for slug in SLUGS:
        model = service.ready_model(slug)
        indices = [i for i, s in enumerate(slugs) if s == slug and pixels[i] is not None]
        answers = model.run_batch([pixels[i] for i in indices])  # the same batch the actor ran for this model
        for i, answer in zip(indices, answers, strict=True):
            response = build_response(model=slug, version=1, category=model.info.category, row=answer.row,
                                      threshold=0.6, declared={}, conflict_threshold=0.8,
                                      timings=Timings(preprocess_ms=0, queue_ms=0, compute_ms=0, total_ms=0,
                                                      batch_size=1))
            record = out.slice(i, 1).to_pylist()[0]
            assert (record["model"], record["model_version"], record["category"], record["error"]) == (
                response.model, response.model_version, response.category, None)
            assert {c: record[c] for c in response.row} == response.row
            for attribute in model.info.category.attributes:
                result = response.attributes[attribute.name]
                assert record[confidence_column(attribute.column)] == result.confidence
                assert record[abstained_column(attribute.column)] is result.abstained
    failed = out.slice(2, 1).to_pylist()[0]
    assert (failed["error"], failed["error_detail"], failed["model"], failed["attr_1"]) == (
        "invalid_image", "broken", "men_tshirts", None)
    flags = {v for c in out.column_names if c.endswith("_abstained") for v in out.column(c).to_pylist()}
    assert flags == {True, False, None}  # both answers at this threshold, and null past a category's slots
    assert out.column("infer_s").to_pylist()[0] > 0 and out.column("decode_s").to_pylist() == [0.02] * 6


def test_cpu_actors_use_the_cpu_and_a_gpu_onnx_runtime_cannot_use_is_an_error():
    assert providers_for(False) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers_for(True)[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
            providers_for(True)
