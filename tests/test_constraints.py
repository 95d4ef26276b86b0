"""The lock (``requirements/constraints.txt``): it pins every dependency the project names, and the
Makefile and both images install through it."""

from __future__ import annotations

import re
import tomllib

from tests.helpers import ROOT

LOCKED_EXTRAS = ("serve", "train", "export", "dev", "backfill", "bench")


def name_of(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]).lower()


def test_every_named_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {name_of(r) for r in project["dependencies"]}
    named |= {name_of(r) for extra in LOCKED_EXTRAS for r in project["optional-dependencies"][extra]}
    named.discard(project["name"])
    pinned = {name_of(line) for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#") and "==" in line}
    assert not named - pinned, f"not in requirements/constraints.txt: {sorted(named - pinned)}"


def test_the_makefile_and_the_images_install_through_the_lock():
    assert "-c $(CONSTRAINTS)" in (ROOT / "Makefile").read_text()
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        assert "-c requirements/constraints.txt" in (ROOT / dockerfile).read_text(), dockerfile


def test_the_lock_pins_versions_not_local_files():
    lines = (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
    assert not [line for line in lines if " @ " in line], "a direct reference only resolves on the machine that made it"
