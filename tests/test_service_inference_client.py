"""A front end's slots (``SHARED_INFERENCE``) against a real in-process inference server over Unix sockets:
bounds, answers matched to the batch that sent them, and a vanished inference process."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Listener

import numpy as np
import pytest

from service.errors import InferenceUnavailableError
from service.inference_client import InferenceLink, ModelSlots
from service.inference_protocol import Attach, Attached, Hello, InferenceAddress, RemoteModel
from tests.service.inference import MAX_BATCH, SHAPE, MeanModel, filled, inference_server

REMOTE = RemoteModel(1, "fake", "fp32", MAX_BATCH, SHAPE)


def slots(address: InferenceAddress, capacity: int = MAX_BATCH, count: int = 1,
          model: RemoteModel = REMOTE) -> tuple[InferenceLink, ModelSlots]:
    link = InferenceLink(address)
    link.start()
    return link, ModelSlots(link, "men_tshirts", model, capacity, count)


def test_outputs_reach_the_batch_that_sent_them_with_batches_in_flight_from_many_threads(tmp_path):
    model = MeanModel()
    with inference_server(tmp_path, model, in_flight=2) as (address, _):
        link, model_slots = slots(address, count=4)
        run = model_slots.runtime().run

        def one_batch(value: int) -> list[float]:
            size = value % MAX_BATCH + 1
            logits, ood = run([filled(value + i / 100) for i in range(size)], size)
            assert ood is not None and np.allclose(ood, logits["value"].ravel())
            return [round(float(v), 4) for v in logits["value"].ravel()]

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(one_batch, range(80)))
        model_slots.close()
        link.stop()
    assert answers == [[round(value + i / 100, 4) for i in range(value % MAX_BATCH + 1)] for value in range(80)]
    assert sum(model.sizes) == sum(value % MAX_BATCH + 1 for value in range(80))


def test_a_batch_larger_than_its_slot_or_of_another_shape_never_reaches_the_model(tmp_path):
    model = MeanModel()
    with inference_server(tmp_path, model) as (address, _):
        link, model_slots = slots(address, capacity=2)
        with pytest.raises(ValueError, match="a batch of 3 images does not fit its slot of 2"):
            model_slots.run([filled(1)] * 3, 3)
        with pytest.raises(ValueError):
            model_slots.run([np.zeros((3, 5, 5), np.float32)], 1)
        logits, _ = model_slots.run([filled(7), filled(8)], 2)
        model_slots.close()
        link.stop()
    assert logits["value"].ravel().tolist() == [7.0, 8.0]
    assert model.sizes == [2]


def test_a_failed_model_call_fails_its_batch_only(tmp_path):
    model = MeanModel()
    with inference_server(tmp_path, model) as (address, _):
        link, model_slots = slots(address)
        model.fail_with = "out of memory"
        with pytest.raises(RuntimeError, match="men_tshirts: the model call failed: out of memory"):
            model_slots.run([filled(1)], 1)
        model.fail_with = None
        assert model_slots.run([filled(2)], 1)[0]["value"].ravel().tolist() == [2.0]
        model_slots.close()
        link.stop()


def vanishing_server(address: InferenceAddress, hello: Hello) -> threading.Thread:
    """Answers hellos and attachments, then drops every connection at the first call (as a killed inference
    process does)."""
    listener = Listener(address.path, family="AF_UNIX", authkey=address.authkey)

    def serve() -> None:
        held = []
        while True:
            connection = listener.accept()
            connection.send(hello)
            held.append(connection)
            if connection.poll(1) and isinstance(connection.recv(), Attach):
                connection.send(Attached())
                connection.recv()  # the call
                for each in held:
                    each.close()
                listener.close()
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_an_inference_process_that_vanishes_fails_the_batch_with_503_and_the_link_says_it_is_down(tmp_path):
    address = InferenceAddress(str(tmp_path / "socket"), os.urandom(16))
    server = vanishing_server(address, Hello({"men_tshirts": REMOTE}))
    link, model_slots = slots(address)
    assert link.up
    with pytest.raises(InferenceUnavailableError, match="the inference process is unavailable"):
        model_slots.run([filled(1)], 1)
    server.join(10)
    deadline = time.monotonic() + 10
    while link.up:  # the watcher's connection closed with the others
        assert time.monotonic() < deadline, "the link still says up"
        time.sleep(0.01)
    with pytest.raises(InferenceUnavailableError):  # nothing listens: refused at once, not hanging
        model_slots.run([filled(1)], 1)
    model_slots.close()
    link.stop()


def test_a_slot_the_inference_process_refuses_fails_the_batch_with_503_naming_the_reason(tmp_path):
    model = MeanModel()
    with inference_server(tmp_path, model) as (address, _):
        bigger = RemoteModel(1, "fake", "fp32", MAX_BATCH + 1, SHAPE)  # what a front end thinks it may send
        link, model_slots = slots(address, capacity=MAX_BATCH + 1, model=bigger)
        with pytest.raises(InferenceUnavailableError,
                           match=f"refused this worker's slot for men_tshirts: .*a slot of {MAX_BATCH + 1} images"):
            model_slots.run([filled(1)], 1)
        model_slots.close()
        link.stop()
    assert model.sizes == []


def test_a_restarted_inference_process_with_another_version_is_refused_naming_the_fix(tmp_path):
    with inference_server(tmp_path, MeanModel()) as (address, _):
        link, model_slots = slots(address, model=RemoteModel(2, "fake", "fp32", MAX_BATCH, SHAPE))
        with pytest.raises(InferenceUnavailableError, match="serves men_tshirts version 1, this worker version 2"):
            model_slots.run([filled(1)], 1)
        model_slots.close()
        link.stop()
