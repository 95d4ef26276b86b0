"""What the monitoring tests share: the Grafana dashboard and Prometheus alert rules the repository ships,
the PromQL queries they hold, and :func:`require` for the Prometheus binaries."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from tests.helpers import ROOT

DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "catalog-service.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"


def require(*binaries: str) -> None:
    """Skip when a binary is missing, unless in CI, where that is a setup bug."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not on PATH: install Debian's prometheus package (see README, Operations)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}; .ci/run should have installed it")
    pytest.skip(message)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel, repeated panels included."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels if p["type"] != "row" for t in p.get("targets", [])]


def alert_queries() -> list[tuple[str, str]]:
    """(alert name, expr) for every alert rule."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(r["alert"], r["expr"]) for g in groups for r in g["rules"]]
