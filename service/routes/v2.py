"""The Open Inference Protocol (KServe v2) over HTTP/REST, so standard clients work.

Inference takes one ``BYTES`` input, :data:`IMAGE_FILES_INPUT`, whose elements are base64-encoded image
files, and answers with one ``BYTES`` output per attribute (the value, or "" where the model abstains at
the request's ``parameters.threshold``); ``parameters.confidence`` of each output holds the
confidences. The files are preprocessed by the service, so this input is not the ONNX graph's (a float
pixel tensor, named in the model's manifest).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time

from fastapi import APIRouter, Response

from service import __version__
from service.deps import State
from service.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    UnknownModelError,
    error_responses,
)
from service.json_body import KeyFirstJsonRoute
from service.pipeline import ServiceState, infer_upload
from service.postprocess import attribute_results, parse_threshold
from service.predict_request import API_KEY_HEADER
from service.predictor import ModelInfo, ReadyModel
from service.schemas import (
    InferenceRequest,
    InferenceResponse,
    Liveness,
    ModelMetadata,
    Readiness,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
)

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
# Only the infer route takes a body; its class checks the key and parses within limits first.
infer_router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=KeyFirstJsonRoute)
IMAGE_FILES_INPUT = "image"


def _info(state: ServiceState, name: str) -> ModelInfo:
    try:
        return state.predictor.info(name)
    except UnknownModelError as error:
        raise ModelNotFoundError(str(error)) from None


def _ready_model(state: ServiceState, name: str) -> ReadyModel:
    try:
        return state.predictor.ready_model(name)
    except UnknownModelError as error:
        raise ModelNotFoundError(str(error)) from None


def decode_base64(elements: list[str]) -> list[bytes]:
    blobs = []
    for i, text in enumerate(elements):
        try:
            blobs.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"input element {i} is not valid base64") from None
    return blobs


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="catalog-attributes", version=__version__, extensions=[])


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness(live=True)


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(state: State, response: Response) -> Readiness:
    if not state.ready:
        response.status_code = 503
    return Readiness(ready=state.ready)


@router.get("/models/{name}", response_model=ModelMetadata, responses=error_responses(404, 422))
async def model_metadata(state: State, name: str) -> ModelMetadata:
    info = _info(state, name)
    return ModelMetadata(
        name=info.name, versions=[str(v) for v in info.versions or (info.version,)], platform="onnxruntime_onnx",
        inputs=[TensorMetadata(name=IMAGE_FILES_INPUT, datatype="BYTES", shape=[-1],
                               parameters={"content": "base64-encoded image file",
                                           "height": info.spec.height, "width": info.spec.width})],
        outputs=[TensorMetadata(name=a.name, datatype="BYTES", shape=[-1],
                                parameters={"column": a.column, "values": list(a.values)})
                 for a in info.category.attributes],
        parameters={"category": info.category.name, "version": info.version, "precision": info.precision,
                    "provider": info.provider, "ready": info.ready},
    )


@router.get("/models/{name}/ready", response_model=Readiness,
            responses={**error_responses(404, 422), 503: {"model": Readiness}})
async def model_ready(state: State, name: str, response: Response) -> Readiness:
    ok = _info(state, name).ready and not state.lifecycle.draining
    if not ok:
        response.status_code = 503
    return Readiness(ready=ok)


@infer_router.post("/models/{name}/infer", response_model=InferenceResponse, response_model_exclude_none=True,
                   openapi_extra=API_KEY_HEADER, responses=error_responses(400, 401, 404, 413, 415, 422, 500, 503, 504))
async def infer(state: State, name: str, request: InferenceRequest) -> InferenceResponse:
    started = time.perf_counter()
    state.lifecycle.check_accepting()
    model = _ready_model(state, name)
    info = model.info
    tensor = request.inputs[0]
    if tensor.name != IMAGE_FILES_INPUT:
        raise InvalidRequestError(f"input {tensor.name!r} is unknown; this model takes {IMAGE_FILES_INPUT!r}")
    if tensor.shape != [len(tensor.data)]:
        raise InvalidRequestError(f"input shape {tensor.shape} does not match its {len(tensor.data)} elements")
    if len(tensor.data) > state.settings.max_batch_items:
        raise PayloadTooLargeError(f"{len(tensor.data)} images; the limit is {state.settings.max_batch_items}")
    wanted = [o.name for o in request.outputs] if request.outputs else list(info.category.attribute_names)
    unknown = [o for o in wanted if o not in info.category.attribute_names]
    if unknown:
        raise InvalidRequestError(f"unknown outputs {unknown}; outputs: {list(info.category.attribute_names)}")
    threshold = state.threshold(parse_threshold(request.parameters.get("threshold")))
    blobs = await asyncio.to_thread(decode_base64, tensor.data)  # up to the body cap of work: off the loop
    # All images go to the batcher together; one bad image fails this request (the protocol has no
    # per-element errors) but never another request.
    done = await asyncio.gather(*(infer_upload(state, model, blob, started) for blob in blobs))
    results = [attribute_results(inference.row, threshold) for inference in done]
    for result in results:
        state.metrics.count_answer(info.name, result)
    outputs = [
        ResponseOutput(name=attr, shape=[len(results)], datatype="BYTES",
                       data=[r[attr].value or "" for r in results],
                       parameters={"confidence": [round(r[attr].confidence, 6) for r in results]})
        for attr in wanted
    ]
    return InferenceResponse(model_name=info.name, model_version=str(info.version), id=request.id, outputs=outputs)
