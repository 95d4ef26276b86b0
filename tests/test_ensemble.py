import numpy as np
import pytest
import torch
import torch.nn.functional as F

from catalog.decoding import AttributeCalibration, ConsistencyRule
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from model_training.backbone import build_backbone
from model_training.checkpoint import CheckpointError, load_checkpoint, make_info, save_checkpoint
from model_training.ensemble import Member, group_checkpoints, load_predictor
from model_training.model import CategoryModel, value_orders_for

MEN = load_taxonomy()["men_tshirts"]
SMALL = PreprocessSpec(height=32, width=32)  # ImageNet mean/std
LARGE = PreprocessSpec(height=48, width=48, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
RULE = ConsistencyRule("pattern", "solid", "print_or_pattern_type", "solid", 0.99, 30)


def save_member(folder, backbone: str, spec: PreprocessSpec, seed: int, **extra):
    torch.manual_seed(seed)
    model = CategoryModel(build_backbone(backbone), value_orders_for(MEN), head_hidden=16).eval()
    return save_checkpoint(folder, model, make_info(model, MEN, spec, backbone, **extra))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    calibration = {name: AttributeCalibration(2.0, tuple(float(i) for i in range(len(MEN.attribute(name).values))))
                   for name in MEN.attribute_names}
    a = save_member(root / "convnext" / "men_tshirts", "convnext-test", SMALL, 0, calibration=calibration,
                    rules=[RULE], metrics={"val_score": 0.5})
    b = save_member(root / "vit" / "men_tshirts", "vit-test", LARGE, 1, metrics={"val_score": 0.6})
    return a, b


def log_probs(logits: np.ndarray, calibration: AttributeCalibration) -> np.ndarray:
    z = calibration.apply(logits)
    return z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)


def test_a_member_renormalises_the_ensemble_input_to_its_own_mean_and_std():
    raw = torch.rand(2, 3, 32, 32)
    imagenet = (raw - torch.tensor(SMALL.mean).view(1, 3, 1, 1)) / torch.tensor(SMALL.std).view(1, 3, 1, 1)
    half = (raw - 0.5) / 0.5
    member = Member(torch.nn.Identity(), SMALL, PreprocessSpec(height=32, width=32, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert torch.allclose(member.adapt(half), imagenet, atol=1e-5)
    resized = Member(torch.nn.Identity(), SMALL, PreprocessSpec(height=64, width=64)).adapt(torch.ones(1, 3, 64, 64))
    assert resized.shape == (1, 3, 32, 32)


def test_the_ensemble_averages_each_members_calibrated_log_probabilities(members):
    loaded = load_predictor(members)
    (model_a, info_a), (model_b, _) = load_checkpoint(members[0]), load_checkpoint(members[1])
    assert loaded.info.preprocessing == LARGE  # the largest member's input and preprocessing
    assert loaded.info.calibration == {} and loaded.info.rules == [RULE]
    assert [m.image_size for m in loaded.members] == [(32, 32), (48, 48)]
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        got = loaded.model(x)
        small = (x * 0.5 + 0.5 - torch.tensor(SMALL.mean).view(1, 3, 1, 1)) / torch.tensor(SMALL.std).view(1, 3, 1, 1)
        out_a = model_a(F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False))
        out_b = model_b(x)
    for name in MEN.attribute_names:
        expected = (log_probs(out_a[name].numpy(), info_a.calibration[name])
                    + log_probs(out_b[name].numpy(), AttributeCalibration())) / 2
        assert np.abs(got[name].numpy() - expected).max() < 1e-4


def test_raw_logit_averaging_is_the_plain_mean(members):
    loaded = load_predictor(members[1:] + members[:1], combine="logits")
    (model_b, _) = load_checkpoint(members[1])
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        got, alone = loaded.model(x), model_b(x)
    assert loaded.info.preprocessing == LARGE
    assert not torch.allclose(got["color"], alone["color"])  # the other member counts


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror(members):
    loaded = load_predictor(members[:1], tta_flip=True)
    model, info = load_checkpoint(members[0])
    assert loaded.info.calibration == info.calibration and loaded.tta == "flip"  # raw logits: decoded as before
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, plain, mirrored = loaded.model(x), model(x), model(torch.flip(x, dims=[3]))
    assert torch.allclose(got["color"], (plain["color"] + mirrored["color"]) / 2, atol=1e-6)


def test_grouping_checkpoints_by_category_refuses_one_given_twice(members):
    a, b = members
    assert group_checkpoints([a.parent.parent / "convnext", b]) == {MEN.name: [a, b]}
    with pytest.raises(CheckpointError, match="given twice"):
        group_checkpoints([a, a.parent])


def test_members_must_agree_on_category_and_resize_mode(members, tmp_path):
    kurtis = load_taxonomy()["kurtis"]
    torch.manual_seed(0)
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(kurtis), head_hidden=16)
    other = save_checkpoint(tmp_path / "kurtis", model, make_info(model, kurtis, SMALL, "convnext-test"))
    with pytest.raises(CheckpointError, match="category 'Kurtis'"):
        load_predictor([members[0], other])
    letterbox = save_member(tmp_path / "lb", "convnext-test", PreprocessSpec(32, 32, resize="letterbox"), 2)
    with pytest.raises(CheckpointError, match="resize mode 'letterbox'"):
        load_predictor([members[0], letterbox])
    lanczos = save_member(tmp_path / "lz", "convnext-test", PreprocessSpec(16, 16, interpolation="lanczos"), 3)
    with pytest.raises(CheckpointError, match="'lanczos' interpolation"):
        load_predictor([members[0], lanczos])
