"""Response (and v2 request) bodies, named by role."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field


class Alternative(BaseModel):
    value: str
    confidence: float


class AttributeResult(BaseModel):
    value: str | None = Field(description="the decoded value, or null when the model abstains")
    confidence: float = Field(description="calibrated probability of the decoded value")
    abstained: bool
    decoded_value: str = Field(description="the best value even when abstaining")
    top_k: list[Alternative]


class Conflict(BaseModel):
    """A declared value the image confidently contradicts."""

    attribute: str
    column: str
    declared: str
    predicted: str
    confidence: float


class Timings(BaseModel):
    preprocess_ms: float
    queue_ms: float
    compute_ms: float = Field(description="model call and decoding of the whole batch")
    total_ms: float
    batch_size: int


class OutOfDistribution(BaseModel):
    """How unlike the model's training images this image is."""

    score: float = Field(description="the model's out-of-distribution score (higher: less familiar)")
    threshold: float = Field(description="scores above it are flagged (set for a stated false-alarm rate)")
    flagged: bool


class CategoryCheck(BaseModel):
    """The image scored by every loaded category's model, for an upload filed under the wrong category."""

    asked: str
    best_fit: str | None = Field(description="the category whose model finds the image least unfamiliar, when "
                                 "that model does not flag it; null when every model flags it")
    scores: dict[str, float] = Field(description="per category, its score divided by its threshold (above 1: "
                                     "flagged)")


class PredictResponse(BaseModel):
    model: str
    model_version: int
    category: str
    threshold: float
    attributes: dict[str, AttributeResult]
    conflicts: list[Conflict]
    row: dict[str, str] = Field(description="challenge-style attr_1..attr_10 (unused slots: 'dummy')")
    timings: Timings
    out_of_distribution: OutOfDistribution | None = Field(
        default=None, description="null when the model has no detector (exported without one)")
    category_check: CategoryCheck | None = Field(
        default=None, description="when the image is flagged (or the server checks every image)")


class ErrorBody(BaseModel):
    error: str
    code: str


class BatchItem(BaseModel):
    index: int
    id: str | None = None
    status: int
    result: PredictResponse | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    items: list[BatchItem]


class ModelSummary(BaseModel):
    name: str
    category: str
    version: int
    versions: list[int]
    ready: bool
    precision: str
    provider: str
    error: str | None = None


class ModelList(BaseModel):
    models: list[ModelSummary]


# -- Open Inference Protocol (KServe v2) ------------------------------------------------------------


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


class RepositoryModel(BaseModel):
    """One entry of the repository index (Triton's repository extension)."""

    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str = ""


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["BYTES"]
    data: list[str] | None = Field(default=None, description="base64-encoded image files (absent when they "
                                   "come in the binary tensor extension, with parameters.binary_data_size)")
    parameters: dict[str, Any] = Field(default_factory=dict)


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    # pydantic refuses a lone surrogate ("\\ud800") as a string, so an echoed id always serialises.
    id: Annotated[str | None, Field(max_length=256)] = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]
    parameters: dict[str, Any] = Field(default_factory=dict)
