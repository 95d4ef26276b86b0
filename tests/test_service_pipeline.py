"""``service/pipeline.py``: which path a request takes to its model."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.metrics import ServiceMetrics
from service.pipeline import ServiceState, predict_image
from service.settings import Settings
from tests.service.fakes import FakePredictor, image_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class AloneRecorder(FakePredictor):
    """Answers lone requests by decoding through ``prepare`` and records that it did."""

    def __init__(self, provider: str) -> None:
        super().__init__()
        self._infos = [dataclasses.replace(info, provider=provider) for info in self._infos]
        self.alone: list[tuple[int, ...]] = []

    async def infer_alone_if_idle(self, name, prepare):
        pixels = prepare()
        self.alone.append(pixels.shape)
        return await self.infer(name, pixels)


@pytest.mark.parametrize(
    ("provider", "setting", "alone"),
    [("CPUExecutionProvider", None, True), ("CUDAExecutionProvider", None, False),
     ("TensorrtExecutionProvider", None, False), ("CUDAExecutionProvider", True, True),
     ("CPUExecutionProvider", False, False)],
)
async def test_lone_path_is_on_for_cpu_models_unless_set(tmp_path, provider, setting, alone):
    predictor = AloneRecorder(provider)
    with ThreadPoolExecutor(1) as executor:
        state = ServiceState(settings=Settings(repository=tmp_path, decode_alone_when_idle=setting),
                             predictor=predictor, metrics=ServiceMetrics(), executor=executor)
        response = await predict_image(state, "men_tshirts", image_bytes())
    assert response.attributes["sleeve_length"].value == "short sleeves"
    assert predictor.alone == ([(3, 32, 32)] if alone else [])
    assert predictor.calls == [("men_tshirts", (3, 32, 32))]  # one model call either way
    assert state.admitted == {"men_tshirts": 0}
