"""The Open Inference Protocol (KServe v2) over HTTP/REST, so standard clients work.

Inference takes one ``BYTES`` input, :data:`IMAGE_FILES_INPUT`, whose elements are image files (base64
strings in JSON, raw files in the binary tensor extension that ``tritonclient`` uses), and answers with
two outputs per attribute: ``<attribute>`` (``BYTES``, the value, or "" where the model abstains at the
request's ``parameters.threshold``) and ``<attribute>_confidence`` (``FP32``); a model with an
out-of-distribution detector adds ``ood_score`` (``FP32``) and ``ood_flagged`` (``BOOL``) per image (a flagged
image abstains on every attribute unless ``parameters.ood`` is ``keep``); parameters are scalars, as the
protocol says. The files are preprocessed by the service, so this input is not the ONNX graph's
(a float pixel tensor, named in the model's manifest).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Request, Response

from service import __version__
from service.deps import State, check_api_key
from service.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    UnknownModelError,
    error_responses,
)
from service.json_body import max_elements
from service.pipeline import ServiceState, infer_upload
from service.postprocess import (
    attribute_results,
    out_of_distribution,
    parse_ood_action,
    parse_threshold,
    withheld,
)
from service.predict_request import API_KEY_HEADER
from service.predictor import ModelInfo, ReadyModel
from service.schemas import (
    AttributeResult,
    InferenceRequest,
    InferenceResponse,
    Liveness,
    ModelMetadata,
    OutOfDistribution,
    Readiness,
    RepositoryModel,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
)
from service.v2_wire import HEADER_LENGTH, encode_infer_response, parse_infer_body

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
IMAGE_FILES_INPUT = "image"
CONFIDENCE_SUFFIX = "_confidence"
OOD_SCORE_OUTPUT = "ood_score"
OOD_FLAGGED_OUTPUT = "ood_flagged"


@contextmanager
def unknown_model_is_404() -> Iterator[None]:
    """The protocol answers an unknown model with 404 (the service's own routes with 422)."""
    try:
        yield
    except UnknownModelError as error:
        raise ModelNotFoundError(str(error)) from None


def _info(state: ServiceState, name: str) -> ModelInfo:
    with unknown_model_is_404():
        return state.predictor.info(name)


def _ready_model(state: ServiceState, name: str) -> ReadyModel:
    with unknown_model_is_404():
        return state.predictor.ready_model(name)


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
        outputs=[tensor for a in info.category.attributes for tensor in (
            TensorMetadata(name=a.name, datatype="BYTES", shape=[-1],
                           parameters={"column": a.column, "values": list(a.values)}),
            TensorMetadata(name=a.name + CONFIDENCE_SUFFIX, datatype="FP32", shape=[-1]))]
        + ([TensorMetadata(name=OOD_SCORE_OUTPUT, datatype="FP32", shape=[-1],
                           parameters={"threshold": info.ood_threshold}),
            TensorMetadata(name=OOD_FLAGGED_OUTPUT, datatype="BOOL", shape=[-1])]
           if info.ood_threshold is not None else []),
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


@router.post("/repository/index", response_model=list[RepositoryModel])
async def repository_index(state: State) -> list[RepositoryModel]:
    """Every configured model and whether it serves (``tritonclient``'s ``get_model_repository_index``)."""
    return [RepositoryModel(name=m.name, version=str(m.version),
                            state="READY" if m.ready and not state.lifecycle.draining else "UNAVAILABLE",
                            reason=m.error or ("draining" if state.lifecycle.draining else ""))
            for m in state.predictor.models()]


def infer_openapi() -> dict[str, Any]:
    """The body the infer route reads itself (JSON, or JSON plus binary tensors), for the OpenAPI document."""
    schema = InferenceRequest.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return {**API_KEY_HEADER, "requestBody": {"required": True, "content": {
        "application/json": {"schema": inline(schema)},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}, "description": (
            f"the binary tensor extension: a JSON header of {HEADER_LENGTH} bytes, then the tensors")},
    }}}


@router.post("/models/{name}/infer", response_model=InferenceResponse, response_model_exclude_none=True,
             openapi_extra=infer_openapi(), responses=error_responses(400, 401, 404, 413, 415, 422, 500, 503, 504))
async def infer(request: Request, name: str) -> Response:
    """The API key is checked and the model looked up before the body is read; the body is parsed
    within limits, off the event loop (``service/v2_wire.py``)."""
    state: ServiceState = request.app.state.service
    check_api_key(state, request.headers.get("x-api-key"), request.headers.get("authorization"))
    state.lifecycle.check_accepting()
    model = _ready_model(state, name)
    limit = state.settings.max_batch_items
    body = await request.body()
    started = time.perf_counter()  # the deadline runs from here, as on /predict: the upload's time is the client's
    parsed = await asyncio.to_thread(parse_infer_body, body, request.headers.get(HEADER_LENGTH), limit,
                                     max_elements(limit))
    tensor = parsed.request.inputs[0]
    if tensor.name != IMAGE_FILES_INPUT:
        raise InvalidRequestError(f"input {tensor.name!r} is unknown; this model takes {IMAGE_FILES_INPUT!r}")
    wanted = requested_outputs(model.info, parsed.request)
    threshold = state.threshold(parse_threshold(parsed.request.parameters.get("threshold")))
    action = state.ood_action(parse_ood_action(parsed.request.parameters.get("ood")))
    # All images go to the batcher together; one bad image fails this request (the protocol has no
    # per-element errors) but never another request.
    done = await asyncio.gather(*(infer_upload(state, model, data, started) for data in parsed.files))
    oods = [out_of_distribution(inference.ood_score, model.info.ood_threshold) for inference in done]
    results = [attribute_results(inference.row, threshold, abstain_all=withheld(ood, action))
               for inference, ood in zip(done, oods, strict=True)]
    for result, ood in zip(results, oods, strict=True):
        state.metrics.count_answer(model.info.name, result, ood=ood)
    response = InferenceResponse(model_name=model.info.name, model_version=str(model.info.version),
                                 id=parsed.request.id, outputs=[output(name, results, oods) for name in wanted])
    content, headers = encode_infer_response(response, parsed.binary_outputs)
    return Response(content, headers=headers)


def output_names(info: ModelInfo) -> list[str]:
    """Per attribute, its value (BYTES, "" where abstaining) and its confidence (FP32); then the OOD score
    (FP32) and flag (BOOL) when the model has a detector."""
    names = [name for a in info.category.attributes for name in (a.name, a.name + CONFIDENCE_SUFFIX)]
    return [*names, OOD_SCORE_OUTPUT, OOD_FLAGGED_OUTPUT] if info.ood_threshold is not None else names


def requested_outputs(info: ModelInfo, request: InferenceRequest) -> list[str]:
    known = output_names(info)
    wanted = [o.name for o in request.outputs] if request.outputs else known
    unknown = [o for o in wanted if o not in known]
    if unknown:
        raise InvalidRequestError(f"unknown outputs {unknown}; outputs: {known}")
    return wanted


def output(name: str, results: list[dict[str, AttributeResult]],
           oods: list[OutOfDistribution | None]) -> ResponseOutput:
    if name == OOD_SCORE_OUTPUT:
        return ResponseOutput(name=name, shape=[len(oods)], datatype="FP32",
                              data=[ood.score if ood else float("nan") for ood in oods])
    if name == OOD_FLAGGED_OUTPUT:
        return ResponseOutput(name=name, shape=[len(oods)], datatype="BOOL",
                              data=[bool(ood and ood.flagged) for ood in oods])
    if name.endswith(CONFIDENCE_SUFFIX):
        attribute = name[:-len(CONFIDENCE_SUFFIX)]
        return ResponseOutput(name=name, shape=[len(results)], datatype="FP32",
                              data=[round(r[attribute].confidence, 6) for r in results])
    return ResponseOutput(name=name, shape=[len(results)], datatype="BYTES",
                          data=[r[name].value or "" for r in results])
