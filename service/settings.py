"""The service's configuration: one class, read from ``CATALOG_SERVICE_*`` environment variables (or
passed in by tests and the CLI), validated at start-up with messages that name the bad value."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.cpu_budget import cpu_budget, worker_share
from service.preprocess_memory import DEFAULT_LIMIT_BYTES

ENV_PREFIX = "CATALOG_SERVICE_"
DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "models" / "demo"
RENAMED = {"DECODE_ALONE_WHEN_IDLE": "BATCHES_ON_PREPROCESS_THREADS",
           "PREPROCESS_ALONE_WHEN_IDLE": "BATCHES_ON_PREPROCESS_THREADS"}
"""Environment variables whose setting was renamed: refused with the new name rather than ignored."""
OodAction = Literal["abstain", "keep"]
CategoryCheckMode = Literal["flagged", "always", "off"]
KNOWN_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
Backend = Literal["onnxruntime", "torch"]
TorchDevice = Literal["auto", "cpu", "cuda"]
TorchDtype = Literal["auto", "float32", "float16", "bfloat16"]
TorchCompile = Literal["off", "default", "reduce-overhead", "max-autotune"]
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _split(value: Any) -> Any:
    """Environment lists may be comma-separated (``a,b``) as well as JSON (``["a", "b"]``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, use_attribute_docstrings=True, extra="forbid", validate_default=True
    )

    repository: Path = DEFAULT_REPOSITORY
    """Model repository: ``<repository>/<category_slug>/<version>/{model.onnx,manifest.json}``."""
    categories: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Category slugs to load (comma-separated in the environment); empty loads every one found."""
    versions: dict[str, int] = Field(default_factory=dict)
    """Pinned versions by slug (JSON in the environment, e.g. ``{"sarees": 2}``); others get the newest."""
    allow_partial_start: bool = False
    """Serve the healthy categories when one fails to load (it reports not ready) instead of refusing
    to start."""

    max_batch_size: int = Field(default=16, ge=1, le=1024)
    """Most images in one model call."""
    max_queue_delay_s: float = Field(default=0.0, ge=0, le=10)
    """How long the first queued image may wait for others; 0 never waits while the model is idle."""
    max_queue_size: int = Field(default=256, ge=1)
    """Queued images per model beyond which requests are refused at once with 503 and Retry-After."""
    max_batches_in_flight: int | None = Field(default=None, ge=1, le=64)
    """Batches of one model that run at the same time. Unset: with ``session_threads`` unset on the CPU
    provider, one per core of the budget (each on one intra-op thread: ``service/session_layout.py``); else 1.
    Set, with ``session_threads`` unset on the CPU provider, the budget's threads are split among them."""
    request_timeout_s: float = Field(default=10.0, gt=0)
    """An image whose batch has not started within this time fails with 504."""
    drain_timeout_s: float = Field(default=20.0, ge=0)
    """On SIGTERM, how long queued and running work may take to finish before the process exits."""
    shutdown_delay_s: float = Field(default=0.0, ge=0, le=300)
    """On SIGTERM, how long to keep listening (readiness 503, new predictions 503 with Retry-After) before
    closing the listener, so load balancers see the pod leave first; added to ``drain_timeout_s``."""

    execution_providers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """ONNX Runtime providers in order of preference; empty picks the best available of TensorRT,
    CUDA, CPU."""
    backend: Backend = "onnxruntime"
    """What runs the models: ``onnxruntime`` (each version's ``model.onnx``) or ``torch`` (PyTorch, for hosts
    with a GPU but no ``onnxruntime-gpu``: each version's ``model.pt2`` from ``export --torch-export``, or
    the checkpoint named in ``torch_checkpoints``; verified at load against the outputs its manifest
    recorded). torch is imported only when chosen."""
    torch_checkpoints: dict[str, Path] = Field(default_factory=dict)
    """With the torch backend: training checkpoint folders by slug (JSON in the environment, e.g.
    ``{"sarees": "runs/sarees"}``), served instead of the version's ``model.pt2``."""
    torch_device: TorchDevice = "auto"
    """With the torch backend: ``auto`` runs on CUDA when a GPU is present, else on the CPU."""
    torch_dtype: TorchDtype = "auto"
    """With the torch backend: the arithmetic (autocast) the model runs in; ``auto`` is ``bfloat16`` on CUDA
    and ``float32`` on the CPU. Reduced precision is verified at load with a wider tolerance."""
    torch_compile: TorchCompile = "off"
    """With the torch backend: ``torch.compile`` mode (``reduce-overhead`` adds CUDA graphs, and then runs every
    batch on one thread of its own, one at a time: the graphs are per thread). Batches are then padded to
    powers of two, each compiled at start-up. Opt-in: its gain is unmeasured here (no GPU)."""
    gpu_decode: bool = False
    """With the torch backend on CUDA: decode JPEG uploads on the GPU (nvJPEG through
    ``torchvision.io.decode_jpeg``), a batch at a time, then resize and normalise there; other formats are
    preprocessed on the CPU as usual. Start-up fails when torchvision or CUDA is missing."""
    session_threads: int = Field(default=0, ge=0, le=256)
    """Intra-op threads per model session. 0 (the default) sizes by each worker process's share of the
    container's CPU budget (its cgroup quota, else the cores available, divided by ``workers`` and rounded
    down; at least 1, at most 8; with ``shared_inference`` the one inference process takes the whole
    budget): on the CPU provider, batches under load then run on one thread each, as many at once as the
    budget has cores (or as ``preprocess_threads``, when fewer and batches run on them: the cores are split
    among those), and a lone batch may run on a session with the whole budget (``service/session_layout.py``,
    measured there); on other providers a session gets the budget."""
    preprocess_threads: int = Field(default=0, ge=0, le=256)
    """Threads that preprocess uploads (decode the file, resize, normalise), per worker process; 0 uses each
    worker's share of the container's CPU budget (divided by ``workers``, rounded down, at least 1). With
    ``batches_on_preprocess_threads`` (the CPU default) they run the models' batches too, so they bound the
    threads at work."""
    batches_on_preprocess_threads: bool | None = None
    """With ``max_queue_delay_s`` 0, batches run on the threads that preprocess the uploads: a thread that has
    preprocessed an upload runs it, with whatever else is queued, when fewer than ``max_batches_in_flight``
    batches of its model are running, and keeps running what queues meanwhile; a lone request is preprocessed
    and run in one thread call. No hop through the event loop between preprocessing and the model, and no
    more threads at work than ``preprocess_threads`` (``service/batching/preparing_threads.py``, measured
    there). Unset, it is on for models this process runs on the CPU, and off on a GPU (the model should not
    wait while its threads read images) and with ``shared_inference`` (a front end's batch is a wait on the
    inference process, not work, and the inference process runs the front ends' batches on threads of its own)."""
    gather_batch_size: int | None = Field(default=None, ge=1, le=1024)
    """With ``batches_on_preprocess_threads``: how many uploads still waiting for a thread a thread with a
    free slot preprocesses before running them as one batch (1: none). Unset, each model is timed at load on
    the session its batches run on, at 1 and 4 images, and gathers 4 when a batch of 4 costs at most 0.9 of
    a lone image's call per image (``service/gather_choice.py``; the demo model gathers, ConvNeXt-tiny does
    not). At most ``max_batch_size``."""
    spin_when_idle: bool | None = None
    """Whether the lone session's intra-op threads spin during a call and stop when it returns (ONNX Runtime's
    ``session.force_spinning_stop``). A batch that is all its model has to do (a lone request at low load)
    runs on the lone session while lone calls there are measured to be faster than on the session every
    other batch runs on: on an idle host spinning saves the wake-ups, on a host whose cores others share
    it can double the call (``service/session_choice.py``). No CPU is spent while idle. The lone session
    is a second copy of each model in memory; it exists when it spins or has more threads than the other
    (``session_threads`` unset: it gets the whole budget). Unset, spinning is on for models served by the
    CPU provider with at least 2 session threads; on needs 2."""
    warmup: bool = True
    """Run one dummy batch per model at start-up so the first request is not slow."""

    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    """Largest accepted image file (413 above)."""
    max_image_pixels: int = Field(default=50_000_000, ge=64)
    """Largest accepted decoded image, width x height (413 above: decompression bombs)."""
    preprocess_memory_bytes: int = Field(default=DEFAULT_LIMIT_BYTES, ge=16 * 1024 * 1024)
    """Estimated memory (bytes; default 256 MiB) that large uploads may hold while being preprocessed,
    all requests together (estimated from each image's header before decoding: pixels x bytes per
    pixel of its mode). An
    image needing more than this alone is refused (413); one that does not fit beside those in progress
    is shed (503, Retry-After). Uploads needing 16 MiB or less (every JPEG, which decodes reduced) do not
    count against it."""
    max_batch_items: int = Field(default=64, ge=1, le=1024)
    """Most images in one ``/batch`` or v2 infer request (413 above)."""
    max_request_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    """Largest request body on ``/batch`` and v2 infer, refused with 413 while it is being read (``/predict``
    is capped at ``max_upload_bytes`` plus 1 MiB for the form)."""

    max_head_bytes: int = Field(default=64 * 1024, ge=4096)
    """Largest request line plus headers (431 above)."""
    head_timeout_s: float = Field(default=10.0, gt=0)
    """Time a client has to send the request line and headers, from connecting or from the first byte of
    its next request on a kept-alive connection (408 after, connection closed)."""
    body_timeout_s: float = Field(default=60.0, gt=0)
    """Time a client has to send the whole request body once its headers arrived (408 after)."""
    keep_alive_timeout_s: int = Field(default=5, ge=1)
    """How long an idle kept-alive connection stays open."""
    max_connections: int = Field(default=1024, ge=1)
    """Open connections (and requests in progress) beyond which new ones get uvicorn's plain-text 503."""

    threshold: float = Field(default=0.5, ge=0, le=1)
    """Default confidence below which an attribute abstains (value null); requests may override it."""
    conflict_threshold: float = Field(default=0.8, ge=0, le=1)
    """Confidence the image needs before a declared value that disagrees with it is flagged."""
    top_k: int = Field(default=3, ge=1, le=50)
    """Alternatives returned per attribute."""
    ood_action: OodAction = "abstain"
    """Default for an image the model's detector flags as unlike its training images: ``abstain`` on every
    attribute (the decoded values stay in ``row`` and ``top_k``; no conflicts) or ``keep`` the predictions;
    requests may override it (field ``ood``)."""
    category_check: CategoryCheckMode = "flagged"
    """Score the image with every loaded category's model: ``flagged`` images only, ``always`` (every image:
    up to one model call per loaded model per image), or ``off``."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Browser origins allowed to call the API cross-site (comma-separated, e.g.
    ``https://admin.example.com``); empty sends no CORS headers, so browsers refuse cross-site calls."""

    api_key: SecretStr | None = None
    """When set, prediction routes need it in ``X-API-Key`` (or ``Authorization: Bearer``); health and
    metrics stay open."""

    access_log: bool = True
    """One JSON line per request on the ``service.access`` logger (at ``--log-level info``, the default of
    ``python -m service`` and the image; the benchmarks run at ``warning``, without it)."""

    tracing: bool = False
    """OpenTelemetry spans per request (read, preprocess, queue, compute), sent by OTLP/HTTP to
    ``OTEL_EXPORTER_OTLP_ENDPOINT``; needs the ``tracing`` extra (start-up fails without it)."""

    workers: int = Field(default=1, ge=1, le=64)
    """HTTP processes serving one port (``python -m service``; ``service/workers.py``): each loads its own
    sessions and takes ``1/workers`` of the CPU budget for its thread pools (``session_threads``,
    ``preprocess_threads``), and the per-process limits (queue size, connections, preprocessing memory) apply
    to each; the parent holds the port, replaces a worker that dies and drains them all on SIGTERM. Refused
    with a GPU provider unless ``shared_inference`` is on: each process would hold its own copy of every model
    on the device."""
    shared_inference: bool = False
    """With ``workers`` > 1: the workers are front ends (HTTP, preprocessing, batching, decoding the logits,
    metrics) that run no model: each batch goes through shared memory to ONE inference process that loads
    every model once (any provider, a GPU included) and runs the batches of every worker, joining batches of
    the same model that wait together up to ``max_batch_size`` (``service/inference_server.py``). The session
    threads take the whole CPU budget as with one worker; the front ends split it for preprocessing. If the
    inference process dies, the front ends answer 503 (``inference_unavailable``) until the parent has
    restarted it. Refused with ``workers`` 1 (there is nothing to share) and with ``gpu_decode``."""

    host: str = "127.0.0.1"
    """Interface ``python -m service`` listens on."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port ``python -m service`` listens on."""

    @field_validator("categories", "execution_providers", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("repository")
    @classmethod
    def _repository_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(
                f"model repository {str(value)!r} is not a directory; pass --repository or set "
                f"{ENV_PREFIX}REPOSITORY"
            )
        return value

    @field_validator("execution_providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        import onnxruntime  # only the provider names; no session is created here

        available = onnxruntime.get_available_providers()
        missing = [p for p in value if p not in available]
        if missing:
            raise ValueError(f"execution provider(s) {missing} not available here; available: {available}")
        return value

    @field_validator("versions")
    @classmethod
    def _positive_versions(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {slug: v for slug, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"pinned versions must be >= 1, got {bad}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if o != "*" and not o.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"CORS origins must look like https://host[:port] (or *), got {bad}")
        return value

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("api_key must be at least 8 characters (or unset to disable it)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_renamed_variables(cls, data: Any) -> Any:
        for old, new in RENAMED.items():
            if ENV_PREFIX + old in os.environ:
                raise ValueError(f"{ENV_PREFIX}{old} was renamed to {ENV_PREFIX}{new}; set that instead")
        return data

    @model_validator(mode="after")
    def _torch_settings_need_the_torch_backend(self) -> Settings:
        if self.backend == "torch":
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise ValueError("backend 'torch' needs PyTorch, which is not installed here")
            # ONNX Runtime's own settings would be silently ignored by the torch backend.
            onnx_only = {"spin_when_idle": self.spin_when_idle is not None,
                         "execution_providers": self.execution_providers != []}
            ignored = [name for name, is_set in onnx_only.items() if is_set]
            if ignored:
                raise ValueError(f"{', '.join(ignored)} apply only with backend 'onnxruntime' (backend is 'torch')")
            if self.torch_compile == "reduce-overhead" and (self.max_batches_in_flight or 1) > 1:
                raise ValueError(f"max_batches_in_flight={self.max_batches_in_flight} cannot apply with torch_compile "
                                 "'reduce-overhead': CUDA graphs are per thread, so its batches run one at a time on "
                                 f"one thread; unset {ENV_PREFIX}MAX_BATCHES_IN_FLIGHT")
            return self
        chosen = {"torch_checkpoints": self.torch_checkpoints != {}, "torch_device": self.torch_device != "auto",
                  "torch_dtype": self.torch_dtype != "auto", "torch_compile": self.torch_compile != "off",
                  "gpu_decode": self.gpu_decode}
        stray = [name for name, is_set in chosen.items() if is_set]
        if stray:
            raise ValueError(f"{', '.join(stray)} apply only with backend 'torch' (backend is {self.backend!r})")
        return self

    @model_validator(mode="after")
    def _gathering_fits_a_batch(self) -> Settings:
        if self.gather_batch_size is not None and self.gather_batch_size > self.max_batch_size:
            raise ValueError(f"gather_batch_size={self.gather_batch_size} is over max_batch_size="
                             f"{self.max_batch_size}: a gathered batch must fit one batch")
        return self

    @model_validator(mode="after")
    def _pins_are_loaded(self) -> Settings:
        if self.categories:
            stray = sorted(set(self.versions) - set(self.categories))
            if stray:
                raise ValueError(f"versions pinned for {stray}, which are not in categories {self.categories}")
        return self

    @model_validator(mode="after")
    def _shared_inference_needs_workers(self) -> Settings:
        if self.shared_inference and self.workers == 1:
            raise ValueError(f"shared_inference=True needs workers > 1 (one process already shares its models); "
                             f"set {ENV_PREFIX}WORKERS=2 or more, or unset {ENV_PREFIX}SHARED_INFERENCE")
        if self.shared_inference and self.gpu_decode:
            raise ValueError("gpu_decode decodes on the device in the process that runs the model, and with "
                             "shared_inference=True the front ends that read the uploads run none; set one of them")
        return self

    @model_validator(mode="after")
    def _one_process_per_gpu(self) -> Settings:
        if self.workers == 1 or self.shared_inference:
            return self
        way_out = (f"serve a GPU with {ENV_PREFIX}SHARED_INFERENCE=true (one inference process for every worker) "
                   f"or {ENV_PREFIX}WORKERS=1, or ")
        if self.backend == "torch" and self.torch_device != "cpu":
            raise ValueError(
                f"workers={self.workers} with the torch backend on torch_device={self.torch_device!r} could load every "
                f"model {self.workers} times onto one GPU; {way_out}set {ENV_PREFIX}TORCH_DEVICE=cpu to run the "
                f"workers on the CPU")
        on_gpu = [p for p in self.providers if p in GPU_PROVIDERS] if self.backend == "onnxruntime" else []
        if on_gpu:
            raise ValueError(
                f"workers={self.workers} with {on_gpu[0]} would load every model {self.workers} times onto one "
                f"GPU (one copy per process); {way_out}set {ENV_PREFIX}EXECUTION_PROVIDERS=CPUExecutionProvider "
                f"to run the workers on the CPU")
        return self

    @property
    def providers(self) -> list[str]:
        """The providers sessions are created with, best first, always ending with CPU."""
        import onnxruntime

        chosen = self.execution_providers or [
            p for p in KNOWN_PROVIDERS if p in onnxruntime.get_available_providers()
        ]
        return chosen if "CPUExecutionProvider" in chosen else [*chosen, "CPUExecutionProvider"]

    @property
    def resolved_session_threads(self) -> int:
        # With shared inference one process holds the sessions: they take the budget as one worker's do, and
        # the front ends split it for preprocessing, as one worker's two pools both take it (they alternate).
        sessions_in = 1 if self.shared_inference else self.workers
        return self.session_threads or min(worker_share(cpu_budget(), sessions_in), 8)

    @property
    def resolved_preprocess_threads(self) -> int:
        return self.preprocess_threads or worker_share(cpu_budget(), self.workers)
