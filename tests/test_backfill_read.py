"""``backfill/read.py``: bounded reads from local paths and URIs; anything unreadable is a ReadError."""

from __future__ import annotations

import os

import pytest

from backfill import read
from backfill.read import ReadError, locate, read_image
from service.errors import PayloadTooLargeError


def test_reads_local_paths_and_file_uris(tmp_path):
    path = tmp_path / "an image.jpg"
    path.write_bytes(b"\xff\xd8\xffdata")
    assert read_image(str(path), 100) == b"\xff\xd8\xffdata"
    assert read_image(f"file://{tmp_path}/an%20image.jpg", 100) == b"\xff\xd8\xffdata"


def test_a_filesystem_is_made_once_per_location(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "_FILESYSTEMS", {})
    first, path = locate(f"file://{tmp_path}/a.jpg")
    second, other = locate(f"file://{tmp_path}/b%20c.jpg")
    assert first is second and path == f"{tmp_path}/a.jpg" and other == f"{tmp_path}/b c.jpg"


def test_a_file_over_the_limit_is_refused_from_its_size_without_reading_it(tmp_path):
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as handle:
        handle.truncate(10 * 2**30)  # sparse: reading it would take 10 GiB
    with pytest.raises(PayloadTooLargeError, match=f"image is {10 * 2**30} bytes; the limit is 1000"):
        read_image(str(huge), 1000)


def test_missing_files_directories_and_fifos_fail_without_blocking(tmp_path):
    with pytest.raises(ReadError, match="no such file"):
        read_image(str(tmp_path / "absent.jpg"), 100)
    with pytest.raises(ReadError, match="not a regular file"):
        read_image(str(tmp_path), 100)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(ReadError, match="not a regular file"):
        read_image(str(fifo), 100)
    with pytest.raises(ReadError, match=r"cannot read nosuchscheme://x/y\.jpg"):
        read_image("nosuchscheme://x/y.jpg", 100)
