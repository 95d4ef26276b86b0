"""``WORKERS`` > 1: a parent process that holds the port and N worker processes that serve it.

Each worker is a fresh interpreter (``spawn``: ONNX Runtime's thread pools do not survive a fork) that loads
its own sessions with ``1/N`` of the CPU budget and runs the same :class:`~service.__main__.DrainingServer`
as a single process, on its own listening socket bound to the port with ``SO_REUSEPORT``: the kernel spreads
new connections over the workers listening (by a hash of the client's address and port), and a worker
listens only once it serves. One socket shared by every worker spreads them worse: an idle worker's event
loop accepts every pending connection at once, so a burst of keep-alive connections can all land on one
worker (measured in BENCHMARKS.md, "Workers"). The parent binds the port too (without listening), so it
stays reserved while workers come and go, and serves no request. What it guarantees:

- SIGTERM (or SIGINT) to the parent is forwarded once to every worker, which drains as a single process does
  (readiness 503, in-flight requests finish); the parent exits 0 once every worker has exited 0, else 1.
- A worker that exits before it serves (a broken model, the tracing extra missing) stops the others, and the
  parent exits with its code: every worker would fail the same way.
- A worker that dies while serving (killed, crashed) is logged as an error and replaced by a new one; the
  others keep serving meanwhile (connections it had accepted, or that waited in its own accept queue, are
  lost, as with a single process), and its counters stay in the totals.
- Metrics: ``PROMETHEUS_MULTIPROC_DIR`` is a fresh temporary folder, removed when the parent exits.
- Workers run in their own process group, so a terminal's Ctrl-C reaches them once (from the parent), and
  they get SIGTERM if the parent itself dies.

With ``SHARED_INFERENCE`` the workers are front ends and one more process runs every model
(``service/inference_process.py``): the parent starts it first and the front ends once it has loaded every
model and listens (on a Unix socket in a private temporary folder); SIGTERM drains the front ends first and
stops it once they have all exited. An inference process that fails to start stops the service with its
exit code; one that dies while serving is logged as an error and restarted, and meanwhile the front ends
answer 503 (``inference_unavailable``) and report not ready, never a wrong answer (their connections to it
close, so every batch it held fails at once); a front end that dies meanwhile, or fails to start because
the inference process it was started against died, is started again once a new one serves.
A front end that dies without exit code 0 leaves its shared-memory slots behind: the parent unlinks them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from service.inference_protocol import InferenceAddress, remove_segments
from service.settings import Settings

log = logging.getLogger("service.workers")
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Read by prometheus_client when a worker imports it: its metrics then write to files there."""
PR_SET_PDEATHSIG = 1


@dataclass
class WorkerRole:
    """What one worker process gets from the parent (pickled into it)."""

    index: int
    supervisor_pid: int
    family: int
    address: tuple[str, int]
    """Where the parent bound the port (its real number when the setting is 0)."""
    started: Connection
    """Written once when the worker serves (its server started, models warm)."""
    inference: InferenceAddress | None = None
    """With ``SHARED_INFERENCE``: the inference process that runs this front end's batches."""

    def listeners(self) -> list[socket.socket]:
        """This worker's own socket on the port (uvicorn listens on it once the app has started)."""
        return [bind(self.family, self.address)]

    def report_started(self) -> None:
        self.started.send(True)
        self.started.close()


def worker_main(settings: Settings, log_level: str, role: WorkerRole) -> None:
    """A worker process's entry point."""
    os.setpgid(0, 0)
    die_with_parent(role.supervisor_pid)
    from service.__main__ import serve
    from service.request_context import configure_logging

    configure_logging(log_level)
    sys.exit(serve(settings, log_level, role))


def die_with_parent(parent: int) -> None:
    """A parent killed outright (SIGKILL, OOM) cannot forward a signal: ask the kernel for SIGTERM then, so
    the worker drains instead of serving on as an orphan."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request above
        os.kill(os.getpid(), signal.SIGTERM)


def bind(family: int, address: tuple[str, int]) -> socket.socket:
    """A socket bound to the port the parent and every worker share (``SO_REUSEPORT``)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


@dataclass
class Worker:
    index: int
    process: BaseProcess
    started: Connection
    serving: bool = False
    inference: InferenceChild | None = None
    """With ``SHARED_INFERENCE``: the inference process that served when it was started."""


@dataclass
class InferenceChild:
    process: BaseProcess
    started: Connection
    serving: bool = False
    signalled: bool = False


@dataclass
class Supervisor:
    settings: Settings
    log_level: str
    listener: socket.socket
    address: InferenceAddress | None = None
    """With ``SHARED_INFERENCE``: where the inference process listens."""
    workers: list[Worker] = field(default_factory=list)
    inference: InferenceChild | None = None
    replacements: list[int] = field(default_factory=list)
    """Front ends that died while the inference process was restarting: started once it serves again."""
    draining: bool = False
    exit_code: int = 0
    signals: list[int] = field(default_factory=list)
    """Received and not yet forwarded: the handler only records them, the loop acts."""

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        # Signals wake the wait below through this pair, so a drain starts at once.
        self._wake, self._wake_signal = socket.socketpair()
        for end in (self._wake, self._wake_signal):
            end.setblocking(False)

    def run(self) -> int:
        previous = signal.set_wakeup_fd(self._wake_signal.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            if self.address is None:
                self._spawn_workers()
            else:  # the front ends start once it serves
                self.inference = self._spawn_inference()
            while self.workers or self.inference:
                self._wait_once()
        finally:
            signal.set_wakeup_fd(previous)
            self._wake.close()
            self._wake_signal.close()
        return self.exit_code

    def _spawn_workers(self) -> None:
        for index in range(self.settings.workers):
            self.workers.append(self._spawn(index))

    def _spawn(self, index: int) -> Worker:
        receive, send = self._context.Pipe(duplex=False)
        role = WorkerRole(index, os.getpid(), self.listener.family, self.listener.getsockname()[:2], send,
                          self.address)
        process = self._context.Process(target=worker_main, args=(self.settings, self.log_level, role),
                                        name=f"catalog-worker-{index}")
        process.start()
        send.close()  # the parent keeps only its end: EOF once the worker is gone
        log.info("worker %d started (pid %d)", index, process.pid)
        return Worker(index, process, receive, inference=self.inference)

    def _wait_once(self) -> None:
        waiting_start = [w.started for w in self.workers if not w.serving]
        inference: list[Any] = []
        if self.inference is not None:
            inference = [self.inference.process.sentinel, *([] if self.inference.serving else [self.inference.started])]
        ready = wait([self._wake, *waiting_start, *(w.process.sentinel for w in self.workers), *inference])
        if self._wake in ready:
            while True:
                try:
                    self._wake.recv(512)
                except BlockingIOError:
                    break
        while self.signals:
            self._forward(self.signals.pop(0))
        for worker in list(self.workers):
            if worker.started in ready and not worker.serving:
                with contextlib.suppress(EOFError):  # it exited before serving: its sentinel tells
                    worker.serving = bool(worker.started.recv())
                    log.info("worker %d serving (pid %d)", worker.index, worker.process.pid)
            if worker.process.exitcode is not None:
                self._reap(worker)
        if self.inference is not None:
            self._tend_inference(self.inference, ready)

    def _spawn_inference(self) -> InferenceChild:
        from service.inference_process import InferenceRole, inference_main

        assert self.address is not None
        receive, send = self._context.Pipe(duplex=False)
        role = InferenceRole(os.getpid(), self.address, send)
        process = self._context.Process(target=inference_main, args=(self.settings, self.log_level, role),
                                        name="catalog-inference")
        process.start()
        send.close()
        log.info("inference process started (pid %d)", process.pid)
        return InferenceChild(process, receive)

    def _tend_inference(self, inference: InferenceChild, ready: list[Any]) -> None:
        if inference.started in ready and not inference.serving:
            with contextlib.suppress(EOFError):
                loaded: dict[str, int] = inference.started.recv()
                inference.serving = True
                log.info("inference process serving (pid %d)", inference.process.pid)
                # A restart loads these again, not a version published since: the front ends run these.
                self.settings = self.settings.model_copy(update={"versions": {**loaded, **self.settings.versions}})
                if not self.workers and not self.replacements and not self.draining:
                    self._spawn_workers()
                while self.replacements and not self.draining:
                    self.workers.append(self._spawn(self.replacements.pop()))
        if inference.process.exitcode is not None:
            self._reap_inference(inference)
        elif self.draining and not self.workers and not inference.signalled and inference.process.pid is not None:
            os.kill(inference.process.pid, signal.SIGTERM)  # every front end has drained
            inference.signalled = True

    def _reap_inference(self, inference: InferenceChild) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        self.inference = None
        inference.started.close()
        code, pid = inference.process.exitcode, inference.process.pid
        mark_process_dead(pid)
        if self.draining:
            if code != 0:
                log.error("inference process (pid %d) ended with %s", pid, describe(code))
                self.exit_code = 1
            return
        if not inference.serving:
            log.error("inference process (pid %d) failed to start (%s): stopping", pid, describe(code))
            self.exit_code = code if code in (1, 2) else 1
            self._forward(signal.SIGTERM)
            return
        log.error("inference process (pid %d) died while serving (%s): the workers answer 503 until a new one "
                  "serves; starting it", pid, describe(code))
        self.inference = self._spawn_inference()

    def _remove_shared_memory(self, index: int, pid: int) -> None:
        """A front end that was killed could not unlink its batch slots: each replacement would leak a set."""
        assert self.address is not None
        removed = remove_segments(self.address, pid)
        if removed:
            log.warning("worker %d (pid %d) left %d shared-memory segment(s): removed", index, pid, len(removed))

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)

    def _forward(self, sig: int) -> None:
        """Every signal goes to every worker, so a second one stops them at once as it does a single process.
        The inference process gets SIGTERM once they have all exited (:meth:`_tend_inference`)."""
        self.draining = True
        for worker in self.workers:
            if worker.process.exitcode is None and worker.process.pid is not None:
                os.kill(worker.process.pid, sig)
        self.listener.close()  # never listened: the port closes as the workers close theirs

    def _reap(self, worker: Worker) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        self.workers.remove(worker)
        worker.started.close()
        code, pid = worker.process.exitcode, worker.process.pid
        mark_process_dead(pid)  # its live gauges (queue depth, readiness) leave the sums
        if self.address is not None and pid is not None and code != 0:
            self._remove_shared_memory(worker.index, pid)
        if self.draining:
            if code != 0:
                log.error("worker %d (pid %d) ended its drain with %s", worker.index, pid, describe(code))
                self.exit_code = 1
            return
        if not worker.serving and self._inference_serving(worker.inference):
            log.error("worker %d (pid %d) failed to start (%s): stopping the others", worker.index, pid,
                      describe(code))
            self.exit_code = code if code in (1, 2) else 1
            self._forward(signal.SIGTERM)
            return
        if worker.serving:
            log.error("worker %d (pid %d) died while serving (%s): starting a replacement", worker.index, pid,
                      describe(code))
        else:  # it started against an inference process that died meanwhile: not its own failure
            log.warning("worker %d (pid %d) could not start while the inference process was down (%s): starting it "
                        "again once one serves", worker.index, pid, describe(code))
        if self.address is not None and not self._inference_serving(self.inference):
            # A front end cannot start without it: started now, it would fail and stop the service.
            self.replacements.append(worker.index)
            return
        self.workers.append(self._spawn(worker.index))

    def _inference_serving(self, inference: InferenceChild | None) -> bool:
        """Whether ``inference`` is the inference process serving now (always true without one)."""
        if self.address is None:
            return True
        return inference is not None and inference is self.inference and inference.serving \
            and inference.process.exitcode is None


def supervise(settings: Settings, log_level: str) -> int:
    """``python -m service`` with ``WORKERS`` > 1: the parent's whole life; returns its exit code."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        listener = bind(family, (settings.host, settings.port))
    except OSError as error:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {error}", file=sys.stderr)
        return 1
    metrics_dir = tempfile.mkdtemp(prefix="catalog-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir  # inherited by the workers
    log.info("%d workers on %s:%d (metrics in %s)", settings.workers, settings.host, listener.getsockname()[1],
             metrics_dir)
    # Private (mode 0700) and keyed: only this service's processes reach the inference process.
    socket_dir = tempfile.mkdtemp(prefix="catalog-inference-") if settings.shared_inference else None
    address = None if socket_dir is None else InferenceAddress(
        os.path.join(socket_dir, "socket"), os.urandom(32), f"catalog-{os.urandom(4).hex()}-")
    try:
        return Supervisor(settings, log_level, listener, address).run()
    finally:
        listener.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if address is not None:
            remove_segments(address)  # a front end killed while the service stopped
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)
