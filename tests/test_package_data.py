"""``catalog/package_data.py``: the shipped files are found even where a folder named ``catalog`` in
the working directory would shadow the package, and a missing one is a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from catalog.package_data import PackageDataError, package_data


def test_a_catalog_folder_in_the_working_directory_does_not_hide_the_package_data(tmp_path):
    (tmp_path / "catalog").mkdir()  # e.g. a synthetic catalog written here
    probe = "from catalog.taxonomy import load_taxonomy; print(len(load_taxonomy().names))"
    # As installed by make (editable): the working directory comes first on sys.path.
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "5", done.stderr


def test_a_missing_file_names_itself_and_the_fix():
    assert package_data("taxonomy.json").is_file()
    with pytest.raises(PackageDataError, match=r"nope\.json is missing.*reinstall the package"):
        package_data("nope.json")
