"""The service's own API: ``/predict``, ``/batch`` and the list of loaded models."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import WithJsonSchema

from service.batching import BatcherError
from service.deps import KeyFirstRoute, State, check_api_key
from service.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    ServiceError,
    error_responses,
    to_http,
)
from service.pipeline import ServiceState, predict_image
from service.postprocess import OOD_ACTION_SCHEMA, THRESHOLD_SCHEMA, parse_ood_action, parse_threshold
from service.predict_request import API_KEY_HEADER, OPENAPI, read_predict_request, single
from service.schemas import BatchItem, BatchResponse, ErrorBody, ModelList, ModelSummary, PredictResponse

router = APIRouter(tags=["predict"])
# /batch takes a form: its key (and the drain) is checked before FastAPI reads the body.
batch_router = APIRouter(tags=["predict"], route_class=KeyFirstRoute)
PREDICT_ERRORS = error_responses(400, 401, 413, 415, 422, 500, 503, 504)

# Text, parsed by the same function as /predict's and v2's threshold; documented as the number it must be.
Threshold = Annotated[str | None, WithJsonSchema(THRESHOLD_SCHEMA), Form()]


@router.post("/predict", response_model=PredictResponse, responses=PREDICT_ERRORS, openapi_extra=OPENAPI)
async def predict(request: Request) -> Response:
    """One image, as multipart form data (an ``image`` file plus the fields) or as the bare request body
    with ``Content-Type: image/...`` and the fields as query parameters (no multipart parsing: the
    cheapest way in for upload pipelines). Fields: ``category`` (required), ``declared``, ``threshold``."""
    state: ServiceState = request.app.state.service
    check_api_key(state, request.headers.get("x-api-key"), request.headers.get("authorization"))
    state.lifecycle.check_accepting()
    parsed = await read_predict_request(request)
    result = await predict_image(state, parsed.category, parsed.data, threshold=parsed.threshold,
                                 declared=parsed.declared, ood_action=parsed.ood_action)
    # Serialised once here; FastAPI would validate the finished model again on the way out.
    return Response(result.model_dump_json(), media_type="application/json")


@batch_router.post("/batch", response_model=BatchResponse, responses=PREDICT_ERRORS, openapi_extra=API_KEY_HEADER)
async def batch(
    request: Request,
    state: State,
    images: Annotated[list[UploadFile], File(description="the images, in order")],
    categories: Annotated[list[str], Form(description="one category for all images, or one per image")],
    ids: Annotated[list[str] | None, Form(description="optional client ids, one per image")] = None,
    declared: Annotated[list[str] | None, Form(description="optional declared JSON, one per image")] = None,
    threshold: Threshold = None,
    ood: Annotated[str | None, WithJsonSchema(OOD_ACTION_SCHEMA), Form()] = None,
) -> BatchResponse:
    n = len(images)
    if n > state.settings.max_batch_items:
        raise PayloadTooLargeError(f"{n} images in one batch; the limit is {state.settings.max_batch_items}")
    if len(categories) not in (1, n):
        raise InvalidRequestError(f"{len(categories)} categories for {n} images; send 1 or {n}")
    for name, values in (("ids", ids), ("declared", declared)):
        if values is not None and len(values) != n:
            raise InvalidRequestError(f"{len(values)} {name} for {n} images; send one per image")
    # ``threshold`` documents the field; FastAPI keeps only the last of repeated scalar fields, and the
    # parsed form (cached) shows them all.
    repeated = (await request.form()).getlist("threshold")
    requested_threshold = parse_threshold(single("threshold", repeated, "form field") if repeated else threshold)
    ood_action = parse_ood_action(ood)

    async def one(index: int) -> BatchItem:
        client_id = ids[index] if ids else None
        try:
            data = await images[index].read()
            result = await predict_image(
                state, categories[index if len(categories) > 1 else 0], data, threshold=requested_threshold,
                declared=declared[index] if declared else None, ood_action=ood_action,
            )
        except (ServiceError, BatcherError) as error:  # one bad item never fails the others
            http = to_http(error)
            state.metrics.rejections_total.labels(http.code).inc()
            return BatchItem(index=index, id=client_id, status=http.status,
                             error=ErrorBody(error=http.message, code=http.code))
        return BatchItem(index=index, id=client_id, status=200, result=result)

    # Concurrently, so the items meet in the same model batches.
    return BatchResponse(items=list(await asyncio.gather(*(one(i) for i in range(n)))))


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    return ModelList(models=[
        ModelSummary(name=m.name, category=m.category.name, version=m.version, versions=list(m.versions),
                     ready=m.ready and not state.lifecycle.draining, precision=m.precision, provider=m.provider,
                     error=m.error)
        for m in state.predictor.models()
    ])
