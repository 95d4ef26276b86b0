"""The open_clip family (optional ``openclip`` extra; skipped without it): a tiny ViT tower and a tiny timm
ConvNeXt tower, registered locally, load every vision tensor from a weights file or an open_clip
directory, give a spatial map at the training size, and are refused when the file does not fit."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_training.backbone import BackboneError, backbone_from_entry, build_backbone
from tests.backbone_dirs import OPEN_CLIP_CONFIGS, save_open_clip_dir, save_tiny_open_clip

pytest.importorskip("open_clip")

MAPS = {"tiny-vit-quickgelu": (32, 4, 4), "tiny-convnext": (320, 2, 2)}
"""(C, H, W) at 64 px: the ViT's 16 px patches, convnext_atto's 32x downsampling and 320 channels."""


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_CONFIGS))
def test_a_weights_file_loads_every_vision_tensor_and_gives_a_spatial_map(tmp_path, name):
    weights = save_tiny_open_clip(name, tmp_path)
    backbone = build_backbone(f"open_clip:{name}/{weights}", image_size=64)
    stored = load_file(str(weights))
    state = backbone.model.state_dict()
    for key, tensor in state.items():
        if key != "positional_embedding":  # resized from the native 32 px grid
            assert torch.equal(tensor, stored[f"visual.{key}"]), key
    assert "visual.proj" in stored or "visual.head.proj.weight" in stored  # pruned: the heads pool themselves
    assert backbone.family == "open-clip" and "text-tower tensors left out" in backbone.loaded_from
    assert backbone.pretrained_cfg.source.startswith("open_clip default")
    with torch.no_grad():
        assert tuple(backbone(torch.randn(2, 3, 64, 64)).shape) == (2, *MAPS[name])
    rebuilt = backbone_from_entry(backbone.checkpoint_entry("x"))
    shapes = {k: v.shape for k, v in backbone.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_an_open_clip_directory_brings_its_own_mean_and_std_with_or_without_the_prefix(tmp_path):
    folder = save_open_clip_dir("tiny-vit-quickgelu", tmp_path)
    for name in (str(folder), f"open_clip:{folder}"):
        cfg = build_backbone(name, image_size=64).pretrained_cfg
        assert (cfg.mean, cfg.std, cfg.input_size) == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), 32)
        assert "open_clip_config.json" in cfg.source


def test_a_file_missing_vision_tensors_is_refused_naming_them(tmp_path):
    weights = save_tiny_open_clip("tiny-vit-quickgelu", tmp_path)
    state = load_file(str(weights))
    del state["visual.ln_post.weight"]
    state["visual.extra"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(BackboneError, match=r"missing 1 tensor: ln_post.weight; unexpected 1 tensor: extra"):
        build_backbone(f"open_clip:tiny-vit-quickgelu/{weights}", image_size=64)


def test_a_truncated_file_and_an_unknown_tag_are_refused(tmp_path):
    weights = save_tiny_open_clip("tiny-vit-quickgelu", tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BackboneError, match="cannot read open_clip weights"):
        build_backbone(f"open_clip:tiny-vit-quickgelu/{weights}")
    with pytest.raises(BackboneError, match="'nope' is neither a pretrained tag of tiny-vit-quickgelu"):
        build_backbone("open_clip:tiny-vit-quickgelu/nope")
    with pytest.raises(BackboneError, match="open_clip model 'ViT-Q-99' is unknown"):
        build_backbone("open_clip:ViT-Q-99/x")


def test_stochastic_depth_goes_to_timm_towers_and_is_refused_for_vit_towers(tmp_path):
    convnext = save_tiny_open_clip("tiny-convnext", tmp_path)
    backbone = build_backbone(f"open_clip:tiny-convnext/{convnext}", drop_path_rate=0.3)
    assert backbone.architecture()["vision_cfg"]["timm_drop_path"] == 0.3
    vit = save_tiny_open_clip("tiny-vit-quickgelu", tmp_path)
    with pytest.raises(BackboneError, match="no stochastic depth"):
        build_backbone(f"open_clip:tiny-vit-quickgelu/{vit}", drop_path_rate=0.3)


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_CONFIGS))
def test_every_tower_parameter_gets_a_gradient_once_the_projection_is_pruned(tmp_path, name):
    backbone = build_backbone(f"open_clip:{name}/{save_tiny_open_clip(name, tmp_path)}", image_size=64)
    backbone.forward_features(torch.randn(1, 3, 64, 64)).square().mean().backward()
    assert [n for n, p in backbone.named_parameters() if p.grad is None] == []
