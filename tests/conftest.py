"""Where test categories are decided: by folder, in this one file (test files carry no category
``pytestmark``).

- ``tests/integration/``: ``integration`` (starts a real server or runs a real ONNX model);
- ``tests/browser/``: ``browser`` and ``integration``;
- ``tests/reliability/``: ``reliability`` and ``integration``;
- the modules in :data:`SLOW`, wherever they live: also ``slow``;
- everything else under ``tests/``: no category (fast unit tests).

A hook in a folder's own conftest.py would see the whole session's items, not just that folder's, so
one table here is simpler than one hook per folder. ``gpu``-marked tests (a per-test marker) are
skipped, with the reason, where no CUDA device is available.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS: dict[str, tuple[str, ...]] = {
    "integration": ("integration",),
    "browser": ("browser", "integration"),
    "reliability": ("reliability", "integration"),
}
"""First folder under ``tests/`` -> the markers of every test in it."""
SLOW: frozenset[str] = frozenset({
    "integration/test_backbone_families.py",
    "integration/test_backfill.py",
    "integration/test_bench_peers.py",
    "integration/test_bench_service.py",
    "integration/test_load_locust.py",
    "integration/test_ops_prometheus.py",
    "integration/test_service_torch_backend.py",
    "integration/test_torchrun.py",
    "reliability/test_overload.py",
    "reliability/test_shutdown.py",
})
"""Modules (relative to ``tests/``) that take more than a few seconds: also marked ``slow``."""


def category_markers(relative: Path) -> list[str]:
    """The category markers of the tests in a module at ``tests/<relative>``."""
    markers = list(FOLDER_MARKERS.get(relative.parts[0], ())) if len(relative.parts) > 1 else []
    if relative.as_posix() in SLOW:
        markers.append("slow")
    return markers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = sorted(name for name in SLOW if not (TESTS / name).is_file())
    if missing:
        raise pytest.UsageError(f"tests/conftest.py lists SLOW modules that do not exist: {missing}")
    for item in items:
        try:
            relative = item.path.resolve().relative_to(TESTS)
        except ValueError:
            continue  # collected from outside tests/
        for name in category_markers(relative):
            item.add_marker(name)


@functools.cache
def no_cuda_reason() -> str | None:
    """Why a ``gpu`` test cannot run here, or None. Imports torch only when a gpu test is about to run."""
    if importlib.util.find_spec("torch") is None:
        return "needs a CUDA device: torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA device: torch.cuda.is_available() is False"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None and (reason := no_cuda_reason()):
        pytest.skip(reason)
