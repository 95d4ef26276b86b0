"""The committed demo repository (models/demo) is complete, verified, and predicts sensibly."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from catalog.decoding import predict_rows
from catalog.manifest import list_versions, load_manifest, resolve_version
from catalog.preprocessing import preprocess
from catalog.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
SAMPLES = ROOT / "service" / "static" / "samples"


@pytest.mark.parametrize("slug", load_taxonomy().slugs)
def test_every_category_is_there_verified_and_small(slug):
    assert list_versions(DEMO, slug) == [1]
    manifest = load_manifest(resolve_version(DEMO, slug))  # checks schema, taxonomy and sha256
    assert manifest.precision == "int8"
    assert manifest.verification["fp32"]["argmax_agreement"] == 1.0
    assert manifest.verification["score"]["drop_points"] <= manifest.verification["score"]["max_drop_points"]
    assert (resolve_version(DEMO, slug) / "model.onnx").stat().st_size < 8_000_000


def test_demo_models_predict_the_sample_photos_colours():
    samples = json.loads((SAMPLES / "samples.json").read_text())
    right = 0
    for sample in samples:
        folder = resolve_version(DEMO, sample["category"])
        manifest = load_manifest(folder)
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        with Image.open(SAMPLES / sample["file"]) as image:
            pixels = preprocess(image, manifest.preprocess_spec())[None]
        outputs = session.run(manifest.output_names, {manifest.input.name: pixels})
        logits = dict(zip(manifest.output_names, outputs, strict=True))
        (row,) = predict_rows(manifest.decoder(), logits)
        assert all(np.isfinite(p.confidence) for p in row.values())
        right += row["color"].value == sample["labels"]["color"]
    # Colour has 4 to 13 values per category; a trained model gets most of these photos right.
    assert right >= 7, f"only {right} of {len(samples)} sample colours predicted"
