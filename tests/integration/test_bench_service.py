"""``benchmarks/bench_service.py`` runs end to end and prints every measure the service issue asks for
(a smoke run at toy sizes: it checks the script, not the speed)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_benchmark_prints_the_whole_table():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_service.py", "--conv-channels", "8", "--image-size", "320", "400",
         "--duration", "0.5", "--rounds", "1", "--pairs", "3", "--max-batch-size", "2", "--idle-seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("| measure |"):]
    measures = ("(a) in-process", "(b) service, bare JPEG", "(b') the same as multipart", "(b'') the same as /batch",
                "(c) service, batching off", "(d) median latency", "(e) service CPU while idle",
                "load generator's CPU", "CPU per image", "latency at concurrency 1", "latency at concurrency 4",
                "latency at concurrency 16")
    for measure in measures:
        assert f"| {measure}" in table, measure
    assert "(b)/(a) = " in table and "p99 goal <= 1.1 x 16" in table
