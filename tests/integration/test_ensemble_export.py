"""An ensemble of two checkpoints of one category (different backbone families, input sizes and mean/std)
exported as ONE ONNX model, verified against the PyTorch ensemble by the exporter itself, listed in the
manifest, and served unchanged by the service's ONNX predictor; flip TTA inside the graph too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from catalog.decoding import predict_rows
from catalog.manifest import load_manifest
from catalog.preprocessing import preprocess
from export.__main__ import main as export_main
from export.exporter import export_checkpoint
from export.verify import onnx_session, run_onnx, run_torch
from model_training.ensemble import load_predictor
from tests.helpers import write_image
from tests.serving import serve_one
from tests.test_ensemble import LARGE, MEN, members  # noqa: F401  (the fixture)


def test_an_ensemble_exports_as_one_verified_model_that_the_service_serves(members, tmp_path):  # noqa: F811
    result = export_checkpoint(list(members), tmp_path / "repo")
    manifest = load_manifest(result.path)
    assert manifest.preprocessing.spec() == LARGE and manifest.input.shape == ["batch", 3, 48, 48]
    assert manifest.members is not None
    assert [(m.family, m.image_size) for m in manifest.members] == [("hf-convnext", [32, 32]), ("hf-vit", [48, 48])]
    assert manifest.calibration == {} and len(manifest.rules) == 1
    assert manifest.verification["fp32"]["argmax_agreement"] == 1.0
    assert '"members"' in (result.path / "manifest.json").read_text()

    image = write_image(tmp_path / "shirt.jpg", (30, 60, 200))
    served = serve_one(tmp_path / "repo", image)
    loaded = load_predictor(list(members))
    with Image.open(image) as opened:
        batch = preprocess(opened, LARGE)[None]
    expected = predict_rows(loaded.info.decoder(), run_torch(loaded.model, batch, list(MEN.attribute_names)))[0]
    assert {name: p.value for name, p in served.items()} == {name: p.value for name, p in expected.items()}
    for name, prediction in served.items():
        assert prediction.confidence == pytest.approx(expected[name].confidence, abs=1e-4)


def test_the_cli_exports_an_ensemble_with_flip_tta_in_the_graph(members, tmp_path):  # noqa: F811
    a, b = members
    assert export_main(["--checkpoint", str(a.parent), str(b.parent), "--repository", str(tmp_path / "repo"),
                        "--tta", "flip"]) == 0
    folder = tmp_path / "repo" / "men_tshirts" / "1"
    manifest = load_manifest(folder)
    assert manifest.source["tta"] == "flip" and manifest.members is not None and len(manifest.members) == 2
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 48)).astype(np.float32)
    mirrored = np.ascontiguousarray(x[..., ::-1])
    session = onnx_session(folder / "model.onnx")
    names = list(MEN.attribute_names)
    got, got_mirrored = run_onnx(session, x, names), run_onnx(session, mirrored, names)
    for name in names:  # flip-averaged: the mirror image gives the same outputs
        assert np.abs(got[name] - got_mirrored[name]).max() < 1e-4
    with torch.no_grad():
        reference = load_predictor([a, b], tta_flip=True).model(torch.from_numpy(x))
    assert np.abs(got["color"] - reference["color"].numpy()).max() < 1e-4
