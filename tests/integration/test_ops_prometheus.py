"""The monitoring stack against the real service: ``python -m service`` (uvicorn) on a free loopback port over
the tiny ONNX repository, and Debian's ``prometheus``/``promtool`` scraping it every second.

Checks that ``promtool check metrics`` accepts ``/metrics``; that every metric the Grafana dashboard and the
alert rules name is one the live service exports; that Prometheus scrapes it and a PromQL images/s query
has a value after a burst; and that every dashboard query runs in that Prometheus without error.

Needs ``prometheus`` and ``promtool`` on PATH (``apt-get install prometheus``; ``.ci/run`` installs them).
Without them the Prometheus tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
import yaml

from benchmarks.onnx_factory import build_repository
from tests.live_server import Server, free_port, running
from tests.monitoring import ALERTS, alert_queries, dashboard_queries, require
from tests.service.fakes import image_bytes

SERVICE_ENV = {"CATALOG_SERVICE_PREPROCESS_THREADS": "2", "CATALOG_SERVICE_MAX_QUEUE_DELAY_S": "0.01"}
# Grafana variables, as the test Prometheus (1 s scrapes) should see them.
SUBSTITUTIONS = {"$__rate_interval": "15s", "$model": ".*", "$attribute": ".*"}


def wait_for(check, timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.TransportError, OSError) as error:
            last_error = error
        time.sleep(interval_s)
    raise AssertionError(f"{what} not within {timeout_s} s (last error: {last_error})")


def post_image(url: str, category: str = "men_tshirts", i: int = 0, declared: str | None = None) -> httpx.Response:
    data = {"category": category, **({"declared": declared} if declared else {})}
    return httpx.post(f"{url}/predict", files={"image": (f"{i}.jpg", image_bytes(color=(i * 37 % 255, 90, 140)))},
                      data=data, timeout=30)


def exercise(url: str, n: int = 24) -> None:
    """A burst touching every metric family: uploads with declared values (conflicts, abstentions at the
    default threshold), a /batch, a v2 infer and a rejected upload."""
    declared = json.dumps({"sleeve_length": "short sleeves", "neck": "round"})
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(
            lambda i: post_image(url, ("men_tshirts", "sarees")[i % 2], i, declared if i % 2 == 0 else None), range(n)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    files = [("images", (f"b{i}.jpg", image_bytes(color=(20 * i, 40, 60)))) for i in range(4)]
    batch = httpx.post(f"{url}/batch", files=files, data={"categories": ["men_tshirts"]}, timeout=30)
    assert batch.status_code == 200, batch.text
    assert httpx.post(f"{url}/predict", files={"image": ("x.jpg", b"not an image")},
                      data={"category": "men_tshirts"}, timeout=30).status_code == 422


# --- PromQL: which metric names a query reads ---------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = match.group()
        if text[match.end():].lstrip().startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function call or an operator keyword
        names.add(name)
    return names


def test_metric_names_parser_reads_selectors_not_functions():
    expr = ('histogram_quantile(0.95, sum by (le, route) '
            '(rate(catalog_x_bucket{route=~"/a|/b{name}"}[$__rate_interval])))'
            ' / on (model) group_left sum(up{job="j"}) + vector(10)')
    assert metric_names(expr) == {"catalog_x_bucket", "up"}


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# --- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Server]:
    repository = build_repository(tmp_path_factory.mktemp("repo"), slugs=("men_tshirts", "sarees"), ood_threshold=1.0)
    with running(repository, tmp_path_factory.mktemp("logs"), SERVICE_ENV) as server:
        exercise(server.url)
        yield server


@dataclass
class Prometheus:
    process: subprocess.Popen[str]
    url: str

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr!r}: {body}"
        return body["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory) -> Iterator[Prometheus]:
    require("prometheus", "promtool")
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "catalog-service", "static_configs": [
            {"targets": [f"127.0.0.1:{service.port}"]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    running = Prometheus(process, f"http://127.0.0.1:{port}")
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited with {process.returncode}: {process.stdout.read()}")
            return httpx.get(f"{running.url}/-/ready", timeout=1).status_code == 200

        wait_for(ready, 30, "prometheus readiness")
        # Only counters seen before a burst show its rate: wait for the first successful scrape.
        wait_for(lambda: [r for r in running.query('up{job="catalog-service"}') if r["value"][1] == "1"],
                 30, "a successful scrape")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- tests ---------------------------------------------------------------------------------------------

def exported_names(metrics_text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


SHARED_INFERENCE_ONLY = ("catalog_inference_batch_size", "catalog_inference_duration_seconds")


def test_every_metric_the_dashboard_and_alerts_name_is_exported_by_the_live_service(service):
    exported = exported_names(httpx.get(f"{service.url}/metrics", timeout=5).text)
    queried = {name: title for title, expr in dashboard_queries() + alert_queries() for name in metric_names(expr)}
    # The inference process's histograms exist only with SHARED_INFERENCE (this service is one process):
    # tests/integration/test_service_shared_inference.py checks that such a service exports them.
    missing = {name: title for name, title in queried.items()
               if name not in exported and name != "up" and not name.startswith(SHARED_INFERENCE_ONLY)}
    assert not missing, f"queried but not exported (name: panel or alert): {missing}; exported: {sorted(exported)}"
    # The dashboard covers every family the service declares (service/metrics.py); process_*, python_*
    # are the standard collectors', with one panel of their own.
    assert not any(n.endswith("_created") for n in exported), "no _created series"
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= exported
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported if n.startswith("catalog_")}
    unused = families - {re.sub(r"_(bucket|sum|count)$", "", n) for n in queried}
    assert not unused, f"exported but on no panel: {unused}"


def test_promtool_accepts_the_live_metrics(service):
    require("promtool")
    text = httpx.get(f"{service.url}/metrics", timeout=5).text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_the_service_and_reports_images_per_second(service, prometheus):
    # A fresh burst while Prometheus scrapes every second, so the rate window sees the counter grow.
    with ThreadPoolExecutor(4) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda i: post_image(service.url, i=i), range(40)))
    query = "sum(rate(catalog_images_processed_total[15s]))"
    result = wait_for(lambda: [r for r in prometheus.query(query) if float(r["value"][1]) > 0], 30,
                      f"a positive {query}")
    assert float(result[0]["value"][1]) > 0
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} == {name for name, _ in alert_queries()}
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules


def test_every_dashboard_query_runs_and_the_core_panels_have_data(service, prometheus):
    exercise(service.url, 12)
    # Wait until a rate window holds the burst, so ratio panels have both sides.
    wait_for(lambda: prometheus.query("sum(rate(catalog_predictions_total[15s])) > 0"), 30, "prediction rates")
    empty = []
    for title, expr in dashboard_queries():
        if not prometheus.query(substitute(expr)):
            empty.append(title)
    # Rejections, errors and conflicts depend on what happened in the window; the rest must show data.
    must_have_data = {"Images/s (target ~10 images/s)", "/predict latency p50 / p95 / p99",
                      "p95 by stage: decode, queue wait, batch compute", "Batch-size distribution", "Mean batch size",
                      "Queue depth", "Predicted values of $attribute ($model) — drift",
                      "Abstention rate by attribute", "Loaded models", "Ready"}
    assert not must_have_data & set(empty), f"empty panels: {sorted(must_have_data & set(empty))}"
