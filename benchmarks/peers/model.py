"""What every peer shares with the service: the ONNX file, the preprocessing (``catalog.preprocessing`` on
the same bytes, so the pixels are bit-identical to the service's) and the answer (labels decoded by
``catalog.decoding``). Only the serving around them differs."""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from catalog.decoding import Decoder, predict_rows
from catalog.manifest import Manifest, load_manifest, resolve_version
from catalog.preprocessing import PreprocessSpec, preprocess, reduce_on_decode


def peer_arguments(description: str) -> argparse.ArgumentParser:
    """The command line every peer server takes: which model, where to listen, how many threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    return parser


def peer_session_options(threads: int) -> ort.SessionOptions:
    """ONNX Runtime as a peer would configure it: the thread count, its defaults otherwise (spinning on)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return options


@dataclass
class PeerModel:
    manifest: Manifest
    spec: PreprocessSpec
    decoder: Decoder
    session: ort.InferenceSession

    @classmethod
    def load(cls, repository: Path, slug: str, threads: int) -> PeerModel:
        folder = resolve_version(repository, slug)
        manifest = load_manifest(folder)
        session = ort.InferenceSession(str(folder / manifest.model_file), peer_session_options(threads),
                                       providers=["CPUExecutionProvider"])
        return cls(manifest, manifest.preprocess_spec(), manifest.decoder(), session)

    def preprocess(self, data: bytes) -> np.ndarray:
        image = reduce_on_decode(Image.open(io.BytesIO(data)), self.spec)
        image.load()
        return preprocess(image, self.spec)

    def predict(self, batch: np.ndarray) -> list[dict[str, object]]:
        """A stacked batch of preprocessed images ``(N, 3, H, W)`` -> one JSON-ready answer per image (each
        attribute's value and confidence)."""
        manifest = self.manifest
        outputs = self.session.run(manifest.output_names, {manifest.input.name: batch})
        logits = {spec.name: out for spec, out in zip(manifest.attributes, outputs, strict=True)}
        return [{"attributes": {name: {"value": p.value, "confidence": p.confidence} for name, p in row.items()}}
                for row in predict_rows(self.decoder, logits)]
