"""What the inference process tells the front ends about the models it loaded (``describe``)."""

from __future__ import annotations

from types import SimpleNamespace

from service.inference_process import describe
from tests.service.fakes import FakePredictor
from tests.service.inference import MeanModel


class LoadedPredictor(FakePredictor):
    """Ready models with a runtime and a batcher's largest batch, as a :class:`RepositoryPredictor` has."""

    runtime = MeanModel().runtime()

    def ready_model(self, name: str) -> SimpleNamespace:  # type: ignore[override]
        super().ready_model(name)  # raises for a broken one, as the real one does
        config = SimpleNamespace(max_batch_size=6, max_in_flight=2)
        return SimpleNamespace(runtime=self.runtime, batcher=SimpleNamespace(config=config))


def test_ready_models_are_served_and_broken_ones_are_told_with_their_error():
    predictor = LoadedPredictor(slugs=("men_tshirts",), broken=("sarees",), size=40)
    served, hello = describe(predictor)  # type: ignore[arg-type]
    assert list(served) == ["men_tshirts"]
    assert served["men_tshirts"].max_batch_size == 6 and served["men_tshirts"].input_shape == (3, 40, 40)
    assert served["men_tshirts"].in_flight == 2  # as many model threads as its batcher runs batches
    told = hello.models["men_tshirts"]
    assert (told.version, told.provider, told.max_batch_size, told.input_shape) == (3, "CPUExecutionProvider", 6,
                                                                                   (3, 40, 40))
    assert hello.models["sarees"].version is None and hello.models["sarees"].error == "sha256 mismatch"
