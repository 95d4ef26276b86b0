"""Running one exported model with PyTorch: where (CPU or CUDA), in what arithmetic (fp32, or fp16/bf16 by
autocast), optionally compiled, and proven at load to reproduce the outputs its manifest recorded.

Imported only by the torch backend (``CATALOG_SERVICE_BACKEND=torch``): it imports torch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.export.passes import move_to_device_pass

from catalog.manifest import OOD_OUTPUT, Manifest, ManifestError
from catalog.reference import TOLERANCES, compare_reference, recorded, reference_batch
from service.errors import ModelLoadError
from service.model_runner import Outputs
from service.settings import Settings

log = logging.getLogger("service.torch_runtime")
DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "float32": (torch.float32, "fp32"), "float16": (torch.float16, "fp16"), "bfloat16": (torch.bfloat16, "bf16"),
}
"""Setting value -> the autocast dtype and the precision label the API reports."""
GRAPHS = "reduce-overhead"
"""The ``torch_compile`` mode that records CUDA graphs."""
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TorchChoice:
    """Where and how every model runs, decided once from the settings and what this host has."""

    device: torch.device
    dtype: torch.dtype
    precision: str
    compile_mode: str

    @property
    def provider(self) -> str:
        return f"torch-{self.device.type}"


def resolve_choice(settings: Settings) -> TorchChoice:
    """The settings made concrete for this host; a choice the host cannot honour is an error naming it."""
    cuda = torch.cuda.is_available()
    device = settings.torch_device
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device == "cuda" and not cuda:
        raise ModelLoadError(f"torch_device 'cuda': torch {torch.__version__} sees no CUDA device here")
    name = settings.torch_dtype if settings.torch_dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    if settings.torch_compile == GRAPHS and device != "cuda":
        raise ModelLoadError("torch_compile 'reduce-overhead' records CUDA graphs and needs torch_device cuda")
    if settings.gpu_decode and device != "cuda":
        raise ModelLoadError(f"gpu_decode needs the torch backend on CUDA; torch_device is {device!r}")
    dtype, precision = DTYPES[name]
    return TorchChoice(torch.device(device), dtype, precision, settings.torch_compile)


def load_module(folder: Path, manifest: Manifest, settings: Settings, device: torch.device) -> torch.nn.Module:
    """The model of one version on ``device``: the checkpoint pinned in ``torch_checkpoints``, else the
    version's ``torch.export`` program (checked against its sha256 first)."""
    checkpoint = settings.torch_checkpoints.get(manifest.slug)
    if checkpoint is not None:
        return load_checkpoint_module(checkpoint, manifest).to(device)
    spec = manifest.torch_export
    if spec is None:
        raise ManifestError(f"{folder}: no torch.export program ({folder.name} was exported without "
                            "--torch-export) and no checkpoint for it in torch_checkpoints; re-export with "
                            "--torch-export or name its checkpoint")
    path = folder / spec.file
    if not path.is_file():
        raise ManifestError(f"{path}: torch.export program named by the manifest is missing")
    actual = _sha256(path)
    if actual != spec.sha256:
        raise ManifestError(f"{path}: sha256 {actual} does not match the manifest's {spec.sha256}")
    program = torch.export.load(str(path))
    # A program's module cannot be moved with .to(); its graph and weights are moved together instead.
    return move_to_device_pass(program, device).module()


def load_checkpoint_module(path: Path, manifest: Manifest) -> torch.nn.Module:
    """A training checkpoint (or a folder of an ensemble's members) as the model export traced, with the
    manifest's test-time augmentation."""
    from model_training.checkpoint import CheckpointError, find_checkpoint_dirs
    from model_training.ensemble import load_predictor

    try:
        loaded = load_predictor(find_checkpoint_dirs(path), tta_flip=manifest.source.get("tta") == "flip")
    except CheckpointError as error:
        raise ModelLoadError(f"torch_checkpoints[{manifest.slug!r}]: {error}") from None
    if loaded.info.category != manifest.category:
        raise ModelLoadError(f"torch_checkpoints[{manifest.slug!r}]: {path} is a checkpoint of "
                             f"{loaded.info.category!r}, not {manifest.category!r}")
    return loaded.model.eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def buckets(max_batch: int) -> list[int]:
    """Batch sizes a compiled model is built for: powers of two up to ``max_batch``, and ``max_batch``."""
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch]
    return [*sizes, max_batch]


class DedicatedThread:
    """Runs every call on one thread of its own, whichever thread asks. CUDA graphs recorded by
    ``torch.compile(mode="reduce-overhead")`` are thread-local (its cudagraph trees keep their state per
    capturing thread): a model warmed up on the loading thread and then called from the batcher's threads
    re-records or, worse, replays another thread's graph memory without an error (pytorch/pytorch#123177)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    def __call__(self, function: Callable[[T], R], argument: T) -> R:
        return self._pool.submit(function, argument).result()


class TorchRunner:
    """``run(batch) -> (logits by attribute, OOD score)`` for one model; batches are NumPy arrays or tensors
    (on any device). With CUDA graphs every call (warm-up and verification included) runs on one thread."""

    def __init__(self, module: torch.nn.Module, manifest: Manifest, choice: TorchChoice, max_batch: int) -> None:
        self._manifest = manifest
        self._choice = choice
        self._names = [a.name for a in manifest.attributes]
        # A checkpoint answers a dict by attribute name; a torch.export program a tuple in manifest order.
        self._keys = [*self._names, OOD_OUTPUT] if manifest.ood else self._names
        self._sizes = buckets(max_batch) if choice.compile_mode != "off" else []
        self._module: Any = torch.compile(module, mode=choice.compile_mode, dynamic=False) \
            if choice.compile_mode != "off" else module
        self._graph_thread = DedicatedThread(f"{manifest.slug}-graphs") if choice.compile_mode == GRAPHS else None

    def run(self, batch: np.ndarray | torch.Tensor) -> Outputs:
        if self._graph_thread is not None:
            return self._graph_thread(self._run, batch)
        return self._run(batch)

    def _run(self, batch: np.ndarray | torch.Tensor) -> Outputs:
        pixels = torch.as_tensor(batch).to(self._choice.device, non_blocking=True)
        n = len(pixels)
        pixels = self._padded(pixels)
        autocast = self._choice.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self._choice.device.type, self._choice.dtype, enabled=autocast):
            result = self._module(pixels)
        ordered = [result[key] for key in self._keys] if isinstance(result, dict) else list(result)
        arrays = [out[:n].float().cpu().numpy() for out in ordered]
        logits = dict(zip(self._names, arrays, strict=False))
        return logits, arrays[-1] if self._manifest.ood else None

    def _padded(self, pixels: torch.Tensor) -> torch.Tensor:
        """A compiled model sees only its bucket sizes (each compiled once); the padding rows are dropped."""
        size = next((s for s in self._sizes if s >= len(pixels)), len(pixels))
        if size == len(pixels):
            return pixels
        return torch.cat([pixels, pixels.new_zeros((size - len(pixels), *pixels.shape[1:]))])

    def warm_up(self) -> None:
        """Compile every bucket now rather than on the first requests of each size."""
        shape = self._manifest.preprocess_spec().input_shape
        for size in self._sizes:
            self.run(np.zeros((size, *shape), np.float32))

    def verify(self, folder: Path) -> float:
        """Refuse a model that does not reproduce its manifest's recorded outputs within the tolerance of the
        chosen precision; returns the largest difference."""
        expected = recorded(self._manifest.verification)
        if expected is None:
            raise ManifestError(f"{folder}: the manifest records no reference outputs (exported before they were "
                                "recorded); re-export it to serve it with the torch backend")
        logits, ood = self.run(reference_batch(self._manifest.preprocess_spec(), len(next(iter(expected.values())))))
        candidate = {**logits, **({self._manifest.ood.output: ood} if self._manifest.ood and ood is not None else {})}
        threshold = (self._manifest.ood.output, self._manifest.ood.threshold) if self._manifest.ood else None
        problems = compare_reference(expected, candidate, TOLERANCES[self._choice.precision], threshold)
        if problems:
            raise ModelLoadError(f"{folder}: {self._choice.provider} {self._choice.precision} does not reproduce "
                                 f"the recorded outputs: {'; '.join(problems)}")
        return max(float(np.abs(expected[k] - candidate[k]).max()) for k in expected)
