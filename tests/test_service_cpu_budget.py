"""service.cpu_budget: thread pools are sized by the container's cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``), not by the node's core count; cgroup files are faked in a tmp dir."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service import cpu_budget as budget
from service.metrics import ServiceMetrics
from service.onnx_predictor import OnnxPredictor
from service.settings import Settings
from tests.helpers import ROOT

NODE_CORES = 16


@pytest.fixture
def cgroup(tmp_path, monkeypatch) -> Path:
    """An empty cgroup mount standing in for /sys/fs/cgroup, on a 16-core node."""
    monkeypatch.setattr(budget, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(budget, "available_cpus", lambda: NODE_CORES)
    return tmp_path


def write_v1(root: Path, quota: str, period: str = "100000", name: str = "cpu,cpuacct") -> None:
    (root / name).mkdir()
    (root / name / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / name / "cpu.cfs_period_us").write_text(period + "\n")


@pytest.mark.parametrize(("cpu_max", "cores"), [
    ("200000 100000", 2),
    ("150000 100000", 2),  # 1.5 cores round up
    ("10000 100000", 1),  # a tenth of a core still gets one thread
    ("50000 50000", 1),  # the period is not always 100 ms
    ("6400000 100000", NODE_CORES),  # a quota above the node is capped by the cores there are
    ("max 100000", NODE_CORES),  # no limit
])
def test_cgroup_v2_quota(cgroup, cpu_max, cores):
    (cgroup / "cpu.max").write_text(cpu_max + "\n")
    assert budget.cpu_budget() == cores


@pytest.mark.parametrize(("quota", "period", "name", "cores"), [
    ("300000", "100000", "cpu,cpuacct", 3),
    ("250000", "100000", "cpu", 3),
    ("-1", "100000", "cpu", NODE_CORES),
])
def test_cgroup_v1_quota(cgroup, quota, period, name, cores):
    write_v1(cgroup, quota, period, name)
    assert budget.cpu_budget() == cores


def test_v2_wins_over_v1_files_left_beside_it(cgroup):
    (cgroup / "cpu.max").write_text("100000 100000\n")
    write_v1(cgroup, "400000")
    assert budget.cpu_budget() == 1


def test_no_cgroup_files_means_the_cores_available(cgroup):
    assert budget.cgroup_quota() is None
    assert budget.cpu_budget() == NODE_CORES


def test_an_unreadable_quota_is_said_and_ignored(cgroup, caplog):
    (cgroup / "cpu.max").write_text("lots 100000\n")
    with caplog.at_level(logging.WARNING, logger="service.cpu_budget"):
        assert budget.cpu_budget() == NODE_CORES
    assert "unreadable CPU quota" in caplog.text and "lots" in caplog.text


def test_cores_available_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(budget.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert budget.available_cpus() == 3


def test_settings_threads_follow_the_quota_unless_set(cgroup, tmp_path):
    (cgroup / "cpu.max").write_text("300000 100000\n")
    settings = Settings(repository=tmp_path)
    assert (settings.resolved_session_threads, settings.resolved_preprocess_threads) == (3, 3)
    (cgroup / "cpu.max").write_text("max 100000\n")
    assert (settings.resolved_session_threads, settings.resolved_preprocess_threads) == (8, NODE_CORES)
    pinned = Settings(repository=tmp_path, session_threads=2, preprocess_threads=5)
    assert (pinned.resolved_session_threads, pinned.resolved_preprocess_threads) == (2, 5)


def test_the_real_predictor_sizes_its_pools_by_the_quota(cgroup):
    # A 3-core pod on a 16-core node: the preprocessing pool and the ONNX Runtime sessions get 3 threads.
    (cgroup / "cpu.max").write_text("300000 100000\n")
    settings = Settings(repository=ROOT / "models" / "demo", categories=["men_tshirts"], warmup=False)
    predictor = OnnxPredictor(settings, ServiceMetrics())
    try:
        predictor.load()
        assert predictor._preprocess_pool._max_workers == 3
        sessions = predictor.sessions["men_tshirts"].every
        assert len(sessions) == 2  # shared and lone (service/session_layout.py)
        assert [s.get_session_options().intra_op_num_threads for s in sessions] == [1, 3]
        assert predictor.ready_model("men_tshirts").batcher.config.max_in_flight == 3
    finally:
        predictor._preprocess_pool.shutdown()


@pytest.mark.parametrize(("workers", "threads"), [(1, (8, NODE_CORES)), (2, (8, 8)), (3, (5, 5)), (4, (4, 4)),
                                                  (32, (1, 1))])
def test_workers_split_the_budget_rounding_down(cgroup, tmp_path, workers, threads):
    # 16 cores: N workers' pools together never ask for more than the 16 (at least one thread each).
    settings = Settings(repository=tmp_path, workers=workers)
    assert (settings.resolved_session_threads, settings.resolved_preprocess_threads) == threads


def test_pinned_threads_are_per_worker(cgroup, tmp_path):
    settings = Settings(repository=tmp_path, workers=4, session_threads=2, preprocess_threads=6)
    assert (settings.resolved_session_threads, settings.resolved_preprocess_threads) == (2, 6)
