"""Tiny random-init backbones of every supported family (and a few unsupported ones), written with
``save_pretrained`` the way a downloaded hub snapshot looks: hidden size 32, two layers, patch 16 at 64 px,
so each loads and runs in well under a second."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    ConvNextConfig,
    ConvNextModel,
    ConvNextV2Config,
    ConvNextV2Model,
    Dinov2Config,
    Dinov2Model,
    PreTrainedModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    SwinConfig,
    SwinModel,
    ViTConfig,
    ViTModel,
)

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 64, "patch_size": 16}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "vocab_size": 100}
CONVNEXT = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}

MODELS: dict[str, Callable[[], PreTrainedModel]] = {
    "convnext": lambda: ConvNextModel(ConvNextConfig(**CONVNEXT)),
    "convnextv2": lambda: ConvNextV2Model(ConvNextV2Config(**CONVNEXT)),
    "clip": lambda: CLIPModel(CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16)),
    "clip_vision": lambda: CLIPVisionModel(CLIPVisionConfig(**VISION)),
    "siglip": lambda: SiglipModel(SiglipConfig(vision_config=VISION, text_config=TEXT)),
    "siglip_vision": lambda: SiglipVisionModel(SiglipVisionConfig(**VISION)),
    "vit": lambda: ViTModel(ViTConfig(**VISION)),
    "dinov2": lambda: Dinov2Model(Dinov2Config(**{k: v for k, v in VISION.items() if k != "intermediate_size"},
                                               mlp_ratio=2)),
    "bert": lambda: BertModel(BertConfig(**TEXT)),
    "swin": lambda: SwinModel(SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 2], image_size=64)),
}
FAMILY_OF = {"convnext": "hf-convnext", "convnextv2": "hf-convnextv2", "clip": "hf-clip", "clip_vision": "hf-clip",
             "siglip": "hf-siglip", "siglip_vision": "hf-siglip", "vit": "hf-vit", "dinov2": "hf-dinov2"}
"""The supported ones and the family the registry must choose for each."""


def save_tiny(kind: str, folder: Path, seed: int = 0) -> Path:
    """``folder/kind``: a ``save_pretrained`` directory of a tiny random-init ``kind`` model."""
    import torch

    torch.manual_seed(seed)
    model = MODELS[kind]()
    with torch.no_grad():
        # Distinct values in every tensor (LayerNorms start as all ones), so a test can find each loaded
        # tensor in the file by value: transformers renames some on load (DINOv2's query -> q_proj).
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    path = folder / kind
    model.save_pretrained(path)
    return path


OPEN_CLIP_TEXT = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
OPEN_CLIP_CONFIGS = {
    # native 32 px: loading at 64 px exercises the position-embedding resize
    "tiny-vit-quickgelu": {"embed_dim": 16, "quick_gelu": True, "text_cfg": OPEN_CLIP_TEXT, "vision_cfg": {
        "image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16}},
    "tiny-convnext": {"embed_dim": 16, "text_cfg": OPEN_CLIP_TEXT, "vision_cfg": {
        "timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear",
        "timm_drop": 0.0, "timm_drop_path": 0.1, "image_size": 64}},
}
"""The shapes of the winners' towers (ViT-H-14-quickgelu, convnext_xxlarge), shrunk to test size."""


def save_tiny_open_clip(name: str, folder: Path, seed: int = 0) -> Path:
    """Register ``name`` with open_clip (from :data:`OPEN_CLIP_CONFIGS`), create it with random weights and
    write its state dict to ``folder/name.safetensors``: what a downloaded open_clip checkpoint holds."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(OPEN_CLIP_CONFIGS[name]))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return weights


def save_open_clip_dir(name: str, folder: Path, mean: tuple[float, float, float] = (0.5, 0.4, 0.3)) -> Path:
    """``folder/name/``: the layout of an open_clip hub repository (``open_clip_config.json`` with model and
    preprocessing configs, ``open_clip_model.safetensors``)."""
    import json

    directory = folder / name
    directory.mkdir(parents=True)
    save_tiny_open_clip(name, folder).rename(directory / "open_clip_model.safetensors")
    config = {"model_cfg": OPEN_CLIP_CONFIGS[name], "preprocess_cfg": {"mean": list(mean), "std": [0.2, 0.2, 0.2]}}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    return directory
