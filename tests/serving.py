"""Serving one image through the service's real ONNX predictor, in-process: for tests that export a model
and check the service answers for it unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import Image

from catalog.decoding import Row
from catalog.preprocessing import preprocess
from service.metrics import ServiceMetrics
from service.onnx_predictor import OnnxPredictor
from service.settings import Settings


def serve_one(repository: Path, image_path: Path, slug: str = "men_tshirts") -> Row:
    """The decoded row ``OnnxPredictor`` answers for one image, preprocessed with the manifest's spec."""
    predictor = OnnxPredictor(Settings(repository=repository, session_threads=1), ServiceMetrics())
    predictor.load()
    model = predictor.ready_model(slug)
    with Image.open(image_path) as image:
        pixels = preprocess(image, model.info.spec)

    async def run():  # type: ignore[no-untyped-def]
        await predictor.start()
        try:
            return await model.infer(lambda: pixels, None)
        finally:
            await predictor.stop(1.0)

    return asyncio.run(run()).row
