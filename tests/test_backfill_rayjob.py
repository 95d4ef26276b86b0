"""``deploy/kubernetes/backfill/rayjob.yaml``: the KubeRay RayJob runs this project's CLI with arguments
its parser accepts (resumable, so KubeRay's retries continue), on the Ray version the extra pins. (Its
rendering, schema and image tag are checked with the other manifests in tests/test_kubernetes.py.)"""

from __future__ import annotations

import re
import shlex

import yaml

from backfill.__main__ import parser
from tests.helpers import ROOT


def test_the_rayjob_manifest_runs_the_backfill_cli_resumably_on_the_pinned_ray():
    manifest = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "backfill" / "rayjob.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    command = shlex.split(manifest["spec"]["entrypoint"])
    assert command[:3] == ["python", "-m", "backfill"]
    args = parser().parse_args(command[3:])
    assert args.resume and str(args.input).startswith("s3:/")
    assert manifest["spec"]["backoffLimit"] >= 1
    pinned = re.search(r'"ray\[data\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None
    assert manifest["spec"]["rayClusterSpec"]["rayVersion"] == pinned.group(1)
