"""A fake predictor implementing service.predictor.Predictor (no ONNX), and image bytes for API tests."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from catalog.decoding import Decoder, predict_rows
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from service.predictor import Inference, ModelInfo, find_info, not_ready

# Men Tshirts: colour is uncertain (abstains at 0.5), sleeves are confidently short.
DEFAULT_LOGITS: dict[str, list[float]] = {
    "color": [0.2, 0.1, 0.0, 0.0],
    "neck": [3.0, 0.0],
    "pattern": [0.0, 3.0],
    "print_or_pattern_type": [0.0, 0.0, 4.0],
    "sleeve_length": [4.0, 0.0],
}


class FakePredictor:
    """Same protocol as the ONNX predictor; answers from fixed logits, or raises ``error`` if set."""

    def __init__(self, slugs: Sequence[str] = ("men_tshirts",), broken: Sequence[str] = (),
                 logits: Mapping[str, list[float]] | None = None, size: int = 32,
                 ood: Mapping[str, tuple[float, float]] | None = None) -> None:
        """``ood``: per model with a detector, the (score every image gets, threshold)."""
        taxonomy = load_taxonomy()
        self._infos = []
        self.ood = dict(ood or {})
        for slug in (*slugs, *broken):
            self._infos.append(ModelInfo(
                name=slug, category=taxonomy.category(slug), version=3, spec=PreprocessSpec(height=size, width=size),
                ready=slug not in broken, error="sha256 mismatch" if slug in broken else None, versions=(1, 3),
                ood_threshold=self.ood[slug][1] if slug in self.ood else None,
            ))
        self.logits = dict(logits or DEFAULT_LOGITS)
        self.error: Exception | None = None
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.draining = False
        self.stopped = False

    def models(self) -> Sequence[ModelInfo]:
        return self._infos

    def info(self, name: str) -> ModelInfo:
        return find_info(self._infos, name)

    async def start(self) -> None:
        return None

    def ready_model(self, name: str) -> FakeModel:
        info = self.info(name)
        if not info.ready:
            raise not_ready(info)
        return FakeModel(info, self)

    def answer(self, info: ModelInfo, preprocess: Callable[[], np.ndarray]) -> Inference:
        started = time.perf_counter()
        pixels = preprocess()  # inline: the fake has no batcher, and the images are tiny
        preprocess_s = time.perf_counter() - started
        self.calls.append((info.name, pixels.shape))
        if self.error is not None:
            raise self.error
        category = info.category
        computed = time.perf_counter()
        # The fixed logits where they fit the category (they are Men Tshirts'), zeros elsewhere.
        logits = {a.name: np.asarray([fixed if len(fixed := self.logits.get(a.name, [])) == len(a.values)
                                      else [0.0] * len(a.values)], dtype=np.float32)
                  for a in category.attributes}
        row = predict_rows(Decoder(category), logits, top_k=3)[0]
        # Timings as measured (no queue here), so anything placed back in time from them stays truthful.
        return Inference(row=row, preprocess_s=preprocess_s, queue_wait_s=0.0,
                         compute_s=time.perf_counter() - computed, batch_size=1,
                         ood_score=self.ood[info.name][0] if info.name in self.ood else None)

    def begin_drain(self) -> None:
        self.draining = True

    async def stop(self, drain_timeout_s: float) -> None:
        self.stopped = True


@dataclass(frozen=True)
class FakeModel:
    info: ModelInfo
    predictor: FakePredictor

    async def infer(self, preprocess: Callable[[], np.ndarray], timeout_s: float | None) -> Inference:
        return self.predictor.answer(self.info, preprocess)


def image_bytes(fmt: str = "JPEG", mode: str = "RGB", size: tuple[int, int] = (48, 64),
                color: tuple[int, ...] = (200, 30, 30), **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode != "L" else color[0]).save(buffer, format=fmt, **save)
    return buffer.getvalue()
