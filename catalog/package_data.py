"""The files shipped inside the package (the taxonomy, the real label table), found next to this module.

Found by this file's own location rather than ``importlib.resources.files("catalog")``: in an editable
install, a folder named ``catalog`` in the working directory (a synthetic catalog, say) becomes a
namespace package that ``resources`` would look in, and every file would seem missing.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


class PackageDataError(FileNotFoundError):
    """A data file the package ships is not where it was installed."""


def package_data(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_file():
        raise PackageDataError(f"{path} is missing: the catalog package's data files were not installed with it "
                               "(reinstall the package; package data is declared in pyproject.toml)")
    return path
