"""``service/pipeline.py``: one readiness check per request, the deadline from arrival, and the
per-request metrics, whatever the predictor."""

from __future__ import annotations

import time

import pytest

from service.errors import ModelNotReadyError
from service.metrics import ServiceMetrics
from service.pipeline import ServiceState, infer_upload, predict_image
from service.settings import Settings
from tests.service.fakes import FakeModel, FakePredictor, image_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Counting(FakePredictor):
    """Counts lookups and readiness checks, and the deadline each inference was given."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lookups = 0
        self.timeouts: list[float | None] = []

    def ready_model(self, name: str) -> FakeModel:
        self.lookups += 1
        model = super().ready_model(name)
        timeouts = self.timeouts

        class Recording(FakeModel):
            async def infer(self, preprocess, timeout_s):
                timeouts.append(timeout_s)
                return await super().infer(preprocess, timeout_s)

        return Recording(model.info, self)


def state_for(tmp_path, predictor: FakePredictor, **settings) -> ServiceState:
    return ServiceState(settings=Settings(repository=tmp_path, **settings), predictor=predictor,
                        metrics=ServiceMetrics())


async def test_a_request_looks_its_model_up_once_and_abstains_at_its_threshold(tmp_path):
    predictor = Counting()
    state = state_for(tmp_path, predictor, threshold=0.5)
    response = await predict_image(state, "Men Tshirts", image_bytes(), threshold=0.9)
    assert predictor.lookups == 1 and predictor.calls == [("men_tshirts", (3, 32, 32))]
    assert response.threshold == 0.9
    sleeve, color = response.attributes["sleeve_length"], response.attributes["color"]
    assert sleeve.value == "short sleeves" and not sleeve.abstained
    assert color.value is None and color.abstained and color.decoded_value == "default"


async def test_a_broken_model_is_refused_before_its_upload_is_read(tmp_path):
    predictor = Counting(slugs=(), broken=("sarees",))
    with pytest.raises(ModelNotReadyError):
        await predict_image(state_for(tmp_path, predictor), "sarees", b"not even an image")
    assert predictor.calls == []


async def test_the_deadline_runs_from_the_request_s_arrival(tmp_path):
    predictor = Counting()
    state = state_for(tmp_path, predictor, request_timeout_s=2.0)
    arrived = time.perf_counter() - 1.5  # the request spent 1.5 s reaching this point
    await infer_upload(state, predictor.ready_model("men_tshirts"), image_bytes(), arrived)
    (given,) = predictor.timeouts
    assert given is not None and 0.4 < given <= 0.5


async def test_timings_and_answers_are_counted_once_per_image(tmp_path):
    state = state_for(tmp_path, FakePredictor())
    await predict_image(state, "men_tshirts", image_bytes(), declared='{"sleeve_length": "long sleeves"}')
    registry = state.metrics.registry
    labels = {"model": "men_tshirts"}
    assert registry.get_sample_value("catalog_preprocess_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("catalog_queue_wait_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("catalog_abstentions_total", {**labels, "attribute": "color"}) == 1
    assert registry.get_sample_value("catalog_conflicts_total", {**labels, "attribute": "sleeve_length"}) == 1

