"""The installed commands (``[project.scripts]``): each resolves to a ``main`` that answers ``--help``,
and the README says which extra each needs."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import ROOT

SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_every_command_answers_help(command, capsys):
    module, function = SCRIPTS[command].split(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_readme_names_each_command_and_its_extra():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Commands"):readme.index("## Layout")]
    assert all(f"`{command}`" in table for command in SCRIPTS)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_help_answers_without_importing_torch(command):
    module, function = SCRIPTS[command].split(":")
    probe = (f"import importlib, sys\ntry:\n    importlib.import_module({module!r}).{function}(['--help'])\n"
             "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr
