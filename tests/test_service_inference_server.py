"""The inference process's server (``SHARED_INFERENCE``) spoken to over real Unix-socket connections: what it
refuses, and how it joins calls that wait together."""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import pytest

from service.inference_protocol import (
    Attach,
    Attached,
    Call,
    Failure,
    Hello,
    InferenceAddress,
    Result,
    images_view,
    region_bytes,
)
from service.inference_server import CallQueue, Pending, split
from tests.service.inference import MAX_BATCH, SHAPE, MeanModel, filled, inference_server


@pytest.fixture
def memories():
    made: list[SharedMemory] = []

    def make(capacity: int) -> SharedMemory:
        made.append(SharedMemory(create=True, size=region_bytes(capacity, SHAPE)))
        return made[-1]

    yield make
    for memory in made:
        memory.close()
        memory.unlink()


def connect(address: InferenceAddress) -> Connection:
    connection = Client(address.path, family="AF_UNIX", authkey=address.authkey)
    assert isinstance(connection.recv(), Hello)
    return connection


def ask(connection: Connection, message: object) -> object:
    connection.send(message)
    return connection.recv()


def attached(address: InferenceAddress, memory: SharedMemory, capacity: int, values: list[float]) -> Connection:
    images = images_view(memory, capacity, SHAPE)
    for i, value in enumerate(values):
        images[i] = filled(value)
    del images
    connection = connect(address)
    assert isinstance(ask(connection, Attach("men_tshirts", memory.name, capacity)), Attached)
    return connection


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within 10 s"
        time.sleep(0.005)


def test_a_connection_is_told_what_is_served_broken_models_included(tmp_path):
    with inference_server(tmp_path, MeanModel()) as (address, _):
        connection = Client(address.path, family="AF_UNIX", authkey=address.authkey)
        hello = connection.recv()
    assert hello.models["men_tshirts"].max_batch_size == MAX_BATCH
    assert hello.models["sarees"].error == "broken on purpose"


@pytest.mark.parametrize(("message", "refusal"), [
    (Attach("sarees", "", 1), "'sarees' is not served here"),
    (Attach("men_tshirts", "", MAX_BATCH + 1), f"a slot of {MAX_BATCH + 1} images; batches here are 1 to {MAX_BATCH}"),
    (Attach("men_tshirts", "catalog-no-such-region", 1), "cannot open shared memory 'catalog-no-such-region'"),
    (Call(1, 1), "a call before its slot was attached"),
])
def test_an_attachment_or_call_out_of_bounds_is_refused_naming_why(tmp_path, message, refusal):
    model = MeanModel()
    with inference_server(tmp_path, model) as (address, _):
        reply = ask(connect(address), message)
    assert isinstance(reply, Failure) and refusal in reply.message
    assert model.sizes == []


def test_a_region_smaller_than_the_slot_it_claims_is_refused(tmp_path, memories):
    small = memories(1)
    with inference_server(tmp_path, MeanModel()) as (address, _):
        reply = ask(connect(address), Attach("men_tshirts", small.name, 4))
    assert isinstance(reply, Failure) and "need" in reply.message


@pytest.mark.parametrize("size", [0, 3])
def test_a_call_larger_than_its_slot_is_refused(tmp_path, memories, size):
    model = MeanModel()
    with inference_server(tmp_path, model) as (address, _):
        connection = attached(address, memories(2), 2, [1.0, 2.0])
        reply = ask(connection, Call(size, size))
        assert isinstance(reply, Failure) and f"a call of {size} images on a slot of 2" in reply.message
        ok = ask(connection, Call(2, 2))  # the connection still serves
    assert isinstance(ok, Result) and ok.logits["value"].ravel().tolist() == [1.0, 2.0]
    assert model.sizes == [2]


def test_calls_waiting_together_run_as_one_model_call_each_answered_with_its_own_rows(tmp_path, memories):
    model = MeanModel()
    model.gate.clear()  # the first call holds the model while the others queue
    with inference_server(tmp_path, model) as (address, server):
        first = attached(address, memories(2), 2, [1.0, 1.0])
        queued = [attached(address, memories(3), 3, [2.0, 2.0, 2.0]), attached(address, memories(2), 2, [3.0, 3.0])]
        first.send(Call(2, 2))
        assert model.running.wait(10)
        for connection, size in zip(queued, (3, 2), strict=True):
            connection.send(Call(size, size))
        wait_until(lambda: server.waiting_images("men_tshirts") == 5, "five images queued")
        model.gate.set()
        answers = [connection.recv() for connection in (first, *queued)]
    assert model.sizes == [2, 5]
    assert [a.logits["value"].ravel().tolist() for a in answers] == [[1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0]]
    assert [a.ood.tolist() for a in answers] == [[1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0]]


def test_the_queue_takes_calls_in_order_up_to_the_largest_batch():
    calls = CallQueue(max_images=8)
    sizes = [3, 4, 2, 8, 1]
    for size in sizes:
        calls.put(Pending(None, size, size))  # type: ignore[arg-type]
    taken = []
    calls.close()
    while (group := calls.take()) is not None:
        taken.append([call.size for call in group[0]])
    assert taken == [[3, 4], [2], [8], [1]]  # a call that does not fit waits for the next model call


def test_outputs_without_one_row_per_image_are_refused():
    logits = {"value": np.zeros((4, 1), np.float32)}
    assert [r.logits["value"].shape for r in split((logits, None), [1, 3])] == [(1, 1), (3, 1)]
    with pytest.raises(ValueError, match=r"outputs with \{'value': 4\} rows for 5 images"):
        list(split((logits, None), [2, 3]))
