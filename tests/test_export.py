import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import export.exporter as exporter
from catalog.dataset import LabelRow, read_labels, write_labels
from catalog.manifest import load_manifest, sha256_file
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from export.__main__ import main
from export.exporter import ExportError, export_checkpoint, load_batch
from export.precision import PrecisionError
from export.precision import convert as real_convert
from export.repository import RepositoryError
from export.verify import Parity, compare, run_torch
from model_training.backbone import build_backbone
from model_training.checkpoint import WEIGHTS_NAME, load_checkpoint, make_info, save_checkpoint
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


# --- verify.compare on logits whose agreement is known by construction ----------------------------------

def test_compare_of_identical_outputs_is_full_agreement_and_no_difference():
    logits = {"a": np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32),
              "b": np.random.default_rng(1).standard_normal((6, 2)).astype(np.float32)}
    parity = compare(logits, {name: value.copy() for name, value in logits.items()})
    assert parity == Parity(images=6, max_abs_diff=0.0, argmax_agreement=1.0,
                            per_attribute_agreement={"a": 1.0, "b": 1.0})


def test_compare_counts_flipped_argmaxes_per_attribute_and_averages_over_attributes():
    reference = {"a": np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]], dtype=np.float32),
                 "b": np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)}
    candidate = {"a": reference["a"].copy(), "b": reference["b"] + 0.25}  # b: same argmaxes, off by 0.25
    candidate["a"][3] = [0, 0, 5]  # one of a's four rows now argmaxes class 2, not 0: off by 5 there
    parity = compare(reference, candidate)
    assert parity.per_attribute_agreement == {"a": 0.75, "b": 1.0}
    assert parity.argmax_agreement == pytest.approx((0.75 + 1.0) / 2)
    assert parity.max_abs_diff == 5.0 and parity.images == 4


# --- the export's verification against models that differ from the checkpoint on purpose ---------------

FORCED = "color"
"""The attribute whose output a deliberately broken variant forces to one class."""


def add_to_output(path, output, bias):
    """Rewrite the ONNX model at ``path`` so that ``output`` comes out as before plus ``bias``."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = f"{output}_unbiased"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(bias, dtype=np.float32), f"{output}_bias"))
    model.graph.node.append(onnx.helper.make_node("Add", [f"{output}_unbiased", f"{output}_bias"], [output]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def self_labelled(checkpoint, validation_data, tmp_path_factory):
    """The validation images labelled, for ``FORCED`` only, with what the checkpoint predicts for them (its
    argmax: the checkpoint has no calibration or rules), so its score on them is 1.0 by construction.
    Returns the data folder and a class index the checkpoint never predicts for ``FORCED`` here."""
    model, info = load_checkpoint(checkpoint)
    rows = read_labels(validation_data / "test_truth.csv", validation_data / "test_images")
    argmax = run_torch(model, load_batch(rows, SPEC), [FORCED])[FORCED].argmax(-1).tolist()
    values = info.value_orders[FORCED]
    never = [k for k in range(len(values)) if k not in argmax]
    assert never, f"the checkpoint predicts every {FORCED} value on these images; pick other images"
    root = tmp_path_factory.mktemp("self_labelled")
    (root / "test_images").mkdir()
    labelled = []
    for row, k in zip(rows, argmax, strict=True):
        assert row.image_path is not None
        (root / "test_images" / row.image_path.name).write_bytes(row.image_path.read_bytes())
        labelled.append(LabelRow(row.id, MEN.name, {FORCED: values[k]}))
    write_labels(labelled, root / "test_truth.csv")
    return root, never[0]


def variant_as(monkeypatch, edit=None):
    """The reduced-precision step writes the fp32 model unchanged, then applies ``edit`` to it."""
    def convert(fp32_path, target_path, precision, **_):
        real_convert(fp32_path, target_path, "fp32")
        if edit is not None:
            edit(target_path)

    monkeypatch.setattr(exporter, "convert", convert)


def forcing(k):
    """An edit adding 1000 to class ``k`` of ``FORCED``: every image then argmaxes ``k`` there."""
    size = len(MEN.attribute(FORCED).values)
    return lambda path: add_to_output(path, FORCED, np.eye(size, dtype=np.float32)[k] * 1000)


def test_a_variant_identical_to_fp32_agrees_fully_and_costs_nothing(checkpoint, self_labelled, tmp_path,
                                                                     monkeypatch):
    data, _ = self_labelled
    variant_as(monkeypatch)
    result = export_checkpoint(checkpoint, tmp_path, precision="int8", validation_data=data,
                               max_score_drop_points=0.0)
    checks = result.manifest.verification
    assert checks["int8"]["argmax_agreement"] == 1.0
    assert set(checks["int8"]["per_attribute_agreement"].values()) == {1.0}
    assert checks["int8"]["max_abs_diff"] == checks["fp32"]["max_abs_diff"] <= 1e-4
    assert checks["score"] == {"fp32": 1.0, "int8": 1.0, "drop_points": 0.0, "max_drop_points": 0.0,
                               "forced": False}


def test_a_variant_forcing_one_class_is_measured_and_refused(checkpoint, self_labelled, tmp_path, monkeypatch):
    data, never = self_labelled
    variant_as(monkeypatch, forcing(never))
    # It predicts a value no image is labelled with on the only labelled attribute: score 0, a 100-point drop.
    with pytest.raises(ExportError, match=r"int8 costs 100\.00 points .* on 20 validation images \(limit 0\.5\)"):
        export_checkpoint(checkpoint, tmp_path, precision="int8", validation_data=data)
    with pytest.raises(ExportError, match=r"costs 100\.00 points"):
        export_checkpoint(checkpoint, tmp_path, precision="int8", validation_data=data, max_score_drop_points=99.99)
    assert not (tmp_path / "men_tshirts").exists()

    result = export_checkpoint(checkpoint, tmp_path, precision="int8", validation_data=data, force=True)
    checks = result.manifest.verification
    agreement = {name: 1.0 for name in MEN.attribute_names} | {FORCED: 0.0}
    assert checks["int8"]["per_attribute_agreement"] == agreement
    assert checks["int8"]["argmax_agreement"] == pytest.approx((len(agreement) - 1) / len(agreement))
    assert checks["int8"]["max_abs_diff"] == pytest.approx(1000, abs=0.01)
    assert checks["score"] == {"fp32": 1.0, "int8": 0.0, "drop_points": 100.0, "max_drop_points": 0.5,
                               "forced": True}
    # A limit the drop does not exceed lets it through without --force.
    allowed = export_checkpoint(checkpoint, tmp_path, precision="int8", validation_data=data,
                                max_score_drop_points=100.0)
    assert allowed.manifest.verification["score"]["forced"] is False


def test_fp32_onnx_off_by_more_than_the_tolerance_is_refused(checkpoint, validation_data, tmp_path, monkeypatch):
    real_export = exporter.export_onnx

    def export_shifted(model, names, input_shape, path, opset):
        real_export(model, names, input_shape, path, opset)
        add_to_output(path, FORCED, np.full(len(MEN.attribute(FORCED).values), 0.01))  # argmaxes unchanged

    monkeypatch.setattr(exporter, "export_onnx", export_shifted)
    with pytest.raises(ExportError, match=r"max \|logit diff\| 0\.01 .* argmax agreement 1\.0000"):
        export_checkpoint(checkpoint, tmp_path, validation_data=validation_data)
    assert not (tmp_path / "men_tshirts").exists()


@pytest.mark.parametrize(("precision", "marker_op", "max_diff"), [("int8", "MatMulInteger", 0.05),
                                                                   ("fp16", None, 0.01)])
def test_real_reduced_precision_is_converted_and_close(checkpoint, validation_data, tmp_path, precision,
                                                       marker_op, max_diff):
    result = export_checkpoint(checkpoint, tmp_path, precision=precision, validation_data=validation_data,
                               max_score_drop_points=100.0)
    checks = result.manifest.verification
    assert result.manifest.precision == precision
    model = onnx.load(str(result.path / "model.onnx"))
    if marker_op:  # int8: quantised matrix products
        assert marker_op in {node.op_type for node in model.graph.node}
    else:  # fp16: every weight in half precision
        assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    # A really reduced model differs from fp32, by little: measured 0.006 (int8) and 0.0009 (fp16).
    assert checks["fp32"]["max_abs_diff"] < checks[precision]["max_abs_diff"] <= max_diff
    # Near-tied logits (margins down to 0.005 on these images) may flip; most must not.
    assert checks[precision]["argmax_agreement"] >= 0.9
    assert checks["score"]["max_drop_points"] == 100.0 and checks["score"]["forced"] is False
    session = ort.InferenceSession(str(result.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)"
    assert all(o.type == "tensor(float)" for o in session.get_outputs())


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


def test_the_cli_offers_the_precisions_as_a_choice_list(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--checkpoint", str(checkpoint), "--repository", str(tmp_path), "--precision", "int4"])
    assert stopped.value.code == 2
    assert "invalid choice: 'int4' (choose from" in capsys.readouterr().err


def test_torch_export_writes_a_verified_program_and_every_export_records_reference_outputs(checkpoint, tmp_path):
    from catalog.reference import recorded, reference_batch
    from export.torch_program import load_program

    plain = export_checkpoint(checkpoint, tmp_path, version_number=1)
    assert plain.manifest.torch_export is None and not (plain.path / "model.pt2").exists()
    assert '"torch_export"' not in (plain.path / "manifest.json").read_text()
    result = export_checkpoint(checkpoint, tmp_path, version_number=2, torch_export=True)
    entry = result.manifest.torch_export
    assert entry is not None and entry.sha256 == sha256_file(result.path / entry.file)
    assert result.manifest.verification["torch_export"]["max_abs_diff"] <= 1e-5
    reference = recorded(result.manifest.verification)
    assert reference is not None and list(reference) == list(MEN.attribute_names)
    outputs = load_program(result.path / entry.file)(torch.from_numpy(reference_batch(SPEC, 5)))
    assert len(outputs) == len(MEN.attribute_names) and outputs[0].shape[0] == 5  # any batch size
    assert np.allclose(outputs[0][:2].detach().numpy(), reference[MEN.attribute_names[0]], atol=1e-4)
