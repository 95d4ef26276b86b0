"""deploy/kubernetes: every kustomization renders and validates offline against the Kubernetes API schemas
(CRDs against minimal schemas of their documented fields), and what the manifests say about the service
matches the service itself: setting names and values, port, routes, drain times and metric names are read
from ``service.settings``, the app's routes and ``service.metrics``, never copied here."""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.metrics import ServiceMetrics
from service.settings import ENV_PREFIX, Settings
from tests import kubernetes_manifests as km
from tests.helpers import ROOT
from tests.service.fakes import FakePredictor

SERVICE_FOLDERS = ("base", "overlays/cpu", "overlays/gpu")
"""Kustomizations that deploy the service as a Deployment; ``kserve`` deploys it as an InferenceService."""
ALL_SERVICE_FOLDERS = (*SERVICE_FOLDERS, "kserve")
DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[TestClient]:
    """The real app (a fake predictor behind it), started: a probe path is right if the app answers it."""
    app = create_app(Settings(repository=tmp_path_factory.mktemp("repo")), FakePredictor(), ServiceMetrics())
    with TestClient(app) as started:
        yield started


def answers(client: TestClient, path: str) -> bool:
    response = client.get(path)
    return response.status_code == 200


@pytest.fixture(scope="module")
def metric_names() -> set[str]:
    """Every series name the service exports (a counter ``x`` is scraped as ``x_total``)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in ServiceMetrics().registry.collect()
            for suffix in suffixes[family.type]}


def service_pod(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, service container) of a kustomization that deploys the service."""
    docs = km.render(folder)
    if folder == "kserve":
        pod = km.find(docs, "InferenceService")["spec"]["predictor"]
    else:
        pod = km.find(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1, "one container: the service"
    return pod, pod["containers"][0]


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal settings, by field name (``valueFrom`` ones left out)."""
    return {e["name"][len(ENV_PREFIX):].lower(): e["value"] for e in container.get("env", [])
            if e["name"].startswith(ENV_PREFIX) and "value" in e}


def setting(container: dict[str, Any], name: str) -> Any:
    """The value the service will run with: the manifest's (parsed by Settings), else the default."""
    raw = env_values(container)
    if name not in raw:
        return DEFAULTS[name]
    if name == "repository":  # a path inside the pod, not on this machine
        return raw[name]
    return getattr(Settings.model_validate({**raw, "repository": ROOT}), name)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in named, f"port {port!r} is not a named port of the container ({sorted(named)})"
    return named[port]


def is_subset(labels: dict[str, str], of: dict[str, str]) -> bool:
    return labels.items() <= of.items()


# -- rendering and schemas -----------------------------------------------------------------------------------

def test_every_variant_has_a_kustomization():
    assert {"base", "overlays/cpu", "overlays/gpu", "kserve", "backfill"} <= set(km.KUSTOMIZATIONS)


@pytest.mark.parametrize("folder", km.KUSTOMIZATIONS)
@pytest.mark.parametrize("version", [km.OLDEST_KUBERNETES, "newest"])
def test_renders_and_validates_offline(folder, version):
    version = km.newest_kubernetes() if version == "newest" else version
    docs = km.render(folder)
    assert docs, f"{folder} renders nothing"
    for doc in docs:
        crd = km.CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd is None:
            km.validate_core(doc, version)  # SchemaNotFoundError for a kind no schema knows
            continue
        jsonschema.validate(doc, crd)
        for schema_file, part in km.embedded_pod_parts(doc):
            km.validate_core_part(part, schema_file, version)


def test_a_typo_fails_validation():
    # The validation is strict: a misspelt field is an error, not ignored (as the API server would).
    deployment = km.find(km.render("base"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(Exception, match="readinesProbe"):
        km.validate_core(deployment, km.newest_kubernetes())
    job = km.find(km.render("backfill"), "RayJob")
    job["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinish"):
        jsonschema.validate(job, km.CRD_SCHEMAS[("ray.io/v1", "RayJob")])


# -- the service's settings, port, routes and drain ---------------------------------------------------------

@pytest.mark.parametrize("folder", ALL_SERVICE_FOLDERS)
def test_environment_names_real_settings_with_valid_values(folder, tmp_path, monkeypatch):
    pod, container = service_pod(folder)
    names = [e["name"] for e in container.get("env", []) if e["name"].startswith(ENV_PREFIX)]
    real = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert set(names) <= real, f"not settings: {sorted(set(names) - real)}"
    assert len(names) == len(set(names)), "a setting set twice"
    for name, value in env_values(container).items():
        monkeypatch.setenv(ENV_PREFIX + name.upper(), value)
    Settings(repository=tmp_path)  # the values validate (the repository is a path inside the pod)
    # No Kubernetes service-link variable can land in the settings' prefix.
    assert pod["enableServiceLinks"] is False


@pytest.mark.parametrize("folder", ALL_SERVICE_FOLDERS)
def test_port_command_and_probes_match_the_service(folder, client):
    _, container = service_pod(folder)
    port = setting(container, "port")
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert setting(container, "host") == "0.0.0.0"
    # Flags would win over the environment (python -m service --port ...), so there are none.
    assert container["command"] == ["python", "-m", "service"] and "args" not in container
    live, ready = "/v2/health/live", "/v2/health/ready"
    assert answers(client, live) and answers(client, ready) and not answers(client, "/v2/health/nope")
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {k: p["path"] for k, p in probes.items()} == {
        "startupProbe": live, "livenessProbe": live, "readinessProbe": ready}
    assert {port_number(container, p["port"]) for p in probes.values()} == {port}


@pytest.mark.parametrize("folder", ALL_SERVICE_FOLDERS)
def test_grace_period_covers_prestop_shutdown_delay_and_drain(folder):
    pod, container = service_pod(folder)
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    delay, drain = setting(container, "shutdown_delay_s"), setting(container, "drain_timeout_s")
    assert pod["terminationGracePeriodSeconds"] >= float(sleep[1]) + delay + drain
    # README, Guarantees: the drain must outlast a request's deadline, or admitted work is cut off.
    assert drain > setting(container, "request_timeout_s")


@pytest.mark.parametrize("folder", ALL_SERVICE_FOLDERS)
def test_startup_probe_waits_for_model_warm_up(folder):
    _, container = service_pod(folder)
    startup = container["startupProbe"]
    budget_s = startup["periodSeconds"] * startup["failureThreshold"]
    gpu = "nvidia.com/gpu" in container["resources"]["limits"]
    assert budget_s >= (300 if gpu else 120), "TensorRT engine builds need minutes; CPU loads need seconds"
    assert setting(container, "warmup") is True


@pytest.mark.parametrize("folder", ALL_SERVICE_FOLDERS)
def test_cpu_limit_is_the_thread_budget(folder):
    _, container = service_pod(folder)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests == limits, "Guaranteed QoS; the CPU limit is the cgroup quota the pools are sized by"
    cores = int(limits["cpu"])
    assert setting(container, "preprocess_threads") in (0, cores)
    assert setting(container, "session_threads") <= cores


@pytest.mark.parametrize("folder", ALL_SERVICE_FOLDERS)
def test_runs_locked_down_with_a_read_only_model_repository(folder):
    pod, container = service_pod(folder)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "uploads spool to /tmp; the root filesystem is read-only"
    repository = str(setting(container, "repository"))
    if folder == "kserve":  # KServe's storage initializer fills /mnt/models from STORAGE_URI
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert repository == "/mnt/models" and env["STORAGE_URI"]
    else:
        assert mounts[repository]["readOnly"] is True


# -- the objects around the pods ----------------------------------------------------------------------------

@pytest.mark.parametrize("folder", SERVICE_FOLDERS)
def test_service_monitor_policy_and_budget_select_the_pods(folder, client):
    docs = km.render(folder)
    deployment = km.find(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    service = km.find(docs, "Service")
    assert is_subset(service["spec"]["selector"], pod_labels)
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for p in service_ports.values():
        assert port_number(container, p["targetPort"]) == setting(container, "port")
    monitor = km.find(docs, "ServiceMonitor")
    assert is_subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        scraped = client.get(endpoint["path"])
        assert scraped.status_code == 200 and "catalog_admitted_images" in scraped.text
    policy = km.find(docs, "NetworkPolicy")
    assert is_subset(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert {port_number(container, p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]} \
        == {setting(container, "port")}
    budget = km.find(docs, "PodDisruptionBudget")
    assert is_subset(budget["spec"]["selector"]["matchLabels"], pod_labels) and budget["spec"]["maxUnavailable"] == 1
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}


@pytest.mark.parametrize("folder", SERVICE_FOLDERS)
def test_autoscaler_uses_real_metrics_and_scales_down_without_cutting_drains(folder, metric_names):
    docs = km.render(folder)
    hpa, deployment = km.find(docs, "HorizontalPodAutoscaler"), km.find(docs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    metrics = hpa["spec"]["metrics"]
    assert {m["type"] for m in metrics} == {"Pods", "Resource"}
    pods_metrics = {m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"}
    adapter = yaml.safe_load((km.KUBE / "autoscaling" / "prometheus-adapter-values.yaml").read_text())
    served = {}
    for rule in adapter["rules"]["custom"]:
        series = rule["seriesQuery"].split("{")[0]
        assert series in metric_names, f"the adapter reads {series}, which the service does not export"
        served[rule["name"]["as"] or series] = series
    assert pods_metrics <= set(served), "the HPA asks for a metric the adapter does not serve"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]  # PDB maxUnavailable 1 leaves one
    down = hpa["spec"]["behavior"]["scaleDown"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert down["stabilizationWindowSeconds"] >= 60
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": down["policies"][0]["periodSeconds"]}]
    assert down["policies"][0]["periodSeconds"] >= grace, "one pod at a time, each drained before the next"


def test_gpu_overlay_asks_for_a_gpu_node_and_image():
    gpu_pod, gpu = service_pod("overlays/gpu")
    cpu_pod, cpu = service_pod("overlays/cpu")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert gpu_pod["nodeSelector"] and "nodeSelector" not in cpu_pod
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu_pod["tolerations"])
    assert gpu["image"].endswith("-gpu") and not cpu["image"].endswith("-gpu")
    # Preprocessing is the GPU pod's bottleneck: fewer ONNX Runtime threads than cores, larger batches.
    assert setting(gpu, "session_threads") < int(gpu["resources"]["limits"]["cpu"])
    assert setting(gpu, "max_batch_size") > setting(cpu, "max_batch_size")


# -- the backfill -------------------------------------------------------------------------------------------

def test_rayjob_runs_the_backfill_cli_with_its_volumes_on_the_driver():
    job = km.find(km.render("backfill"), "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "backfill"]
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert {"--repository", "--input", "--out"} <= set(argv)
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in head["volumeMounts"]}
    assert mounts[options["--repository"]]["readOnly"] is True
    assert any(options["--out"].startswith(path + "/") and not m.get("readOnly") for path, m in mounts.items())
    images = {c["image"] for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert {image.rsplit(":", 1)[1] for image in images} == {cluster["rayVersion"]}


def test_rayjob_ray_version_is_the_backfill_extras():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    if "backfill" not in extras:
        pytest.skip("no backfill extra in pyproject.toml yet (it comes with the backfill branch)")
    pins = [d.split("==")[1] for d in extras["backfill"] if d.startswith("ray[") and "==" in d]
    job = km.find(km.render("backfill"), "RayJob")
    assert pins == [job["spec"]["rayClusterSpec"]["rayVersion"]]


# -- the renderer itself ------------------------------------------------------------------------------------

def test_a_missing_renderer_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(km, "renderer_command", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="make kube-renderer"):
        km.require_renderer.__wrapped__()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="make kube-renderer"):
        km.require_renderer.__wrapped__()
