"""Domain errors, and the one place that maps every error the service raises to an HTTP answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batching import BatcherStoppedError, DeadlineExceededError, QueueFullError


class ServiceError(Exception):
    """An error with a stable machine-readable ``code``; its message is safe to show to clients."""

    code = "error"


class UnsupportedMediaError(ServiceError):
    code = "unsupported_media_type"


class PayloadTooLargeError(ServiceError):
    code = "payload_too_large"


class InvalidImageError(ServiceError):
    code = "invalid_image"


class UnknownModelError(ServiceError):
    code = "unknown_category"


class ModelNotFoundError(UnknownModelError):
    """An unknown model on an Open Inference Protocol route, where the protocol says 404."""

    code = "model_not_found"


class InvalidDeclaredError(ServiceError):
    code = "invalid_declared"


class InvalidRequestError(ServiceError):
    code = "invalid_request"


class ModelNotReadyError(ServiceError):
    code = "model_not_ready"


class RequestTimeoutError(ServiceError):
    """The client did not send its request in time."""

    code = "request_timeout"


class ShuttingDownError(ServiceError):
    code = "shutting_down"


class PreprocessBusyError(ServiceError):
    """Heavy uploads already hold the preprocessing memory budget; shed load, like a full queue."""

    code = "queue_full"


class UnauthorizedError(ServiceError):
    code = "unauthorized"


class InferenceError(ServiceError):
    """The model call failed for one batch; only that batch's requests fail (500), the service goes on."""

    code = "inference_failed"


class InferenceUnavailableError(ServiceError):
    """With ``SHARED_INFERENCE``: the inference process is gone (restarting) or did not answer; the batch was
    not run, so a retry may succeed (503)."""

    code = "inference_unavailable"


class ModelLoadError(ServiceError):
    """A model that cannot be served (bad manifest, checksum, session); stops start-up."""

    code = "model_load_failed"


_STATUS: dict[type[Exception], tuple[int, str]] = {
    UnsupportedMediaError: (415, UnsupportedMediaError.code),
    PayloadTooLargeError: (413, PayloadTooLargeError.code),
    InvalidImageError: (422, InvalidImageError.code),
    UnknownModelError: (422, UnknownModelError.code),
    ModelNotFoundError: (404, ModelNotFoundError.code),
    InvalidDeclaredError: (422, InvalidDeclaredError.code),
    InvalidRequestError: (422, InvalidRequestError.code),
    UnauthorizedError: (401, UnauthorizedError.code),
    ModelNotReadyError: (503, ModelNotReadyError.code),
    ShuttingDownError: (503, ShuttingDownError.code),
    RequestTimeoutError: (408, RequestTimeoutError.code),
    PreprocessBusyError: (503, PreprocessBusyError.code),
    BatcherStoppedError: (503, ShuttingDownError.code),
    QueueFullError: (503, "queue_full"),
    DeadlineExceededError: (504, "deadline_exceeded"),
    InferenceError: (500, InferenceError.code),
    InferenceUnavailableError: (503, InferenceUnavailableError.code),
}

# Codes for HTTP errors raised by the framework itself (unknown route, wrong method, unreadable body).
_FRAMEWORK_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@dataclass(frozen=True)
class HttpError:
    status: int
    code: str
    message: str
    headers: dict[str, str]

    def body(self) -> dict[str, str]:
        # "error" as a plain string keeps the Open Inference Protocol's error shape.
        return {"error": self.message, "code": self.code}


MAX_MESSAGE_CHARS = 1000


MAX_PROBLEMS_SHOWN = 5
"""A body with thousands of invalid elements gets a short answer: the first few problems and a count."""


def describe_problems(errors: Sequence[Mapping[str, Any]]) -> str:
    """Validation errors (pydantic's ``loc``/``msg``) as one line: the first few, then how many more."""
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:MAX_PROBLEMS_SHOWN])
    more = len(errors) - MAX_PROBLEMS_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def safe_text(message: str) -> str:
    """An error message as it may go into a response: at most :data:`MAX_MESSAGE_CHARS` (so an error
    never echoes a large input back) and always encodable (a lone surrogate from a JSON string is
    escaped, not a failed response)."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message) - MAX_MESSAGE_CHARS} more characters)"
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def to_http(error: Exception) -> HttpError:
    """Status, code, message and headers for ``error``; anything unknown is a 500 that hides details."""
    if isinstance(error, StarletteHTTPException):
        code = _FRAMEWORK_CODES.get(error.status_code, "http_error")
        return HttpError(error.status_code, code, safe_text(str(error.detail)), dict(error.headers or {}))
    for kind in type(error).__mro__:
        if kind in _STATUS:
            status, code = _STATUS[kind]
            headers: dict[str, str] = {}
            if isinstance(error, QueueFullError):
                headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
            elif status == 503:
                headers["Retry-After"] = "1"
            elif isinstance(error, UnauthorizedError):
                headers["WWW-Authenticate"] = "Bearer"
            return HttpError(status, code, safe_text(str(error)), headers)
    return HttpError(500, "internal_error", "internal error", {})


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for routes: the error statuses they may answer, all with the error body."""
    from service.schemas import ErrorBody  # schemas has no service imports; late to keep errors light

    described = {400: "unreadable request body", 401: "missing or wrong API key", 404: "unknown model",
                 413: "upload, pixels or batch over the limits", 415: "image format not accepted",
                 422: "invalid image, category, declared values or form fields",
                 408: "the request was not received in time",
                 500: "inference failed for this request's batch", 503: "queue full or shutting down",
                 504: "the image's batch did not start within the request deadline"}
    return {status: {"model": ErrorBody, "description": described.get(status, "error")} for status in statuses}
