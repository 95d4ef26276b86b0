"""The real predictor over a tiny ONNX repository (tests/onnx_factory.py), in-process."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from benchmarks.onnx_factory import build_repository, write_version
from catalog.manifest import MANIFEST_NAME
from service.errors import ModelLoadError, ModelNotReadyError, UnknownModelError
from service.metrics import ServiceMetrics
from service.models import OnnxPredictor
from service.settings import Settings


def predictor(repository, **settings) -> OnnxPredictor:
    return OnnxPredictor(Settings(repository=repository, session_threads=1, **settings), ServiceMetrics())


def test_loads_newest_version_of_every_category_unless_pinned(tmp_path):
    build_repository(tmp_path, slugs=("men_tshirts", "sarees"), versions=(1, 2))
    newest = predictor(tmp_path)
    newest.load()
    assert [(m.name, m.version, m.versions) for m in newest.models()] == [
        ("men_tshirts", 2, (1, 2)), ("sarees", 2, (1, 2))]
    pinned = predictor(tmp_path, categories=["sarees"], versions={"sarees": 1})
    pinned.load()
    assert [(m.name, m.version) for m in pinned.models()] == [("sarees", 1)]
    with pytest.raises(UnknownModelError, match="valid categories: 'sarees'"):
        pinned.info("men_tshirts")


def test_checksum_mismatch_stops_start_up_naming_the_file(tmp_path):
    folder = write_version(tmp_path, "men_tshirts")
    with (folder / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelLoadError, match=r"men_tshirts: .*model\.onnx: sha256 .* does not match"):
        predictor(tmp_path).load()


def test_partial_start_serves_healthy_models_and_reports_the_broken_one(tmp_path):
    build_repository(tmp_path, slugs=("men_tshirts", "kurtis"))
    manifest = tmp_path / "kurtis" / "1" / MANIFEST_NAME
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "opset": "x"}))
    loader = predictor(tmp_path, allow_partial_start=True)
    loader.load()
    states = {m.name: (m.ready, m.error) for m in loader.models()}
    assert states["men_tshirts"] == (True, None)
    assert states["kurtis"][0] is False and "opset" in states["kurtis"][1]

    async def run() -> None:
        await loader.start()
        with pytest.raises(ModelNotReadyError, match="kurtis"):
            await loader.infer("kurtis", np.zeros((3, 32, 32), np.float32))
        result = await loader.infer("men_tshirts", np.zeros((3, 32, 32), np.float32))
        assert set(result.row) == {"color", "neck", "pattern", "print_or_pattern_type", "sleeve_length"}
        await loader.stop(1.0)

    asyncio.run(run())


def test_concurrent_images_share_batches_and_match_single_image_results(tmp_path):
    build_repository(tmp_path, slugs=("women_tshirts",))
    model = predictor(tmp_path, max_batch_size=8, max_queue_delay_s=0.05)
    model.load()
    rng = np.random.default_rng(1)
    images = [rng.normal(size=(3, 32, 32)).astype(np.float32) for _ in range(8)]

    async def run() -> list:
        await model.start()
        batched = await asyncio.gather(*(model.infer("women_tshirts", x) for x in images))
        alone = [await model.infer("women_tshirts", x) for x in images[:2]]
        await model.stop(1.0)
        return [batched, alone]

    batched, alone = asyncio.run(run())
    assert {r.batch_size for r in batched} == {8}
    for b, a in zip(batched, alone, strict=False):
        assert {k: v.decoded_value for k, v in b.row.items()} == {k: v.decoded_value for k, v in a.row.items()}
        assert b.row["color"].confidence == pytest.approx(a.row["color"].confidence, abs=1e-5)


def test_an_idle_model_decodes_and_runs_a_lone_image_in_one_worker_call(tmp_path):
    import threading

    build_repository(tmp_path, slugs=("men_tshirts",))
    loader = predictor(tmp_path)
    pixels = np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32)
    threads: list[str] = []

    def prepare() -> np.ndarray:
        threads.append(threading.current_thread().name)
        return pixels

    async def run() -> tuple:
        await loader.start()
        try:
            alone = await loader.infer_alone_if_idle("men_tshirts", prepare)
            queued = await loader.infer("men_tshirts", pixels)
        finally:
            await loader.stop(1.0)
        return alone, queued

    alone, queued = asyncio.run(run())
    assert alone is not None and alone.batch_size == 1 and alone.queue_wait_s == 0.0
    assert threads and threads[0].startswith("men_tshirts") and threads[0] != threading.current_thread().name
    assert {k: (p.decoded_value, round(p.confidence, 6)) for k, p in alone.row.items()} == {
        k: (p.decoded_value, round(p.confidence, 6)) for k, p in queued.row.items()}
