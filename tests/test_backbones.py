"""model_training/backbone.py and backbones/: every Hugging Face family loads through the real
``from_pretrained`` path with every tensor, gives a (B, C, H, W) map and its own mean/std; whatever does
not load completely is refused, naming the problem."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from catalog.preprocessing import IMAGENET_MEAN
from model_training.backbone import PRESETS, BackboneError, backbone_from_entry, build_backbone
from model_training.backbones.hf_families import HALF, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from model_training.train import main
from tests.backbone_dirs import FAMILY_OF, save_tiny
from tests.tiny_catalog import TINY, make_catalog

GRID = {"hf-convnext": (32, 2, 2), "hf-convnextv2": (32, 2, 2)}
"""Feature map (C, H, W) at 64 px: ConvNeXt downsamples 32x; the ViT-style ones have 32 channels on a
4x4 patch grid (64 / 16)."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    return {kind: save_tiny(kind, folder) for kind in FAMILY_OF}


@pytest.mark.parametrize("kind", sorted(FAMILY_OF))
def test_every_family_loads_every_saved_tensor_and_gives_a_spatial_map(saved, kind):
    backbone = build_backbone(str(saved[kind]))
    assert backbone.family == FAMILY_OF[kind]
    state = backbone.model.state_dict()
    stored = list(load_file(str(saved[kind] / "model.safetensors")).values())
    # every tensor of the built tower is one of the file's (which may hold a text tower too), found by value
    for key, tensor in state.items():
        if tensor.is_floating_point():
            assert any(s.shape == tensor.shape and torch.equal(s, tensor) for s in stored), key
    assert f"all {len(state)} backbone tensors loaded" in backbone.loaded_from
    with torch.no_grad():
        features = backbone.forward_features(torch.randn(2, 3, 64, 64))
    assert tuple(features.shape) == (2, *GRID.get(backbone.family, (32, 4, 4)))
    assert features.shape[1] == backbone.num_features


def test_vit_style_towers_run_at_other_sizes_by_interpolating_position_embeddings(saved):
    backbone = build_backbone(str(saved["clip"])).eval()
    with torch.no_grad():
        assert tuple(backbone(torch.randn(1, 3, 96, 128)).shape) == (1, 32, 6, 8)


@pytest.mark.parametrize(("kind", "mean", "std"), [
    ("clip", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), ("siglip", HALF, HALF), ("vit", HALF, HALF),
    ("convnext", IMAGENET_MEAN, None), ("dinov2", IMAGENET_MEAN, None)])
def test_without_a_preprocessor_config_the_family_default_normalisation_is_used(saved, kind, mean, std):
    cfg = build_backbone(str(saved[kind])).pretrained_cfg
    assert cfg.mean == mean and (std is None or cfg.std == std)
    assert "default" in cfg.source and cfg.input_size in (64, 224)


def test_the_preprocessor_config_in_the_directory_decides_mean_and_std(tmp_path):
    folder = save_tiny("clip_vision", tmp_path)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                 "image_std": [0.4, 0.5, 0.6]}))
    cfg = build_backbone(str(folder)).pretrained_cfg
    assert (cfg.mean, cfg.std, cfg.input_size) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 64)
    assert "preprocessor_config.json" in cfg.source


@pytest.mark.parametrize("kind", sorted(FAMILY_OF))
def test_a_checkpoint_entry_rebuilds_the_same_architecture_without_the_source(saved, kind):
    backbone = build_backbone(str(saved[kind]))
    entry = json.loads(json.dumps(backbone.checkpoint_entry(str(saved[kind]))))
    rebuilt = backbone_from_entry(entry)
    assert type(rebuilt) is type(backbone) and rebuilt.pretrained_cfg == backbone.pretrained_cfg
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in backbone.state_dict().items()}


def test_presets_are_random_init_and_vit_test_is_a_vit():
    assert set(PRESETS) >= {"convnext-base", "convnext-tiny", "convnext-atto", "convnext-test", "vit-test"}
    vit = build_backbone("vit-test")
    assert vit.family == "hf-vit" and "random init" in vit.loaded_from
    assert tuple(vit(torch.randn(1, 3, 64, 64)).shape) == (1, 32, 4, 4)


@pytest.mark.parametrize(("kind", "found"), [("bert", "'bert' (BertModel)"), ("swin", "'swin' (SwinModel)")])
def test_an_unsupported_architecture_is_refused_naming_it_and_the_supported_ones(tmp_path, kind, found):
    with pytest.raises(BackboneError, match="is not a supported backbone") as error:
        build_backbone(str(save_tiny(kind, tmp_path)))
    assert found in str(error.value)
    assert "convnextv2" in str(error.value) and "clip" in str(error.value) and "open_clip:" in str(error.value)


def test_v2_weights_under_a_v1_config_are_refused_naming_the_tensors(tmp_path):
    folder = save_tiny("convnextv2", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "convnext",
                                                    "architectures": ["ConvNextModel"]}))
    with pytest.raises(BackboneError) as error:
        build_backbone(str(folder))
    message = str(error.value)
    assert "hf-convnext architecture" in message
    assert "missing 4 tensors: encoder.stages.0.layers.0.layer_scale_parameter" in message
    assert "unexpected 8 tensors: encoder.stages.0.layers.0.grn.bias" in message and ", ..." in message


def test_a_truncated_weights_file_is_refused(tmp_path):
    weights = save_tiny("vit", tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(BackboneError, match=r"cannot load the weights of hf-vit backbone .*deserializing header"):
        build_backbone(str(weights.parent))


def test_a_wrongly_shaped_tensor_is_refused_naming_both_shapes(tmp_path):
    weights = save_tiny("dinov2", tmp_path) / "model.safetensors"
    state = load_file(str(weights))
    state["layernorm.weight"] = torch.ones(7)
    save_file(state, str(weights), metadata={"format": "pt"})
    shapes = r"wrongly shaped 1 tensor: layernorm.weight \(file \(7,\), model \(32,\)\)"
    with pytest.raises(BackboneError, match=shapes):
        build_backbone(str(weights.parent))


def test_a_missing_directory_names_the_accepted_forms(tmp_path):
    with pytest.raises(BackboneError, match=r"cannot read the config .* accepted: .*convnext-atto"):
        build_backbone(str(tmp_path / "nope"))


def test_drop_path_on_a_family_without_stochastic_depth_is_an_error(saved):
    with pytest.raises(BackboneError, match="hf-clip has no stochastic depth"):
        build_backbone(str(saved["clip"]), drop_path_rate=0.1)
    assert build_backbone(str(saved["dinov2"]), drop_path_rate=0.1).model.config.drop_path_rate == 0.1


def test_the_training_cli_refuses_an_unsupported_backbone_with_a_message_not_a_traceback(tmp_path, capsys):
    root = make_catalog(tmp_path / "catalog", n_train=8, n_test=2)
    bert = save_tiny("bert", tmp_path)
    capsys.readouterr()  # save_pretrained's progress bar
    code = main(["--data", str(root), "--category", "men_tshirts", "--out", str(tmp_path / "run"), *TINY,
                 "--backbone", str(bert)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: backbone {str(bert)!r}: ") and "'bert'" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", sorted(FAMILY_OF))
def test_every_backbone_parameter_gets_a_gradient_from_the_feature_map(saved, kind):
    """DDP refuses parameters without a gradient: the left-out parts (text tower, pooler, ...) must be gone."""
    backbone = build_backbone(str(saved[kind]))
    backbone.forward_features(torch.randn(1, 3, 64, 64)).square().mean().backward()
    assert [n for n, p in backbone.named_parameters() if p.grad is None] == []
