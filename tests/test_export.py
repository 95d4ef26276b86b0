import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from catalog.dataset import LabelRow, write_labels
from catalog.manifest import load_manifest, sha256_file
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from export.__main__ import main
from export.exporter import ExportError, export_checkpoint
from export.precision import PrecisionError
from export.repository import RepositoryError
from model_training.backbone import build_backbone
from model_training.checkpoint import WEIGHTS_NAME, make_info, save_checkpoint
from model_training.model import CategoryModel, value_orders_for
from tests.helpers import write_image

SPEC = PreprocessSpec(height=32, width=32)
MEN = load_taxonomy()["men_tshirts"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(MEN), head_hidden=16).eval()
    info = make_info(model, MEN, SPEC, "convnext-test")
    return save_checkpoint(tmp_path_factory.mktemp("run") / "men_tshirts", model, info)


@pytest.fixture(scope="module")
def validation_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        labels = {a.name: a.values[int(rng.integers(len(a.values)))] for a in MEN.attributes}
        rows.append(LabelRow(i, MEN.name, labels))
        write_image(root / "test_images" / f"{i:06d}.jpg", tuple(int(c) for c in rng.integers(0, 255, 3)))
    write_labels(rows, root / "test_truth.csv")
    return root


def test_fp32_export_matches_pytorch_at_batch_1_and_16(checkpoint, validation_data, tmp_path):
    result = export_checkpoint(checkpoint, tmp_path, validation_data=validation_data)
    assert result.path == tmp_path / "men_tshirts" / "1"
    manifest = load_manifest(result.path)
    assert manifest.sha256 == sha256_file(result.path / "model.onnx")
    assert manifest.output_names == list(MEN.attribute_names)
    assert manifest.verification["fp32"]["argmax_agreement"] == 1.0
    assert manifest.verification["fp32"]["max_abs_diff"] <= 1e-4
    assert manifest.source["checkpoint"].endswith("men_tshirts")
    from model_training.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    session = ort.InferenceSession(str(result.path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 16):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        outputs = session.run(None, {"pixel_values": x})
        with torch.no_grad():
            expected = model(torch.from_numpy(x))
        for name, got in zip(manifest.output_names, outputs, strict=True):
            assert got.shape == (batch, len(MEN.attribute(name).values))
            assert np.abs(got - expected[name].numpy()).max() <= 1e-4


def test_next_export_gets_next_version(checkpoint, tmp_path):
    export_checkpoint(checkpoint, tmp_path)
    assert export_checkpoint(checkpoint, tmp_path).path.name == "2"
    with pytest.raises(RepositoryError, match="already exists"):
        export_checkpoint(checkpoint, tmp_path, version_number=2)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_reduced_precision_reports_agreement_and_score_drop(checkpoint, validation_data, tmp_path, precision):
    result = export_checkpoint(checkpoint, tmp_path, precision=precision, validation_data=validation_data,
                               max_score_drop_points=100.0)
    checks = result.manifest.verification
    assert result.manifest.precision == precision
    assert 0.0 <= checks[precision]["argmax_agreement"] <= 1.0
    assert checks["score"]["drop_points"] == pytest.approx((checks["score"]["fp32"] - checks["score"][precision]) * 100)
    session = ort.InferenceSession(str(result.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)"
    assert all(o.type == "tensor(float)" for o in session.get_outputs())


def test_score_drop_over_limit_fails_and_leaves_nothing(checkpoint, validation_data, tmp_path, monkeypatch):
    import export.exporter as exporter

    scores = iter([0.9, 0.5])
    monkeypatch.setattr(exporter, "competition_score", lambda *args: next(scores))
    with pytest.raises(ExportError, match=r"costs 40\.00 points"):
        export_checkpoint(checkpoint, tmp_path, precision="int8", validation_data=validation_data)
    assert not (tmp_path / "men_tshirts").exists()


def edited_copy(checkpoint, target, edit):
    """A copy of the checkpoint directory whose checkpoint.json went through ``edit``."""
    target.mkdir()
    for item in checkpoint.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    info = json.loads((target / "checkpoint.json").read_text())
    edit(info)
    (target / "checkpoint.json").write_text(json.dumps(info))
    return target


def test_broken_checkpoint_leaves_repository_untouched(checkpoint, tmp_path):
    # Heads now mis-shaped against the weights.
    broken = edited_copy(checkpoint, tmp_path / "broken", lambda info: info["head"].update(hidden=8))
    repository = tmp_path / "repo"
    with pytest.raises(ExportError, match="shape mismatches"):
        export_checkpoint(broken, repository)
    assert not repository.exists()


def test_checkpoint_not_matching_taxonomy_is_refused(checkpoint, tmp_path):
    broken = edited_copy(checkpoint, tmp_path / "broken",
                         lambda info: info["value_orders"].update(sleeve_length=["short sleeves", "sleeveless"]))
    with pytest.raises(ExportError, match="'sleeve_length' predicts"):
        export_checkpoint(broken, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_unknown_precision_and_missing_files_are_clear(checkpoint, tmp_path, capsys):
    with pytest.raises(PrecisionError, match="'int4'"):
        export_checkpoint(checkpoint, tmp_path, precision="int4")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "checkpoint.json").write_bytes((checkpoint / "checkpoint.json").read_bytes())
    with pytest.raises(ExportError, match=f"{WEIGHTS_NAME}: weights file not found"):
        export_checkpoint(no_weights, tmp_path / "repo")
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--repository", str(tmp_path / "repo")]) == 2
    assert "neither a checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_cli_exports_every_checkpoint_of_a_run(checkpoint, tmp_path, capsys):
    assert main(["--checkpoint", str(checkpoint.parent), "--repository", str(tmp_path / "repo")]) == 0
    assert "men_tshirts" in capsys.readouterr().out
    assert load_manifest(tmp_path / "repo" / "men_tshirts" / "1").version == 1
