"""``benchmarks/bench_peers.py`` and its peer servers (``benchmarks/peers/``): every server starts on a tiny
model and gives the service's answer for the same upload (the same pixels, hence the same confidences),
and the script prints its table (a smoke run at toy sizes: it checks the script, not the speed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import httpx
import pytest

from benchmarks.bench_service import make_jpegs
from benchmarks.onnx_factory import build_repository
from benchmarks.peers.servers import start_servers
from tests.helpers import ROOT

HAS_LITSERVE = importlib.util.find_spec("litserve") is not None
SLUG = "men_tshirts"


def answer(port: int, jpeg: bytes, *, multipart: bool) -> dict[str, tuple[str, float]]:
    url = f"http://127.0.0.1:{port}/predict"
    if multipart:
        response = httpx.post(url, data={"category": SLUG}, files={"image": ("x.jpg", jpeg, "image/jpeg")})
    else:
        response = httpx.post(url, params={"category": SLUG}, content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text[:500]
    attributes = response.json()["attributes"]
    return {name: (a.get("decoded_value", a["value"]), a["confidence"]) for name, a in attributes.items()}


def test_every_peer_answers_like_the_service(tmp_path):
    build_repository(tmp_path, conv_channels=(8,))
    jpeg = make_jpegs(1, (320, 400))[0]
    servers = start_servers(tmp_path, SLUG, threads=1, litserve=HAS_LITSERVE)
    try:
        expected = answer(servers["service"].port, jpeg, multipart=False)
        assert answer(servers["service"].port, jpeg, multipart=True) == expected
        got = {"fastapi": answer(servers["fastapi"].port, jpeg, multipart=False)}
        if HAS_LITSERVE:
            got |= {name: answer(servers[name].port, jpeg, multipart=True) for name in ("litserve", "litserve_batch")}
    finally:
        for server in servers.values():
            server.stop()
    for name, values in got.items():
        assert values.keys() == expected.keys(), name
        for attribute, (value, confidence) in values.items():
            assert value == expected[attribute][0], (name, attribute)
            assert confidence == pytest.approx(expected[attribute][1], abs=1e-6), (name, attribute)


@pytest.mark.skipif(not HAS_LITSERVE, reason="LitServe is not installed (the bench extra)")
def test_benchmark_prints_the_peers_table_and_the_search():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_peers.py", "--conv-channels", "8", "--rounds", "1", "--duration", "0.5",
         "--pairs", "2", "--search-seconds", "0.05", "--idle-seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| ONNX Runtime configuration |" in out and "Throughput winner:" in out
    for label in ("this service, bare body", "this service, multipart", "plain FastAPI + uvicorn",
                  "LitServe, batching on", "LitServe, batching off"):
        assert f"| {label}" in out, label
    assert "Goals: concurrency 1" in out
