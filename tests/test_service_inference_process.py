"""What the inference process tells the front ends about the models it loaded (``describe``)."""

from __future__ import annotations

import socket
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from types import SimpleNamespace

import pytest

from service import inference_process
from service.inference_process import describe
from service.inference_protocol import Attach, Failure, Hello, InferenceAddress
from tests.service.fakes import FakePredictor
from tests.service.inference import MeanModel, inference_server


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


def hello_within(address: InferenceAddress, timeout_s: float) -> bool:
    """Whether a keyed client gets the hello in time (the handshake runs on a daemon thread: it may block)."""
    got = threading.Event()

    def connect() -> None:
        with Client(address.path, family="AF_UNIX", authkey=address.authkey) as connection:
            if isinstance(connection.recv(), Hello):
                got.set()

    threading.Thread(target=connect, daemon=True).start()
    return got.wait(timeout_s)


def test_a_peer_that_leaves_in_the_handshake_does_not_stop_the_accepting(tmp_path):
    with inference_server(tmp_path, MeanModel()) as (address, _):
        with socket.socket(socket.AF_UNIX) as peer:
            peer.connect(address.path)
        assert hello_within(address, 10)


def test_a_peer_that_stalls_in_the_handshake_does_not_hold_up_the_others(tmp_path):
    with inference_server(tmp_path, MeanModel()) as (address, _), socket.socket(socket.AF_UNIX) as silent:
        silent.connect(address.path)  # and never answers the challenge
        assert hello_within(address, 10)


def test_a_peer_that_stalls_in_the_handshake_is_dropped_after_the_handshake_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(inference_process, "HANDSHAKE_TIMEOUT_S", 0.2)
    with inference_server(tmp_path, MeanModel()) as (address, _), socket.socket(socket.AF_UNIX) as silent:
        silent.connect(address.path)  # and never answers the challenge
        silent.settimeout(10)
        received = b""
        while chunk := silent.recv(4096):  # the challenge, then the end: the server closed it
            received += chunk
        assert received  # it was sent the challenge
        with Client(address.path, family="AF_UNIX", authkey=address.authkey) as keyed:
            assert isinstance(keyed.recv(), Hello)
            assert not keyed.poll(0.5)  # a pause longer than the handshake timeout, then a message
            keyed.send(Attach("kurtis", "nowhere", 1))
            assert isinstance(keyed.recv(), Failure)  # answered: the timeout ended with the handshake


def test_a_peer_without_the_key_is_refused_and_the_others_still_get_in(tmp_path):
    with inference_server(tmp_path, MeanModel()) as (address, _):
        with pytest.raises(AuthenticationError):
            Client(address.path, family="AF_UNIX", authkey=b"not the key")
        assert hello_within(address, 10)
