"""The Open Inference Protocol's two wire formats for an infer request and its response: plain JSON,
and Triton's binary tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes, then
the tensors' raw bytes), which is how ``tritonclient`` sends ``BYTES`` tensors by default.

In JSON the image files are base64 strings (JSON cannot hold raw bytes); in binary they are the files
themselves, each element prefixed with its length as a 4-byte little-endian integer. No FastAPI here:
the route hands this module the raw body and sends back what it returns.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.errors import InvalidRequestError, PayloadTooLargeError, describe_problems
from service.json_body import parse_bounded
from service.schemas import InferenceRequest, InferenceResponse

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class InferRequestBody:
    request: InferenceRequest
    files: list[bytes]
    """The input tensor's elements: the image files, in order."""
    binary_outputs: frozenset[str]
    """Outputs the client asked to receive in the binary format."""


def parse_infer_body(body: bytes, header_length: str | None, max_items: int, max_elements: int) -> InferRequestBody:
    """An infer request in either format; 413/422 errors name what is wrong. Runs off the event loop."""
    header, binary = _split(body, header_length)
    try:
        request = InferenceRequest.model_validate(parse_bounded(header, max_elements))
    except ValidationError as error:
        raise InvalidRequestError(f"invalid infer request: {describe_problems(error.errors())}") from None
    tensor = request.inputs[0]
    if len(tensor.shape) != 1 or tensor.shape[0] < 0:
        raise InvalidRequestError(f"input shape {tensor.shape} must be [number of images]")
    if tensor.shape[0] > max_items:
        raise PayloadTooLargeError(f"{tensor.shape[0]} images; the limit is {max_items}")
    size = tensor.parameters.get("binary_data_size")
    if size is None:
        files = _base64_files(tensor.data or [])
    else:
        if binary is None or not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise InvalidRequestError(f"binary_data_size {size!r} does not match the {len(binary or b'')} bytes sent "
                                      f"after the {HEADER_LENGTH} header")
        files = _length_prefixed(binary, tensor.shape[0])
    if len(files) != tensor.shape[0]:
        raise InvalidRequestError(f"input shape {tensor.shape} does not match its {len(files)} elements")
    return InferRequestBody(request, files, _binary_outputs(request))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    if header_length is None:
        return body, None
    # ASCII digits only ("²".isdigit() is true) and short: int() refuses thousands of digits.
    if not (header_length.isascii() and header_length.isdigit() and len(header_length) <= 20) or (
            int(header_length) > len(body)):
        raise InvalidRequestError(f"{HEADER_LENGTH} {header_length[:20]!r} must be a byte count within the body "
                                  f"({len(body)} bytes)")
    return body[:int(header_length)], body[int(header_length):]


def _base64_files(elements: list[str]) -> list[bytes]:
    files = []
    for i, text in enumerate(elements):
        try:
            files.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"input element {i} is not valid base64 (in JSON, send each image file "
                                      "base64-encoded; raw files go in the binary tensor extension)") from None
    return files


def _length_prefixed(data: bytes, expected: int) -> list[bytes]:
    """The elements of a binary BYTES tensor; stops past ``expected`` (the declared shape, already
    bounded), so 32 MiB of zero-length elements cost nothing."""
    files: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(files) == expected:
            raise InvalidRequestError(f"binary input holds more than the {expected} elements its shape says")
        if offset + 4 > len(data):
            raise InvalidRequestError("binary input ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidRequestError(f"binary input element {len(files)} claims {length} bytes; "
                                      f"{len(data) - offset} remain")
        files.append(data[offset:offset + length])
        offset += length
    return files


def _binary_outputs(request: InferenceRequest) -> frozenset[str]:
    everything = request.parameters.get("binary_data_output") is True
    if request.outputs is None:
        return frozenset({"*"}) if everything else frozenset()
    return frozenset(o.name for o in request.outputs if everything or o.parameters.get("binary_data") is True)


def encode_infer_response(response: InferenceResponse, binary: frozenset[str]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: plain JSON, or the JSON header followed by the binary outputs."""
    chunks: list[bytes] = []
    outputs: list[dict[str, Any]] = []
    for output in response.outputs:
        entry = output.model_dump()
        if "*" in binary or output.name in binary:
            raw = _tensor_bytes(output.datatype, output.data)
            entry.pop("data")
            entry["parameters"] = {**entry["parameters"], "binary_data_size": len(raw)}
            chunks.append(raw)
        outputs.append(entry)
    header = json.dumps({**response.model_dump(exclude_none=True), "outputs": outputs}).encode()
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(chunks), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _tensor_bytes(datatype: str, data: list[Any]) -> bytes:
    if datatype == "FP32":
        return np.asarray(data, dtype="<f4").tobytes()
    if datatype == "BOOL":
        return np.asarray(data, dtype=np.bool_).tobytes()
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in data))
    raise ValueError(f"no binary encoding for {datatype}")
