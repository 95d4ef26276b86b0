"""Writing into a model repository without ever leaving a half-written version behind.

A version is staged in a hidden temporary folder next to its final place and renamed into place
only once everything in it is written and verified; a failure removes the staging folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from catalog.manifest import list_versions


class RepositoryError(RuntimeError):
    """The repository cannot take this version (it exists already, or the path is not a folder)."""


def next_version(repository: str | Path, slug: str) -> int:
    versions = list_versions(repository, slug)
    return versions[-1] + 1 if versions else 1


@contextmanager
def staged_version(repository: str | Path, slug: str, version: int) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``repository/slug/version``."""
    root = Path(repository)
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"{root}: model repository path exists and is not a folder")
    final = root / slug / str(version)
    if final.exists():
        raise RepositoryError(
            f"{final} already exists; versions are immutable, pick another --version "
            f"(next free: {next_version(root, slug)})"
        )
    staging = root / slug / f".staging-{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        yield staging
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        # Leave no empty category folder behind either, when this export created it.
        category_dir = root / slug
        if category_dir.is_dir() and not any(category_dir.iterdir()):
            category_dir.rmdir()
        raise
