"""What the Kubernetes tests share: rendering deploy/kubernetes with kustomize, offline validation against
the Kubernetes API's JSON schemas (``kubernetes-validate`` ships them), and minimal schemas for the custom
resources it does not know (ServiceMonitor, InferenceService, RayJob), written from their CRDs'
documented fields."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from tests.helpers import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(KUBE)) for p in KUBE.rglob("kustomization.yaml"))
MIN_KUSTOMIZE = (5, 0)
"""The manifests use ``labels`` and ``patches`` (kustomize 4.1+); older renderers (Debian's kubectl 1.20
embeds kustomize 2.0.3) refuse or misread them."""
OLDEST_KUBERNETES = "1.29"
"""Validated against this version's schemas and the newest kubernetes-validate ships."""


def renderer_command() -> list[str] | None:
    """``kustomize build`` or ``kubectl kustomize``: the venv's kubectl first (the hash-pinned one
    ``make kube-renderer`` installs), then PATH."""
    venv_kubectl = os.path.join(os.path.dirname(sys.executable), "kubectl")
    if os.access(venv_kubectl, os.X_OK):
        return [venv_kubectl, "kustomize"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    return None


def kustomize_version(command: list[str]) -> tuple[int, int] | None:
    if command[1] == "build":
        out = subprocess.run([command[0], "version"], capture_output=True, text=True, timeout=30).stdout
    else:
        out = subprocess.run([command[0], "version", "--client"], capture_output=True, text=True, timeout=30).stdout
        out = "".join(line for line in out.splitlines() if "Kustomize" in line)
    match = re.search(r"v(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


@functools.cache
def require_renderer() -> list[str]:
    """The renderer, or a skip that says how to get one: a failure in CI (``CI=true``), where ``make test``
    must have installed it."""
    command = renderer_command()
    problem = None
    if command is None:
        problem = "neither kustomize nor kubectl is on PATH or in the venv: run `make kube-renderer`"
    elif (version := kustomize_version(command)) is None or version < MIN_KUSTOMIZE:
        problem = (f"{' '.join(command)} embeds kustomize {version}, older than {MIN_KUSTOMIZE}: remove it "
                   "from PATH or run `make .venv/.kubectl-installed`")
    if problem is None:
        assert command is not None
        return command
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {problem}")
    pytest.skip(problem)


@functools.cache
def _render(folder: str) -> str:
    command = require_renderer()
    done = subprocess.run([*command, str(KUBE / folder)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)} {folder} failed:\n{done.stderr}"
    return done.stdout


def render(folder: str) -> list[dict[str, Any]]:
    """Every object one kustomization renders (a fresh copy each call: tests may edit theirs)."""
    return [doc for doc in yaml.safe_load_all(_render(folder)) if doc]


def find(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


# -- the Kubernetes API's own schemas -------------------------------------------------------------------

def newest_kubernetes() -> str:
    return kubernetes_validate.utils.latest_version()


def validate_core(doc: dict[str, Any], version: str) -> None:
    """A built-in kind against the strict schema (unknown fields refused) of that Kubernetes version."""
    kubernetes_validate.validate(doc, version, strict=True)


@functools.cache
def _core_schemas(version: str) -> tuple[Traversable, Registry]:
    """The strict schema folder for a ``major.minor`` version, and a registry holding its definitions."""
    minor = kubernetes_validate.utils.major_minor(version)
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    found = sorted(p.name for p in root.iterdir() if p.name.startswith(f"v{minor}.") and p.name.endswith("-strict"))
    assert found, f"kubernetes-validate has no schemas for Kubernetes {minor}"
    folder = root / found[-1]
    definitions = json.loads((folder / "_definitions.json").read_text())
    return folder, Resource.from_contents(definitions) @ Registry()


def validate_core_part(fragment: dict[str, Any], schema_file: str, version: str) -> None:
    """An embedded part (a PodTemplateSpec in a RayJob, a PodSpec in an InferenceService) against its
    strict Kubernetes schema, e.g. ``podtemplatespec-v1.json``."""
    folder, registry = _core_schemas(version)
    schema = json.loads((folder / schema_file).read_text())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(fragment)


# -- the custom resources, from their CRDs' documented fields --------------------------------------------

DURATION = {"type": "string", "pattern": r"^(0|(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$"}
LABEL_SELECTOR = {"type": "object", "properties": {"matchLabels": {"type": "object"},
                                                    "matchExpressions": {"type": "array"}},
                  "additionalProperties": False}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _crd(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {}, "kind": {}, "metadata": {"type": "object", "required": ["name"]},
                           "spec": spec},
            "additionalProperties": False}


SERVICE_MONITOR = _crd({  # monitoring.coreos.com/v1 ServiceMonitor
    "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
    "properties": {
        "selector": LABEL_SELECTOR, "namespaceSelector": {"type": "object"}, "jobLabel": {"type": "string"},
        "targetLabels": {"type": "array"}, "podTargetLabels": {"type": "array"}, "sampleLimit": {"type": "integer"},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"port": {"type": "string"}, "targetPort": {}, "path": {"type": "string"},
                           "scheme": {"enum": ["http", "https"]}, "interval": DURATION, "scrapeTimeout": DURATION,
                           "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array"},
                           "metricRelabelings": {"type": "array"}, "params": {"type": "object"},
                           "tlsConfig": {"type": "object"}, "bearerTokenSecret": {"type": "object"}}}},
    },
})
INFERENCE_SERVICE_EXTENSION = {  # serving.kserve.io/v1beta1 ComponentExtensionSpec; the rest is a PodSpec
    "minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleTarget": {"type": "integer"}, "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "containerConcurrency": {"type": "integer"}, "timeout": {"type": "integer"},
    "canaryTrafficPercent": {"type": "integer"}, "labels": STRING_MAP, "annotations": STRING_MAP,
    "logger": {"type": "object"}, "batcher": {"type": "object"}, "deploymentStrategy": {"type": "object"},
}
INFERENCE_SERVICE = _crd({
    "type": "object", "required": ["predictor"], "additionalProperties": False,
    "properties": {"predictor": {"type": "object", "required": ["containers"],
                                 "properties": INFERENCE_SERVICE_EXTENSION},
                   "transformer": {"type": "object"}, "explainer": {"type": "object"}},
})
WORKER_GROUP = {  # ray.io/v1 WorkerGroupSpec
    "type": "object", "required": ["groupName", "template"], "additionalProperties": False,
    "properties": {"groupName": {"type": "string"}, "replicas": {"type": "integer", "minimum": 0},
                   "minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer", "minimum": 0},
                   "numOfHosts": {"type": "integer"}, "idleTimeoutSeconds": {"type": "integer"},
                   "rayStartParams": STRING_MAP, "template": {"type": "object"}, "suspend": {"type": "boolean"}},
}
RAY_JOB = _crd({
    "type": "object", "required": ["entrypoint", "rayClusterSpec"], "additionalProperties": False,
    "properties": {
        "entrypoint": {"type": "string"}, "runtimeEnvYAML": {"type": "string"}, "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "shutdownAfterJobFinishes": {"type": "boolean"}, "ttlSecondsAfterFinished": {"type": "integer"},
        "activeDeadlineSeconds": {"type": "integer"}, "backoffLimit": {"type": "integer"},
        "suspend": {"type": "boolean"}, "submitterPodTemplate": {"type": "object"},
        "rayClusterSpec": {
            "type": "object", "required": ["headGroupSpec"], "additionalProperties": False,
            "properties": {
                "rayVersion": {"type": "string"}, "enableInTreeAutoscaling": {"type": "boolean"},
                "autoscalerOptions": {"type": "object"},
                "headGroupSpec": {"type": "object", "required": ["template"], "additionalProperties": False,
                                  "properties": {"rayStartParams": STRING_MAP, "template": {"type": "object"},
                                                 "serviceType": {"type": "string"},
                                                 "enableIngress": {"type": "boolean"}}},
                "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
            },
        },
    },
})
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("serving.kserve.io/v1beta1", "InferenceService"): INFERENCE_SERVICE,
    ("ray.io/v1", "RayJob"): RAY_JOB,
}


def embedded_pod_parts(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(schema file, part) for the Kubernetes objects a custom resource embeds."""
    if doc["kind"] == "InferenceService":
        predictor = doc["spec"]["predictor"]
        yield "podspec-v1.json", {k: v for k, v in predictor.items() if k not in INFERENCE_SERVICE_EXTENSION}
    if doc["kind"] == "RayJob":
        cluster = doc["spec"]["rayClusterSpec"]
        yield "podtemplatespec-v1.json", cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield "podtemplatespec-v1.json", group["template"]
