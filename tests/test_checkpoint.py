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
