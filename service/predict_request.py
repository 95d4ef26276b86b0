"""Reading a ``/predict`` request by hand: the image as a multipart form file or as the bare request body,
and its fields from the form or the query string.

``/predict`` is the per-upload hot path, and FastAPI's declarative parameters cost more than the rest of
the request's Python work: with eleven declared fields, solving them took about a millisecond of the
event loop per request (``benchmarks/bench_service.py``, BENCHMARKS.md). So the route takes the raw
``Request``, this module reads it, and :data:`OPENAPI` documents what the signature no longer shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.errors import InvalidRequestError, UnsupportedMediaError
from service.middleware import MAX_FIELD_BYTES
from service.postprocess import OOD_ACTION_SCHEMA, THRESHOLD_SCHEMA, parse_ood_action, parse_threshold

BARE_TYPES = ("image/", "application/octet-stream")
"""Content types of a bare upload: the body is the image itself and the fields are query parameters."""
FIELDS = ("category", "declared", "threshold", "ood")


@dataclass(frozen=True)
class PredictRequest:
    data: bytes
    category: str
    declared: str | None
    threshold: float | None
    ood_action: str | None = None


def single(name: str, values: list[Any], source: str) -> Any:
    """The one value of a field, or None; given more than once with different values, a 422 (rather than
    silently keeping the last)."""
    if len(values) > 1 and any(value != values[0] for value in values[1:]):
        raise InvalidRequestError(f"{source} {name!r} is given {len(values)} times with different values; send it once")
    return values[0] if values else None


def merge_field(name: str, form: str | None, query: str | None) -> str | None:
    """A field may come from the form or the query string; given in both, the two must agree."""
    if form is not None and query is not None and form != query:
        raise InvalidRequestError(f"{name} is given twice, as {form!r} (form) and {query!r} (query); send it once")
    return form if form is not None else query


async def read_predict_request(request: Request) -> PredictRequest:
    """The image and fields of a ``/predict`` request, or a 415/422 error that says what to send."""
    content_type = request.headers.get("content-type", "").lower()
    query = request.query_params
    form_fields: dict[str, str | None] = dict.fromkeys(FIELDS)
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=len(FIELDS) + 1, max_part_size=MAX_FIELD_BYTES)
        try:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise InvalidRequestError("the form has no 'image' file; send the image as a file field named 'image'")
            data = await image.read()
        finally:
            await form.close()
        for name in FIELDS:
            value = single(name, form.getlist(name), "form field")
            if value is not None and not isinstance(value, str):
                raise InvalidRequestError(f"form field {name!r} must be text, not a file")
            form_fields[name] = value
    elif content_type.startswith(BARE_TYPES):
        data = await request.body()
    else:
        raise UnsupportedMediaError(
            f"Content-Type {content_type or 'missing'!r} is not accepted on /predict; send multipart/form-data "
            "with an 'image' file, or the image itself as the body with Content-Type image/jpeg (png, webp, ...)"
        )
    merged = {name: merge_field(name, form_fields[name], single(name, query.getlist(name), "query parameter"))
              for name in FIELDS}
    category = merged["category"]
    if not category:
        raise InvalidRequestError("category is required: a form field, or the 'category' query parameter")
    return PredictRequest(data=data, category=category, declared=merged["declared"],
                          threshold=parse_threshold(merged["threshold"]), ood_action=parse_ood_action(merged["ood"]))


_TEXT = {"type": "string"}
API_KEY_HEADER: dict[str, Any] = {"parameters": [
    {"name": "X-API-Key", "in": "header", "required": False, "schema": _TEXT,
     "description": "the API key, when the service has one (or Authorization: Bearer)"},
]}
"""For routes that check the key themselves, before any parameter is solved."""
_BINARY = {"type": "string", "format": "binary"}
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "category": {**_TEXT, "description": "category slug or display name, e.g. men_tshirts"},
    "declared": {**_TEXT, "description": 'what the supplier typed, JSON: {"sleeve_length": "long sleeves"}'},
    "threshold": THRESHOLD_SCHEMA,
    "ood": OOD_ACTION_SCHEMA,
}
OPENAPI: dict[str, Any] = {
    "parameters": [
        *({"name": name, "in": "query", "required": False, "schema": schema,
           "description": f"{schema['description']} (with a bare image body)"}
          for name, schema in _FIELD_SCHEMAS.items()),
        *API_KEY_HEADER["parameters"],
    ],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["image", "category"],
            "properties": {"image": {**_BINARY, "description": "JPEG, PNG, WebP, GIF, BMP or TIFF"}, **_FIELD_SCHEMAS},
        }},
        **{kind: {"schema": _BINARY} for kind in ("image/jpeg", "image/png", "image/webp", "application/octet-stream")},
    }},
}
"""The request ``/predict`` accepts, for the OpenAPI document."""
