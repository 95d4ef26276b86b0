"""The one inference process of ``SHARED_INFERENCE``: it loads every model once with the configured backend
(the same loading and verification as a single process: ``service/backends.py``), listens on a Unix socket
for the front ends (``service/inference_server.py``) and runs their batches until SIGTERM. The parent starts
it before the front ends and stops it after them (``service/workers.py``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge

from service.backends import create_predictor
from service.errors import ModelLoadError
from service.inference_protocol import Hello, InferenceAddress, RemoteModel
from service.inference_server import InferenceServer, Served
from service.metrics import ServiceMetrics
from service.model_runner import RepositoryPredictor
from service.settings import Settings

log = logging.getLogger("service.inference_process")
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass
class InferenceRole:
    """What the inference process gets from the parent (pickled into it)."""

    supervisor_pid: int
    address: InferenceAddress
    started: Connection
    """Written once when it listens, every model loaded: the version of each (``{slug: version}``)."""


def inference_main(settings: Settings, log_level: str, role: InferenceRole) -> None:
    """The inference process's entry point."""
    from service.request_context import configure_logging
    from service.workers import die_with_parent

    os.setpgid(0, 0)
    # Taken by sigwait below, never by a handler: blocked before any thread starts, so every thread inherits it.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    die_with_parent(role.supervisor_pid)
    configure_logging(log_level)
    sys.exit(run_inference(settings, role))


def run_inference(settings: Settings, role: InferenceRole) -> int:
    metrics = ServiceMetrics(supervisor_pid=role.supervisor_pid)
    predictor = create_predictor(settings, metrics)
    try:
        predictor.load()
    except ModelLoadError as error:
        print(f"error: cannot serve: {error}", file=sys.stderr)
        return 1
    served, hello = describe(predictor)
    server = InferenceServer(served, hello, metrics)
    server.start()
    with contextlib.suppress(FileNotFoundError):  # left by a predecessor that was killed
        os.unlink(role.address.path)
    listener = Listener(role.address.path, family="AF_UNIX")  # keyed per connection, in accept()
    threading.Thread(target=accept, args=(listener, server, role.address.authkey), name="accept",
                     daemon=True).start()
    role.started.send({slug: model.version for slug, model in hello.models.items() if model.version is not None})
    role.started.close()
    log.info("inference process serving %s (pid %d)", ", ".join(sorted(served)) or "no model", os.getpid())
    received = signal.sigwait(STOP_SIGNALS)
    # The parent signals once every front end has exited: what is queued is what they left.
    log.info("inference process stopping (%s)", signal.Signals(received).name)
    server.stop(settings.drain_timeout_s)
    listener.close()
    return 0


def accept(listener: Listener, server: InferenceServer, authkey: bytes) -> None:
    """Accept connections on ``listener`` (made without a key) until it closes; each is authenticated with
    ``authkey`` on its own thread, so a peer that stalls or leaves in the handshake holds up no other."""
    while True:
        try:
            connection = listener.accept()
        except OSError:
            return  # closed
        threading.Thread(target=admit, args=(connection, server, authkey), name="front-end", daemon=True).start()


HANDSHAKE_TIMEOUT_S = 10.0
"""A peer that has not finished the key handshake by then is dropped, with the thread that waited for it."""


def admit(connection: Connection, server: InferenceServer, authkey: bytes) -> None:
    try:  # what a keyed Listener does in accept()
        receive_timeout(connection, HANDSHAKE_TIMEOUT_S)
        deliver_challenge(connection, authkey)
        answer_challenge(connection, authkey)
        receive_timeout(connection, 0.0)  # a front end's next call may come after any pause
    except (AuthenticationError, OSError, EOFError) as error:  # a timeout is an OSError (EAGAIN)
        log.warning("refused a connection that failed the key handshake: %r", error)
        connection.close()
        return
    server.serve(connection)


def receive_timeout(connection: Connection, seconds: float) -> None:
    """``SO_RCVTIMEO`` on the connection's socket (0: wait for ever). Set through a copy of its descriptor:
    the option belongs to the socket, and closing the copy leaves the connection open."""
    with socket.socket(fileno=os.dup(connection.fileno())) as copy:
        whole = int(seconds)
        copy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole,
                                                                          int((seconds - whole) * 1e6)))


def describe(predictor: RepositoryPredictor) -> tuple[dict[str, Served], Hello]:
    """The models to run, and what the front ends are told of every configured one (broken ones too, with
    ``ALLOW_PARTIAL_START``)."""
    served: dict[str, Served] = {}
    told: dict[str, RemoteModel] = {}
    for info in predictor.models():
        if not info.ready:
            told[info.name] = RemoteModel(None, error=info.error)
            continue
        runner = predictor.ready_model(info.name)
        model = Served(runner.runtime, runner.batcher.config.max_batch_size, tuple(info.spec.input_shape),
                       runner.batcher.config.max_in_flight)
        served[info.name] = model
        told[info.name] = RemoteModel(info.version, info.provider, info.precision, model.max_batch_size,
                                      model.input_shape)
    return served, Hello(told)
