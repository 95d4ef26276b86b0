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
