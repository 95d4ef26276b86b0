import pytest
import torch

import model_training.optim as optim
from model_training.backbone import build_backbone
from model_training.optim import (
    OptionError,
    backbone_lr,
    backbone_param_groups,
    check_channels_last,
    compiled,
    ema_updater,
    make_ema,
)
from model_training.train import main
from tests.backbone_dirs import save_tiny
from tests.tiny_catalog import TINY, make_catalog


@pytest.mark.parametrize("kind", ["convnext-test", "vit-test", "convnextv2", "clip", "siglip", "dinov2"])
def test_layer_decay_gives_every_parameter_one_rate_falling_from_the_top_block_to_the_stem(kind, tmp_path):
    backbone = build_backbone(kind if kind.endswith("-test") else str(save_tiny(kind, tmp_path)))
    blocks = backbone.ordered_blocks()
    assert len(blocks) >= 4
    groups = backbone_param_groups(backbone, 1e-3, 0.5)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in backbone.parameters())  # each exactly once
    rates = [g["lr"] for g in groups]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(1e-3) and rates[0] < rates[-1]
    last_block = {id(p) for p in blocks[-2].parameters()}
    assert any(last_block & {id(p) for p in g["params"]} for g in groups if g["lr"] == pytest.approx(5e-4))


def test_no_decay_is_one_group_and_a_decay_outside_0_1_is_refused():
    backbone = build_backbone("convnext-test")
    assert len(backbone_param_groups(backbone, 1e-4, 1.0)) == 1
    with pytest.raises(OptionError, match="--llrd"):
        backbone_param_groups(backbone, 1e-4, 1.5)


def test_contrastive_towers_default_to_a_smaller_backbone_learning_rate(tmp_path):
    assert backbone_lr(build_backbone(str(save_tiny("clip", tmp_path))), None) == 1e-5
    assert backbone_lr(build_backbone(str(save_tiny("siglip", tmp_path))), None) == 1e-5
    assert backbone_lr(build_backbone("convnext-test"), None) == 1e-4
    assert backbone_lr(build_backbone(str(save_tiny("clip", tmp_path / "b"))), 3e-4) == 3e-4


def test_the_ema_moves_toward_the_weights_by_its_decay():
    model = torch.nn.Linear(2, 1)
    ema = make_ema(model, 0.75)
    assert ema is not None and make_ema(model, 0.0) is None
    update = ema_updater(ema, model)
    assert update is not None
    start = model.weight.detach().clone()
    update()  # the first update copies the weights
    with torch.no_grad():
        model.weight.add_(4.0)
    update()
    assert torch.allclose(ema.module.weight, start + 0.25 * 4.0)
    with pytest.raises(OptionError, match="--ema-decay"):
        make_ema(model, 1.0)


def test_channels_last_and_compile_are_refused_where_they_cannot_apply(monkeypatch):
    check_channels_last(build_backbone("convnext-test"))
    with pytest.raises(OptionError, match="hf-vit is not one"):
        check_channels_last(build_backbone("vit-test"))
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(OptionError, match="not supported on this platform"):
        compiled(torch.nn.Linear(2, 1), torch.device("cpu"))
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: True)
    monkeypatch.setattr(optim.shutil, "which", lambda name: None)
    with pytest.raises(OptionError, match="C\\+\\+ compiler"):
        compiled(torch.nn.Linear(2, 1), torch.device("cpu"))


def test_training_with_layer_decay_ema_and_channels_last(tmp_path, capsys):
    root = make_catalog(tmp_path / "data", n_train=24, n_test=4)
    args = ["--data", str(root), "--category", "men_tshirts", "--epochs-t1", "2", "--epochs-t2", "1", *TINY]
    assert main([*args, "--out", str(tmp_path / "run"), "--llrd", "0.8", "--ema-decay", "0.9",
                 "--channels-last"]) == 0
    assert "layer decay 0.8, EMA decay 0.9" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "vit"), "--backbone", "vit-test", "--channels-last"]) == 2
    assert "hf-vit is not one" in capsys.readouterr().err
