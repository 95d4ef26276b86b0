"""Reading one image file, from a local path or any URI pyarrow's filesystems know (``s3://``, ``gs://``,
``file://``, ``hdfs://``), with the service's upload limit: a file larger than the limit is refused from
its listed size, and no read ever takes more than the limit plus one byte."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from service.errors import PayloadTooLargeError


class ReadError(Exception):
    """The file could not be read (missing, not a regular file, storage error); fails its own row."""

    code = "read_failed"


_LOCAL = pafs.LocalFileSystem()
_FILESYSTEMS: dict[str, tuple[pafs.FileSystem, str | None]] = {}
"""``scheme://netloc`` -> its filesystem and how a URI's path maps to the filesystem's path (the prefix
to put before it, None when that mapping could not be confirmed). Made once per worker process: an S3
filesystem resolves its bucket's region when created, far too slow to repeat per image."""


def locate(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``uri`` and the path on it."""
    if "://" not in uri:
        return _LOCAL, uri
    parts = urlsplit(uri)
    key = f"{parts.scheme}://{parts.netloc}"
    path = unquote(parts.path)
    known = _FILESYSTEMS.get(key)
    if known is None or known[1] is None:
        filesystem, located = pafs.FileSystem.from_uri(uri)
        if known is None:
            prefix = located[: len(located) - len(path)] if located.endswith(path) else None
            _FILESYSTEMS[key] = (filesystem, prefix)
        return filesystem, located
    return known[0], known[1] + path


def read_image(uri: str, max_bytes: int) -> bytes:
    """The file's bytes; raises :class:`ReadError` or the service's :class:`PayloadTooLargeError`."""
    try:
        filesystem, path = locate(uri)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ReadError(f"no such file: {uri}")
        if info.type != pafs.FileType.File:
            # A directory, FIFO or device: a FIFO would block the reader forever.
            raise ReadError(f"not a regular file: {uri}")
        if info.size is not None and info.size > max_bytes:
            raise PayloadTooLargeError(f"image is {info.size} bytes; the limit is {max_bytes}")
        with filesystem.open_input_stream(path) as stream:
            # One byte past the limit, so a file that grew since it was listed is still refused.
            return bytes(stream.read(max_bytes + 1))
    except (ReadError, PayloadTooLargeError):
        raise
    except Exception as error:  # pyarrow's OSError/ArrowInvalid for storage problems, bad URIs
        raise ReadError(f"cannot read {uri}: {error}") from None
