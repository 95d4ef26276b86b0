"""How many CPU cores this process may really use: the container's cgroup CPU quota when one is set,
else the cores it may be scheduled on.

``os.cpu_count()`` reports the node's cores: a pod limited to 2 CPUs on a 64-core node would start 64
preprocessing threads and 8 ONNX Runtime threads per model, all throttled by the quota, which costs
latency for nothing. Read once per setting at start-up, so nothing here is cached.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("service.cpu_budget")

CGROUP_ROOT = Path("/sys/fs/cgroup")
"""Where the container's cgroup is mounted; a parameter of :func:`cpu_budget` so tests can fake it."""
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
"""cgroup v1 mounts the cpu controller under one of these names, depending on the distribution."""


def available_cpus() -> int:
    """Cores the scheduler may run this process on (CPU sets and ``taskset`` included), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def cgroup_quota(root: Path | None = None) -> float | None:
    """The CPU quota in cores (``1.5`` for ``150000 100000``), or None when there is none or no cgroup
    files: cgroup v2 ``cpu.max`` first, then v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``."""
    root = root or CGROUP_ROOT
    v2 = root / "cpu.max"
    if v2.is_file():
        return _parse(v2, *v2.read_text().split()[:2])
    for name in V1_CPU_DIRS:
        quota, period = root / name / "cpu.cfs_quota_us", root / name / "cpu.cfs_period_us"
        if quota.is_file() and period.is_file():
            return _parse(quota, quota.read_text().strip(), period.read_text().strip())
    return None


def _parse(path: Path, quota: str, period: str = "100000") -> float | None:
    if quota in ("max", "-1"):
        return None
    try:
        cores = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        # Not worth refusing to start over, but worth saying: the thread pools fall back to every core.
        log.warning("ignoring unreadable CPU quota in %s: %r / %r", path, quota, period)
        return None
    return cores if cores > 0 else None


def cpu_budget(root: Path | None = None) -> int:
    """Cores to size thread pools by: the quota rounded up (1.5 cores keep 2 threads busy between
    throttled periods), never more than the cores available, at least 1."""
    available = available_cpus()
    quota = cgroup_quota(root)
    if quota is None:
        return available
    return max(1, min(available, math.ceil(quota)))


def worker_share(budget: int, workers: int) -> int:
    """One worker process's share of ``budget`` cores when ``workers`` processes serve side by side: rounded
    down, so N workers' thread pools together never ask for more cores than the budget (at least 1)."""
    return max(1, budget // workers)
