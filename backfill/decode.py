"""The read-and-decode stage (Ray tasks): each listed image is read and preprocessed exactly as the
service preprocesses an upload (``service.images.preprocess_upload``, with the service's limits). An image
that cannot be read or is refused fails its own row with the service's error code; the job goes on."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from backfill.read import ReadError, read_image
from catalog.preprocessing import PreprocessSpec
from service.errors import ServiceError
from service.images import ImageLimits, preprocess_upload
from service.preprocess_memory import PreprocessMemory
from service.settings import Settings

log = logging.getLogger("backfill.decode")
INTERNAL_ERROR = "internal_error"
"""The code of a row whose image raised something no check expected (the service would answer 500)."""

DECODED_SCHEMA = pa.schema([
    ("row", pa.int64()), ("shard", pa.int32()), ("id", pa.string()), ("slug", pa.string()),
    ("pixels", pa.large_binary()), ("error", pa.string()), ("error_detail", pa.string()),
    ("read_s", pa.float64()), ("decode_s", pa.float64()),
])
"""What the stage hands to inference: the float32 CHW tensor's bytes (null on error) and the time spent."""


def service_default(name: str) -> Any:
    """A service setting's default (not the environment's value: the backfill is not the service)."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class DecodeConfig:
    """Each model's preprocessing and the service's image limits (its defaults unless overridden)."""

    specs: dict[str, PreprocessSpec]
    max_bytes: int = field(default_factory=lambda: service_default("max_upload_bytes"))
    max_pixels: int = field(default_factory=lambda: service_default("max_image_pixels"))
    memory_bytes: int = field(default_factory=lambda: service_default("preprocess_memory_bytes"))

    def limits(self) -> ImageLimits:
        # Built in the worker: a budget holds a lock, which does not travel. One task decodes one image
        # at a time, so the budget refuses what one image alone may not use, as the service does.
        return ImageLimits(self.max_bytes, self.max_pixels, PreprocessMemory(self.memory_bytes))


def decode_one(uri: str, spec: PreprocessSpec, limits: ImageLimits) -> tuple[bytes | None, str | None, str | None,
                                                                            float, float]:
    """``(pixels, error code, error detail, read seconds, decode seconds)`` for one image."""
    started = time.perf_counter()
    read_s: float | None = None
    try:
        data = read_image(uri, limits.max_bytes)
        read_s = time.perf_counter() - started
        pixels = preprocess_upload(data, spec, limits)
        return pixels.tobytes(), None, None, read_s, time.perf_counter() - started - read_s
    except (ServiceError, ReadError) as error:
        code, detail = error.code, str(error)
    except Exception as error:  # a file no check foresaw: its row fails, the job does not
        log.exception("unexpected error decoding %s", uri)
        code, detail = INTERNAL_ERROR, f"{type(error).__name__}: {error}"
    elapsed = time.perf_counter() - started
    if read_s is None:  # failed while reading
        return None, code, detail, elapsed, 0.0
    return None, code, detail, read_s, elapsed - read_s


def decode_batch(batch: pa.Table, config: DecodeConfig) -> pa.Table:
    """The Ray Data task: listing rows in, decoded rows out (same order)."""
    limits = config.limits()
    columns: dict[str, list[object]] = {name: [] for name in ("pixels", "error", "error_detail", "read_s", "decode_s")}
    for uri, slug in zip(batch.column("image").to_pylist(), batch.column("slug").to_pylist(), strict=True):
        for name, value in zip(columns, decode_one(uri, config.specs[slug], limits), strict=True):
            columns[name].append(value)
    carried = {name: batch.column(name) for name in ("row", "shard", "id", "slug")}
    return pa.table({**carried, **columns}, schema=DECODED_SCHEMA)
