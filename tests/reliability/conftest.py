"""Fixtures for the reliability suite: tiny model repositories and real uvicorn servers over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.onnx_factory import build_repository
from tests.live_server import Server, start, stop
from tests.reliability.servers import API_KEY, UPLOAD_LIMIT


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("tiny"), slugs=("men_tshirts", "sarees"))


@pytest.fixture(scope="session")
def slow_repository(tmp_path_factory) -> Path:
    """A model slow enough (a few images/s on one core) that the HTTP work of offering 4x its capacity
    stays small next to it on a 2-core machine."""
    return build_repository(tmp_path_factory.mktemp("slow"), slugs=("men_tshirts",), size=224,
                            conv_channels=(256, 512, 768))


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def server(tiny_repository, logs) -> Iterator[Server]:
    """The shared server: tiny model, small upload limit, no API key."""
    running = start(tiny_repository, logs, {"CATALOG_SERVICE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
                                            "CATALOG_SERVICE_MAX_REQUEST_BYTES": str(4 * UPLOAD_LIMIT),
                                            "CATALOG_SERVICE_MAX_BATCH_ITEMS": "8"})
    yield running
    assert stop(running) == 0, running.output()


@pytest.fixture(scope="session")
def keyed_server(tiny_repository, logs) -> Iterator[Server]:
    running = start(tiny_repository, logs, {"CATALOG_SERVICE_API_KEY": API_KEY,
                                            "CATALOG_SERVICE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)})
    yield running
    assert stop(running) == 0, running.output()
