import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from catalog.decoding import AttributeCalibration, ConsistencyRule
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from model_training.backbone import build_backbone
from model_training.checkpoint import (
    INFO_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    find_checkpoint_dirs,
    load_checkpoint,
    make_info,
    save_checkpoint,
)
from model_training.model import CategoryModel, value_orders_for


def saved(tmp_path):
    torch.manual_seed(0)
    category = load_taxonomy()["men_tshirts"]
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(category), head_hidden=16).eval()
    info = make_info(
        model, category, PreprocessSpec(height=32, width=32), "convnext-test",
        calibration={"color": AttributeCalibration(1.5, (0.1, -0.2, 0.0, 0.3))},
        rules=[ConsistencyRule("pattern", "solid", "print_or_pattern_type", "solid", 0.99, 40)],
        metrics={"score": 0.5},
    )
    save_checkpoint(tmp_path / "run", model, info)
    return model, tmp_path / "run"


def test_roundtrip_gives_same_outputs_and_info(tmp_path):
    model, run = saved(tmp_path)
    loaded, info = load_checkpoint(run)
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for name, logits in model(x).items():
            torch.testing.assert_close(loaded(x)[name], logits)
    assert info.category == "Men Tshirts" and info.slug == "men_tshirts"
    assert info.preprocessing == PreprocessSpec(height=32, width=32)
    assert info.calibration["color"].offsets == (0.1, -0.2, 0.0, 0.3)
    assert str(info.rules[0]) == "pattern='solid' => print_or_pattern_type='solid'"
    assert info.metrics == {"score": 0.5}
    assert info.attribute_names == loaded.attribute_names
    assert info.decoder().category.attribute("color").values == info.value_orders["color"]


def test_strict_loading_names_missing_and_unexpected_keys(tmp_path):
    _, run = saved(tmp_path)
    state = load_file(str(run / "model.safetensors"))
    dropped = next(k for k in state if k.startswith("heads.color."))
    del state[dropped]
    state["heads.extra.weight"] = torch.zeros(2)
    save_file(state, str(run / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(run)
    assert dropped in str(error.value) and "heads.extra.weight" in str(error.value)


def test_strict_loading_rejects_shape_mismatch(tmp_path):
    _, run = saved(tmp_path)
    state = load_file(str(run / "model.safetensors"))
    key = next(k for k in state if k.startswith("heads.neck.classifier") and k.endswith("weight")
               and state[k].ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(run / "model.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(run)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")


def fake_checkpoint(folder):
    """Discovery only looks at the two file names, so empty files are enough."""
    folder.mkdir(parents=True)
    (folder / INFO_NAME).touch()
    (folder / WEIGHTS_NAME).touch()
    return folder


def test_checkpoint_discovery_takes_a_checkpoint_or_the_checkpoints_just_below_a_run_folder(tmp_path):
    single = fake_checkpoint(tmp_path / "single")
    assert find_checkpoint_dirs(single) == [single]
    run = tmp_path / "run"
    kurtis, men = fake_checkpoint(run / "kurtis"), fake_checkpoint(run / "men_tshirts")
    (run / "notes").mkdir()
    fake_checkpoint(run / "men_tshirts" / "nested")
    assert find_checkpoint_dirs(run) == [kurtis, men]
    assert find_checkpoint_dirs(str(run)) == [kurtis, men]


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: p.write_text("x"), lambda p: None],
                         ids=["empty folder", "file", "missing"])
def test_checkpoint_discovery_without_checkpoints_is_an_error(tmp_path, make):
    path = tmp_path / "run"
    make(path)
    with pytest.raises(CheckpointError, match="neither a checkpoint directory nor a folder of checkpoint"):
        find_checkpoint_dirs(path)


def test_a_format_1_checkpoint_written_by_the_convnext_only_code_still_loads_and_predicts_the_same():
    """tests/data/checkpoint_v1 was written by main at 344d1d7 (backbone = a bare ConvNextModel, its entry
    a ConvNextConfig without a family); expected_logits.json holds that model's outputs on a fixed input."""
    folder = Path(__file__).parent / "data" / "checkpoint_v1"
    model, info = load_checkpoint(folder)
    assert info.format_version == 1 and "family" not in info.backbone
    assert model.backbone.family == "hf-convnext"
    x = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    expected = json.loads((folder / "expected_logits.json").read_text())
    with torch.no_grad():
        for name, logits in model(x).items():
            torch.testing.assert_close(logits, torch.tensor(expected[name]), rtol=1e-5, atol=1e-6)


def test_new_checkpoints_store_the_backbone_family_and_its_normalisation(tmp_path):
    _, run = saved(tmp_path)
    stored = json.loads((run / INFO_NAME).read_text())
    assert stored["format_version"] == 2
    assert stored["backbone"]["family"] == "hf-convnext"
    assert stored["backbone"]["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]


def test_a_checkpoint_of_an_unknown_backbone_family_is_a_checkpoint_error(tmp_path):
    _, run = saved(tmp_path)
    stored = json.loads((run / INFO_NAME).read_text())
    stored["backbone"]["family"] = "hf-swin"
    (run / INFO_NAME).write_text(json.dumps(stored))
    with pytest.raises(CheckpointError, match="family 'hf-swin' is unknown; known: hf-convnext"):
        load_checkpoint(run)
