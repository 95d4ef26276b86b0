"""CPU and memory of a process and its children, as Prometheus's standard ``process_*`` metrics: with
``WORKERS`` > 1 the service is a parent and its worker processes, and a dashboard's "service CPU" must count
them all, whichever worker answers the scrape. Linux only (``/proc``); elsewhere it reports nothing."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROC = Path("/proc")


def children(pid: int, proc: Path = PROC) -> list[int]:
    """Direct children of ``pid`` (from each process's parent field: ``/proc/PID/task/*/children`` needs a
    kernel option)."""
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = _stat(entry)
            if stat is not None and int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _stat(folder: Path) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None once it has exited."""
    try:
        return (folder / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


class ProcessTreeCollector(Collector):
    """``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` summed over ``root`` and its
    children (resident memory counts the pages they share once per process)."""

    def __init__(self, root: int, proc: Path = PROC) -> None:
        self._root = root
        self._proc = proc
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")

    def collect(self) -> Iterable[Metric]:
        if not self._proc.is_dir():
            return []
        cpu_s = rss = 0.0
        for pid in [self._root, *children(self._root, self._proc)]:
            stat = _stat(self._proc / str(pid))
            if stat is not None:
                cpu_s += (int(stat[11]) + int(stat[12])) / self._ticks
                rss += int(stat[21]) * self._page
        return [CounterMetricFamily("process_cpu_seconds_total", "User and system CPU time of the service's "
                                    "processes (the parent and every worker).", value=cpu_s),
                GaugeMetricFamily("process_resident_memory_bytes", "Resident memory of the service's processes, "
                                  "summed.", value=rss)]
