"""``service/onnx_predictor.py``: the real predictor over a tiny ONNX repository (benchmarks/onnx_factory.py),
in-process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.onnx_factory import build_repository, write_version
from catalog.manifest import MANIFEST_NAME, load_manifest
from service.errors import ModelLoadError, ModelNotReadyError, UnknownModelError
from service.metrics import ServiceMetrics
from service.onnx_predictor import OnnxPredictor, batcher_config
from service.settings import Settings


def pixels(array: np.ndarray):
    """A preprocessing step that hands over an already made tensor."""
    return lambda: array


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
            loader.ready_model("kurtis")
        result = await loader.ready_model("men_tshirts").infer(pixels(np.zeros((3, 32, 32), np.float32)), None)
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
        served = model.ready_model("women_tshirts")
        batched = await asyncio.gather(*(served.infer(pixels(x), None) for x in images))
        alone = [await served.infer(pixels(x), None) for x in images[:2]]
        await model.stop(1.0)
        return [batched, alone]

    batched, alone = asyncio.run(run())
    assert {r.batch_size for r in batched} == {8}
    for b, a in zip(batched, alone, strict=False):
        assert {k: v.value for k, v in b.row.items()} == {k: v.value for k, v in a.row.items()}
        assert b.row["color"].confidence == pytest.approx(a.row["color"].confidence, abs=1e-5)


def test_batches_run_on_the_threads_that_preprocess_and_answer_as_alone(tmp_path):
    build_repository(tmp_path, slugs=("men_tshirts",))
    loader = predictor(tmp_path, preprocess_threads=2)
    images = [np.random.default_rng(i).standard_normal((3, 32, 32)).astype(np.float32) for i in range(4)]
    prepared: list[str] = []
    ran: list[str] = []

    def preparing(image: np.ndarray):
        def prepare() -> np.ndarray:
            prepared.append(threading.current_thread().name)
            return image
        return prepare

    async def run() -> tuple:
        await loader.start()
        try:
            served = loader.ready_model("men_tshirts")
            model_run = served.runtime.run

            def recording(batch, admitted):
                ran.append(threading.current_thread().name)
                return model_run(batch, admitted)

            served.runtime = dataclasses.replace(served.runtime, run=recording)
            alone = await served.infer(preparing(images[0]), None)
            lone_threads = (list(prepared), list(ran))
            together = await asyncio.gather(*(served.infer(preparing(x), None) for x in images))
            return alone, lone_threads, together
        finally:
            await loader.stop(1.0)

    alone, (lone_prepared, lone_ran), together = asyncio.run(run())
    # The lone image: preprocessed and run in one call on one preprocessing thread.
    assert alone.batch_size == 1 and alone.queue_wait_s < 0.5
    assert lone_prepared == lone_ran and lone_ran[0].startswith("preprocess")
    assert all(name.startswith("preprocess") for name in ran)
    assert {k: (p.value, round(p.confidence, 6)) for k, p in alone.row.items()} == {
        k: (p.value, round(p.confidence, 6)) for k, p in together[0].row.items()}


@pytest.mark.parametrize(
    ("provider", "shared", "setting", "on_threads"),
    [("CPUExecutionProvider", False, None, True), ("CPUExecutionProvider", True, None, False),
     ("CUDAExecutionProvider", False, None, False), ("TensorrtExecutionProvider", False, None, False),
     ("CUDAExecutionProvider", False, True, True), ("CPUExecutionProvider", False, False, False)],
)
def test_batches_run_on_preprocessing_threads_for_models_run_here_on_the_cpu_unless_set(
        tmp_path, provider, shared, setting, on_threads):
    folder = write_version(tmp_path, "men_tshirts")
    settings = Settings(repository=tmp_path, batches_on_preprocess_threads=setting, shared_inference=shared,
                        workers=2 if shared else 1)
    config = batcher_config(settings, load_manifest(folder), provider)
    assert config.run_on_preparing_threads is on_threads


def test_more_batches_in_flight_than_preprocessing_threads_to_run_them_is_refused(tmp_path):
    folder = write_version(tmp_path, "men_tshirts")
    settings = Settings(repository=tmp_path, max_batches_in_flight=3, preprocess_threads=2, session_threads=1)
    with pytest.raises(ModelLoadError, match="max_batches_in_flight=3 cannot apply: batches run on the 2 "):
        batcher_config(settings, load_manifest(folder), "CPUExecutionProvider")
    apart = settings.model_copy(update={"batches_on_preprocess_threads": False})
    assert batcher_config(apart, load_manifest(folder), "CPUExecutionProvider").max_in_flight == 3


def test_gathering_applies_only_where_batches_run_on_the_preprocessing_threads_and_fits_a_batch(tmp_path):
    folder = write_version(tmp_path, "men_tshirts")
    manifest = load_manifest(folder)
    assert batcher_config(Settings(repository=tmp_path, gather_batch_size=4), manifest,
                          "CPUExecutionProvider").gather_size == 4
    with pytest.raises(ModelLoadError, match="gather_batch_size=4 cannot apply: batches do not run on the prep"):
        batcher_config(Settings(repository=tmp_path, gather_batch_size=4), manifest, "CUDAExecutionProvider")
    with pytest.raises(ValueError, match="gather_batch_size=32 is over max_batch_size=16"):
        Settings(repository=tmp_path, gather_batch_size=32)


def test_each_model_is_timed_at_load_to_choose_its_gathering(tmp_path, caplog):
    build_repository(tmp_path, slugs=("men_tshirts",))
    with caplog.at_level("INFO", logger="service.model_runner"):
        loaded = predictor(tmp_path)
        loaded.load()
    assert loaded.ready_model("men_tshirts").batcher.config.gather_size in (1, 4)
    assert any("men_tshirts:" in r.message and "one image" in r.message for r in caplog.records)
    pinned = predictor(tmp_path, gather_batch_size=2)
    pinned.load()
    assert pinned.ready_model("men_tshirts").batcher.config.gather_size == 2


@pytest.mark.parametrize("old", ["DECODE_ALONE_WHEN_IDLE", "PREPROCESS_ALONE_WHEN_IDLE"])
def test_the_renamed_variables_are_refused_naming_the_new_one(tmp_path, monkeypatch, old):
    monkeypatch.setenv(f"CATALOG_SERVICE_{old}", "false")
    with pytest.raises(ValueError, match="renamed to CATALOG_SERVICE_BATCHES_ON_PREPROCESS_THREADS"):
        Settings(repository=tmp_path)


def spin_entries(session) -> tuple[str | None, ...]:
    """``session.intra_op.allow_spinning`` and ``session.force_spinning_stop``; None where not set."""
    options = session.get_session_options()

    def entry(key: str) -> str | None:
        try:
            return options.get_session_config_entry(key)
        except RuntimeError:  # ONNX Runtime's answer for a key never set
            return None

    return entry("session.intra_op.allow_spinning"), entry("session.force_spinning_stop")


@pytest.mark.parametrize(("threads", "setting", "spins"), [(2, None, True), (1, None, False), (2, False, False)])
def test_cpu_models_with_threads_to_spin_get_a_spinning_session_unless_set(tmp_path, threads, setting, spins):
    build_repository(tmp_path)
    loader = OnnxPredictor(Settings(repository=tmp_path, session_threads=threads, spin_when_idle=setting),
                           ServiceMetrics())
    loader.load()
    sessions = loader.sessions["men_tshirts"]
    assert spin_entries(sessions.shared) == ("0", None)
    if spins:
        assert sessions.lone is not None and spin_entries(sessions.lone) == ("1", "1")
    else:
        assert sessions.lone is None


def test_spinning_with_one_thread_is_refused_naming_both_settings(tmp_path):
    build_repository(tmp_path)
    with pytest.raises(ModelLoadError, match=r"spin_when_idle=True needs at least 2 session threads.*resolves to 1"):
        predictor(tmp_path, spin_when_idle=True).load()


def test_spinning_on_a_device_provider_is_refused_instead_of_loading_a_second_copy(tmp_path, monkeypatch):
    import service.onnx_predictor as onnx_predictor

    class OnDevice(ort.InferenceSession):  # what a CUDA host reports; this one has no GPU
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(onnx_predictor.ort, "InferenceSession", OnDevice)
    build_repository(tmp_path)
    with pytest.raises(ModelLoadError, match="model runs on CUDAExecutionProvider"):
        OnnxPredictor(Settings(repository=tmp_path, session_threads=2, spin_when_idle=True), ServiceMetrics()).load()


def test_batches_tell_the_session_choice_how_many_images_the_model_has_admitted(tmp_path):
    build_repository(tmp_path)
    loader = OnnxPredictor(Settings(repository=tmp_path, session_threads=2), ServiceMetrics())
    loader.load()
    served = loader.ready_model("men_tshirts")
    real = loader.sessions["men_tshirts"]
    seen: list[tuple[int, int]] = []

    class Recording:
        every = real.every

        def run(self, batch_size, admitted, call):
            seen.append((batch_size, admitted))
            return call(real.shared)

    loader.sessions["men_tshirts"] = Recording()
    image = np.zeros((3, 32, 32), np.float32)
    started, release = threading.Event(), threading.Event()

    def slow_prepare() -> np.ndarray:
        started.set()
        release.wait(10)
        return image

    async def run() -> None:
        await loader.start()
        try:
            await served.infer(pixels(image), None)  # alone
            slow = asyncio.ensure_future(served.infer(slow_prepare, None))  # admitted, preprocessing
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            await served.infer(pixels(image), None)  # beside the slow one's preprocessing
            release.set()
            await slow  # alone again
        finally:
            release.set()
            await loader.stop(1.0)

    asyncio.run(run())
    assert seen == [(1, 1), (1, 2), (1, 1)]


def test_a_device_provider_that_falls_back_to_the_cpu_gets_the_cpu_layout(tmp_path, monkeypatch):
    # ONNX Runtime quietly serves a CUDA-first provider list on the CPU when CUDA cannot start (onnxruntime-gpu on
    # a node without a GPU). The batcher then runs one batch per core on the shared session, as on the CPU: a
    # shared session that kept the whole budget would run that many batches on that many threads each.
    import service.cpu_budget as budget
    import service.onnx_predictor as onnx_predictor

    class FallsBack(ort.InferenceSession):  # CUDA asked for, the CPU given (also on a host with a GPU)
        def __init__(self, path, options, providers):
            super().__init__(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(budget, "cgroup_quota", lambda root=None: None)
    monkeypatch.setattr(budget, "available_cpus", lambda: 4)
    monkeypatch.setattr(Settings, "providers", property(lambda self: ["CUDAExecutionProvider", "CPUExecutionProvider"]))
    monkeypatch.setattr(onnx_predictor.ort, "InferenceSession", FallsBack)
    build_repository(tmp_path)
    loader = OnnxPredictor(Settings(repository=tmp_path, warmup=False), ServiceMetrics())
    loader.load()
    sessions = loader.sessions["men_tshirts"].every
    assert [s.get_session_options().intra_op_num_threads for s in sessions] == [1, 4]
    assert loader.ready_model("men_tshirts").batcher.config.max_in_flight == 4


def test_unset_threads_run_batches_side_by_side_on_the_one_thread_session_with_the_lone_answers(tmp_path, monkeypatch):
    # The default CPU layout: two batches meet inside the shared session's run at once (a barrier that only two
    # concurrent calls pass), and their answers are those of the images run one at a time.
    import service.cpu_budget as budget

    monkeypatch.setattr(budget, "cgroup_quota", lambda root=None: None)
    monkeypatch.setattr(budget, "available_cpus", lambda: 2)
    build_repository(tmp_path)
    loader = OnnxPredictor(Settings(repository=tmp_path, max_batch_size=1), ServiceMetrics())
    loader.load()
    served = loader.ready_model("men_tshirts")
    real = loader.sessions["men_tshirts"]
    assert real.shared.get_session_options().intra_op_num_threads == 1 and served.batcher.config.max_in_flight == 2
    meet = threading.Barrier(2, timeout=10)

    class Meeting:
        every = real.every

        def run(self, batch_size, admitted, call):
            if admitted > batch_size:  # under load: the shared session
                meet.wait()
            return real.run(batch_size, admitted, call)

    rng = np.random.default_rng(2)
    images = [rng.standard_normal((3, 32, 32)).astype(np.float32) for _ in range(2)]

    async def run() -> tuple[list, list]:
        await loader.start()
        try:
            alone = [await served.infer(pixels(x), None) for x in images]
            loader.sessions["men_tshirts"] = Meeting()
            return alone, await asyncio.gather(*(served.infer(pixels(x), None) for x in images))
        finally:
            await loader.stop(1.0)

    alone, together = asyncio.run(run())
    for a, t in zip(alone, together, strict=True):
        assert {k: (p.value, round(p.confidence, 5)) for k, p in a.row.items()} == {
            k: (p.value, round(p.confidence, 5)) for k, p in t.row.items()}
