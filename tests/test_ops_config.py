"""Static checks of what an operator deploys (no Docker engine here): docker-compose.yml, the Prometheus
config and alert rules (with ``promtool`` when installed), Grafana provisioning and the dashboard JSON, and
that the pieces point at each other (service name and port, data source uid, mounted paths).

That every metric a query names is really exported is checked against a live service in
``tests/integration/test_ops_prometheus.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.monitoring import DASHBOARD, dashboard_queries, require

OPS = ROOT / "ops"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def mounts(service: dict) -> dict[str, str]:
    """Bind mounts as {container path: host path}; named volumes left out."""
    out = {}
    for volume in service.get("volumes", []):
        spec = re.sub(r":(ro|rw)$", "", volume)
        source, target = spec.rsplit(":", 1)  # the source may hold a colon: ${MODEL_REPOSITORY:-./models/demo}
        if source.startswith((".", "/", "$")):
            out[target] = source
    return out


def test_compose_defines_the_stack_with_locust_behind_a_profile(compose):
    services = compose["services"]
    assert set(services) == {"service", "prometheus", "alertmanager", "grafana", "locust"}
    assert services["locust"]["profiles"] == ["load"]
    assert all("profiles" not in services[name] for name in ("service", "prometheus", "alertmanager", "grafana"))
    for name, service in services.items():
        assert "image" in service, f"{name} has no image"
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
    assert set(compose["volumes"]) == {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
                                       if not v.startswith((".", "/", "$"))}


def test_compose_bind_mounts_exist_and_the_service_reads_the_mounted_repository(compose):
    services = compose["services"]
    for name, service in services.items():
        for target, source in mounts(service).items():
            if source.startswith("$"):  # ${MODEL_REPOSITORY:-./models/demo}: the lead's model repository
                continue
            assert (ROOT / source).exists() or source.startswith("./build"), f"{name}: {source} -> {target}"
    service = services["service"]
    command = service["command"]
    assert command[:3] == ["python", "-m", "service"]
    assert command[command.index("--repository") + 1] in mounts(service)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    # SIGTERM drains for up to the drain timeout: compose must wait longer before it kills.
    grace_s = int(service["stop_grace_period"].rstrip("s"))
    assert grace_s > float(service["environment"]["CATALOG_SERVICE_DRAIN_TIMEOUT_S"])
    assert services["locust"]["depends_on"]["service"]["condition"] == "service_healthy"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "/v2/health/ready" in dockerfile  # what service_healthy waits on


def test_prometheus_scrapes_the_compose_service(compose):
    config = load_yaml(OPS / "prometheus" / "prometheus.yml")
    command = compose["services"]["service"]["command"]
    target = f"service:{command[command.index('--port') + 1]}"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["catalog-service"]["static_configs"][0]["targets"] == [target]
    assert jobs["catalog-service"].get("metrics_path", "/metrics") == "/metrics"
    mounted = mounts(compose["services"]["prometheus"])
    assert mounted["/etc/prometheus/prometheus.yml"] == "./ops/prometheus/prometheus.yml"
    for rule_file in config["rule_files"]:  # resolved next to the config inside the container
        assert f"/etc/prometheus/{rule_file}" in mounted


def test_promtool_accepts_the_config_and_the_alert_rules():
    require("promtool")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        check = subprocess.run(["promtool", *args], cwd=OPS / "prometheus", capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_provisions_the_data_source_and_dashboard_the_panels_use(compose, dashboard):
    mounted = mounts(compose["services"]["grafana"])
    assert mounted["/etc/grafana/provisioning"] == "./ops/grafana/provisioning"
    sources = load_yaml(OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [(s["type"], s["url"]) for s in sources] == [("prometheus", "http://prometheus:9090")]
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]
    providers = load_yaml(OPS / "grafana" / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    folder = providers[0]["options"]["path"]
    assert (ROOT / mounted[folder] / DASHBOARD.name).is_file()
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/{DASHBOARD.name}"
    uids = {s["uid"] for s in sources}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] in uids


def test_dashboard_has_the_panels_an_operator_needs(dashboard):
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    queries = dashboard_queries()
    exprs = " ".join(expr for _, expr in queries)

    def panel(pattern: str) -> dict:
        found = [p for p in panels if re.search(pattern, p["title"], re.IGNORECASE)]
        assert len(found) == 1, f"one panel titled like {pattern!r}, got {[p['title'] for p in found]}"
        return found[0]

    throughput = panel(r"images/s")
    target = [t for t in throughput["targets"] if t["expr"] == "vector(10)"]
    assert target, "the ~10 images/s target line"
    assert any(o["matcher"]["options"] == target[0]["legendFormat"]
               for o in throughput["fieldConfig"]["overrides"])  # drawn dashed, in its own colour
    latency = [t["expr"] for t in panel(r"latency p50").get("targets", [])]
    assert [re.match(r"histogram_quantile\(([\d.]+),", e).group(1) for e in latency] == ["0.5", "0.95", "0.99"]
    assert panel(r"batch-size distribution")["type"] == "heatmap"
    assert "catalog_queue_depth" in str(panel(r"queue depth")["targets"])
    assert "by (reason)" in str(panel(r"rejections by reason")["targets"])
    assert 'status=~"4..|5.."' in str(panel(r"errors")["targets"])
    assert "catalog_abstentions_total" in str(panel(r"abstention rate")["targets"])
    assert "catalog_conflicts_total" in str(panel(r"conflict rate")["targets"])
    assert "catalog_ood_flagged_total" in str(panel(r"out-of-distribution")["targets"])
    drift = panel(r"drift")
    assert drift["repeat"] == "attribute" and "sum by (value)" in drift["targets"][0]["expr"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"model", "attribute"}
    assert "catalog_model_info" in exprs and "catalog_model_ready" in exprs
    for _, expr in queries:  # every window follows Grafana's scrape-aware interval
        assert re.findall(r"\[([^\]]+)\]", expr) in ([], ["$__rate_interval"] * expr.count("["))


def test_prometheus_sends_its_alerts_to_the_compose_alertmanager(compose):
    targets = [t for a in load_yaml(OPS / "prometheus" / "prometheus.yml")["alerting"]["alertmanagers"]
               for c in a["static_configs"] for t in c["targets"]]
    alertmanager = compose["services"]["alertmanager"]
    assert targets == ["alertmanager:9093"] and "9093:9093" in alertmanager["ports"]
    assert mounts(alertmanager)["/etc/alertmanager/alertmanager.yml"] == "./ops/alertmanager/alertmanager.yml"
    config = load_yaml(OPS / "alertmanager" / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    severities = {r["labels"]["severity"] for g in load_yaml(OPS / "prometheus" / "alerts.yml")["groups"]
                  for r in g["rules"]}
    assert severities == {"page", "ticket"}  # the route and inhibition name both
    require("amtool")
    check = subprocess.run(["amtool", "check-config", str(OPS / "alertmanager" / "alertmanager.yml")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_has_no_default_admin_password_and_anonymous_access_is_opt_in(compose):
    environment = compose["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"
