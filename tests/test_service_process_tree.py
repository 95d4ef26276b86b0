"""service.process_tree: the CPU and memory of a parent and its children, from a fake ``/proc``."""

from __future__ import annotations

import os
from pathlib import Path

from service.process_tree import ProcessTreeCollector, children

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def fake_process(proc: Path, pid: int, parent: int, cpu_ticks: tuple[int, int], pages: int) -> None:
    # Fields after the command name: state, ppid, ..., utime (12th), stime (13th), ..., rss (22nd).
    fields = ["S", str(parent)] + ["0"] * 9 + [str(cpu_ticks[0]), str(cpu_ticks[1])] + ["0"] * 8 + [str(pages)]
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(f"{pid} (python -m service) " + " ".join(fields) + "\n")


def samples(collector: ProcessTreeCollector) -> dict[str, float]:
    return {s.name: s.value for family in collector.collect() for s in family.samples}


def test_the_parent_and_its_children_are_summed_and_others_left_out(tmp_path):
    fake_process(tmp_path, 10, 1, (TICKS, 0), 100)  # the parent: 1 s
    fake_process(tmp_path, 11, 10, (2 * TICKS, TICKS), 1000)  # a worker: 3 s
    fake_process(tmp_path, 12, 10, (TICKS, TICKS), 2000)  # another: 2 s
    fake_process(tmp_path, 13, 1, (50 * TICKS, 0), 9999)  # not the service's
    (tmp_path / "self").mkdir()  # non-numeric entries are skipped
    assert sorted(children(10, tmp_path)) == [11, 12]
    assert samples(ProcessTreeCollector(10, tmp_path)) == {
        "process_cpu_seconds_total": 6.0, "process_resident_memory_bytes": 3100.0 * PAGE}


def test_a_process_gone_between_listing_and_reading_is_skipped(tmp_path):
    fake_process(tmp_path, 10, 1, (TICKS, 0), 1)
    (tmp_path / "11").mkdir()  # exited: no stat file left
    assert samples(ProcessTreeCollector(10, tmp_path))["process_cpu_seconds_total"] == 1.0


def test_the_real_proc_counts_this_process(tmp_path):
    found = samples(ProcessTreeCollector(os.getpid()))
    assert found["process_cpu_seconds_total"] > 0 and found["process_resident_memory_bytes"] > 0
    assert samples(ProcessTreeCollector(1, tmp_path / "absent")) == {}
