"""``service/predictor.py``: the contract every predictor keeps, run against the real ONNX Runtime
predictor and the fake the API tests use, so the fake cannot drift from what it stands in for."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from benchmarks.onnx_factory import build_repository
from catalog.manifest import MANIFEST_NAME
from service.errors import InvalidImageError, ModelNotReadyError, UnknownModelError
from service.metrics import ServiceMetrics
from service.onnx_predictor import OnnxPredictor
from service.predictor import Predictor
from service.settings import Settings
from tests.service.fakes import FakePredictor


def onnx_predictor(tmp_path) -> Predictor:
    build_repository(tmp_path, slugs=("men_tshirts", "sarees"))
    manifest = tmp_path / "sarees" / "1" / MANIFEST_NAME
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "opset": "x"}))
    predictor = OnnxPredictor(Settings(repository=tmp_path, session_threads=1, allow_partial_start=True),
                              ServiceMetrics())
    predictor.load()
    return predictor


def fake_predictor(tmp_path) -> Predictor:
    return FakePredictor(slugs=("men_tshirts",), broken=("sarees",))


@pytest.fixture(params=[pytest.param(onnx_predictor, id="onnx", marks=pytest.mark.integration),
                        pytest.param(fake_predictor, id="fake")])
def predictor(request, tmp_path) -> Predictor:
    return request.param(tmp_path)


def pixels() -> np.ndarray:
    return np.zeros((3, 32, 32), np.float32)


def test_models_are_found_by_slug_or_display_name_and_unknown_ones_listed(predictor):
    assert [(m.name, m.ready) for m in predictor.models()] == [("men_tshirts", True), ("sarees", False)]
    assert predictor.info("Men Tshirts").name == predictor.info("men_tshirts").name == "men_tshirts"
    assert predictor.info("sarees").error
    with pytest.raises(UnknownModelError, match="valid categories: 'men_tshirts' \\(Men Tshirts\\), 'sarees'"):
        predictor.info("kurtis")


def test_a_broken_model_is_refused_with_its_reason(predictor):
    with pytest.raises(ModelNotReadyError, match=r"model 'sarees' is not ready: .+"):
        predictor.ready_model("sarees")


def test_admitted_work_runs_after_a_drain_began_and_errors_reach_their_caller_alone(predictor):
    calls: list[int] = []

    def preprocess() -> np.ndarray:
        calls.append(1)
        return pixels()

    def broken() -> np.ndarray:
        raise InvalidImageError("not an image")

    async def run():
        await predictor.start()
        try:
            model = predictor.ready_model("men_tshirts")
            predictor.begin_drain()  # the routes refuse new requests; the predictor refuses nothing
            outcomes = await asyncio.gather(model.infer(broken, 5.0), model.infer(preprocess, 5.0),
                                            return_exceptions=True)
        finally:
            await predictor.stop(1.0)
        return model, outcomes

    model, (failed, inference) = asyncio.run(run())
    assert isinstance(failed, InvalidImageError) and calls == [1]
    assert set(inference.row) == set(model.info.category.attribute_names)
    assert inference.batch_size == 1 and inference.preprocess_s >= 0 and inference.compute_s >= 0
