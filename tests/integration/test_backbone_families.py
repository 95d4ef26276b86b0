"""Every backbone family end to end at 64 px: one training epoch on a tiny catalog, export (which verifies
ONNX against PyTorch itself), then the service's ONNX predictor answers for one image, preprocessed with
the mean/std the manifest carries (the backbone's own)."""

from __future__ import annotations

import pytest

from catalog.manifest import load_manifest
from export.exporter import export_checkpoint
from model_training.checkpoint import load_checkpoint
from model_training.train import main
from tests.backbone_dirs import OPEN_CLIP_CONFIGS, save_tiny, save_tiny_open_clip
from tests.serving import serve_one
from tests.tiny_catalog import TINY, make_catalog

HF_KINDS = ("convnextv2", "clip", "siglip", "vit", "dinov2")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("catalog"), n_train=24, n_test=6)


def backbone_name(kind: str, folder) -> str:
    if kind in OPEN_CLIP_CONFIGS:
        pytest.importorskip("open_clip")
        return f"open_clip:{kind}/{save_tiny_open_clip(kind, folder)}"
    return str(save_tiny(kind, folder))


@pytest.mark.parametrize("kind", [*HF_KINDS, *sorted(OPEN_CLIP_CONFIGS)])
def test_train_export_and_serve(catalog, tmp_path, kind):
    run = tmp_path / "run"
    assert main(["--data", str(catalog), "--category", "men_tshirts", "--out", str(run), *TINY,
                 "--backbone", backbone_name(kind, tmp_path), "--image-size", "64", "--epochs-t1", "1",
                 "--epochs-t2", "1", "--no-calibrate", "--no-rules"]) == 0
    model, info = load_checkpoint(run)
    assert info.preprocessing.mean == model.backbone.pretrained_cfg.mean
    result = export_checkpoint(run, tmp_path / "models", validation_data=catalog)
    manifest = load_manifest(result.path)
    assert manifest.verification["fp32"]["max_abs_diff"] <= 1e-4
    assert tuple(manifest.preprocess_spec().mean) == model.backbone.pretrained_cfg.mean
    assert manifest.preprocess_spec().height == 64
    row = serve_one(tmp_path / "models", catalog / "test_images" / "000024.jpg")
    assert set(row) == set(info.attribute_names)
