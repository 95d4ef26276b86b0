"""An in-process inference server (``service/inference_server.py``) on a real Unix socket, with a fake model
whose every output row is the mean of its image: a test fills each image with its own value and can tell
whose rows it got back."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

import numpy as np

from service.inference_process import accept
from service.inference_protocol import Hello, InferenceAddress, RemoteModel
from service.inference_server import InferenceServer, Served
from service.metrics import ServiceMetrics
from service.model_runner import Outputs, Runtime

SHAPE = (3, 4, 4)
MAX_BATCH = 8


@dataclass
class MeanModel:
    """``run``: every image's mean as its logit and its OOD score; records each call's size and can be held
    on :attr:`gate` to let calls queue behind it."""

    sizes: list[int] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    running: threading.Event = field(default_factory=threading.Event)
    fail_with: str | None = None
    """Raised by the next calls while set."""

    def __post_init__(self) -> None:
        self.gate.set()

    def run(self, batch: Any, admitted: int) -> Outputs:
        self.sizes.append(len(batch))
        self.running.set()
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail_with is not None:
            raise RuntimeError(self.fail_with)
        means = np.asarray(batch).reshape(len(batch), -1).mean(axis=1).astype(np.float32)
        return {"value": means[:, None]}, means

    def runtime(self) -> Runtime:
        return Runtime(self.run, "fake", "fp32")


def filled(value: float) -> np.ndarray:
    return np.full(SHAPE, value, dtype=np.float32)


@contextmanager
def inference_server(folder: Path, model: MeanModel, in_flight: int = 1,
                     ) -> Iterator[tuple[InferenceAddress, InferenceServer]]:
    """``men_tshirts`` served by ``model`` (and ``sarees`` reported broken) until the block ends."""
    address = InferenceAddress(str(folder / "socket"), os.urandom(16))
    served = {"men_tshirts": Served(model.runtime(), MAX_BATCH, SHAPE, in_flight)}
    hello = Hello({"men_tshirts": RemoteModel(1, "fake", "fp32", MAX_BATCH, SHAPE),
                   "sarees": RemoteModel(None, error="broken on purpose")})
    server = InferenceServer(served, hello, ServiceMetrics())
    server.start()
    listener = Listener(address.path, family="AF_UNIX")
    threading.Thread(target=accept, args=(listener, server, address.authkey), daemon=True).start()
    try:
        yield address, server
    finally:
        model.gate.set()
        listener.close()
        server.stop(5)
