"""``service/session_layout.py``: with the thread count unset, a CPU model runs batches under load on one
thread each, as many at once as the budget has cores, and keeps a whole-budget session for lone batches;
a set thread count keeps the earlier one-session layout."""

from __future__ import annotations

import pytest

import service.cpu_budget as budget
from service.session_layout import CPU_PROVIDER, SessionLayout, batches_in_flight, session_layout
from service.settings import Settings


@pytest.fixture
def cores(monkeypatch):
    """Set the host's cores (no cgroup quota)."""
    monkeypatch.setattr(budget, "cgroup_quota", lambda root=None: None)

    def use(count: int) -> None:
        monkeypatch.setattr(budget, "available_cpus", lambda: count)

    return use


def layout(tmp_path, provider: str = CPU_PROVIDER, **settings) -> SessionLayout:
    return session_layout(Settings(repository=tmp_path, **settings), provider)


@pytest.mark.parametrize(("count", "expected"), [
    (2, SessionLayout(1, 2, 2, True)),
    (4, SessionLayout(1, 4, 4, True)),
    (64, SessionLayout(1, 8, 8, True)),  # the budget stops at 8 threads
    (1, SessionLayout(1, 1, None, False)),  # one core: nothing to split, nothing to spin
])
def test_unset_threads_give_one_thread_per_batch_and_a_whole_budget_lone_session(tmp_path, cores, count, expected):
    cores(count)
    assert layout(tmp_path) == expected


def test_the_lone_session_sleeps_when_spinning_is_off_but_keeps_the_budget(tmp_path, cores):
    cores(4)
    assert layout(tmp_path, spin_when_idle=False) == SessionLayout(1, 4, 4, False)


def test_workers_share_the_cores_before_the_layout_splits_them(tmp_path, cores):
    cores(4)
    assert layout(tmp_path, workers=2) == SessionLayout(1, 2, 2, True)
    assert layout(tmp_path, workers=4) == SessionLayout(1, 1, None, False)


@pytest.mark.parametrize(("settings", "expected"), [
    ({"session_threads": 2}, SessionLayout(2, 1, 2, True)),
    ({"session_threads": 2, "spin_when_idle": False}, SessionLayout(2, 1, None, False)),
    ({"session_threads": 1}, SessionLayout(1, 1, None, False)),
    ({"session_threads": 3, "max_batches_in_flight": 2}, SessionLayout(3, 2, 3, True)),
])
def test_set_threads_keep_one_session_layout(tmp_path, cores, settings, expected):
    cores(4)
    assert layout(tmp_path, **settings) == expected


def test_a_set_batch_count_overrides_the_cores(tmp_path, cores):
    cores(4)
    assert layout(tmp_path, max_batches_in_flight=3) == SessionLayout(1, 3, 4, True)


def test_device_providers_get_one_session_of_the_budget_and_one_batch_unless_set(tmp_path, cores):
    cores(4)
    assert layout(tmp_path, "CUDAExecutionProvider") == SessionLayout(4, 1, None, False)
    assert batches_in_flight(Settings(repository=tmp_path, max_batches_in_flight=2), "torch-cuda") == 2
    with pytest.raises(ValueError, match="spins CPU threads, and the model runs on CUDAExecutionProvider"):
        layout(tmp_path, "CUDAExecutionProvider", spin_when_idle=True)


def test_spinning_on_one_thread_is_refused_naming_the_settings(tmp_path, cores):
    cores(1)
    with pytest.raises(ValueError, match=r"needs at least 2 session threads.*resolves to 1.*SESSION_THREADS"):
        layout(tmp_path, spin_when_idle=True)


@pytest.mark.parametrize(("count", "in_flight", "expected"), [
    (4, 1, SessionLayout(4, 1, 4, True)),  # the old default pinned: one batch at a time on every core
    (8, 2, SessionLayout(4, 2, 8, True)),
    (4, 8, SessionLayout(1, 8, 4, True)),  # more batches than cores: one thread each
])
def test_a_set_batch_count_splits_the_budget_so_load_still_reaches_every_core(tmp_path, cores, count, in_flight,
                                                                             expected):
    # One thread per batch with fewer batches than cores would leave cores idle under load.
    cores(count)
    assert layout(tmp_path, max_batches_in_flight=in_flight) == expected


def test_batches_on_fewer_preprocessing_threads_than_cores_split_the_budget_among_as_many(tmp_path, cores):
    # Only as many batches run at once as there are preprocessing threads to run them: sized for more, each
    # would get one thread and the other cores would idle under load.
    cores(8)
    assert layout(tmp_path, preprocess_threads=2) == SessionLayout(4, 2, 8, True)
    apart = {"preprocess_threads": 2, "batches_on_preprocess_threads": False}
    assert layout(tmp_path, **apart) == layout(tmp_path, max_queue_delay_s=0.01, preprocess_threads=2) == \
        SessionLayout(1, 8, 8, True)
