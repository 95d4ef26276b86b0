"""Hugging Face backbone families: ConvNeXt (V1, V2) and the ViT-style towers (CLIP, SigLIP, ViT, DINOv2).

Each class says which model class and config it wraps, which ``config.json`` ``model_type`` values it
reads, its default normalisation, and the source tensors it deliberately leaves out (a full CLIP
checkpoint's text tower, ViT's pooler, SigLIP's attention-pooling head, DINOv2's mask token): parts the
feature map never uses would get no gradient, which DDP refuses, and would only bloat the export.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    ConvNextConfig,
    ConvNextModel,
    ConvNextV2Config,
    ConvNextV2Model,
    Dinov2Config,
    Dinov2Model,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

from catalog.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from model_training.backbones.base import Backbone, BackboneError, PretrainedCfg, Triple

OPENAI_CLIP_MEAN: Triple = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: Triple = (0.26862954, 0.26130258, 0.27577711)
HALF: Triple = (0.5, 0.5, 0.5)


class HfBackbone(Backbone):
    model_class: ClassVar[type[PreTrainedModel]]
    config_class: ClassVar[type[PretrainedConfig]]
    model_types: ClassVar[tuple[str, ...]]
    """``model_type`` values in a ``config.json`` that this family loads."""
    default_mean: ClassVar[Triple] = IMAGENET_MEAN
    default_std: ClassVar[Triple] = IMAGENET_STD
    config_overrides: ClassVar[dict[str, Any]] = {}
    """Config values that leave out the parts the feature map does not use."""
    init_kwargs: ClassVar[dict[str, Any]] = {}
    unused_source_tensors: ClassVar[tuple[str, ...]] = ()
    """Patterns (``re.search``) of source tensors that are deliberately not loaded."""
    has_drop_path: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: dict[str, Any], pretrained_cfg: PretrainedCfg,
                    drop_path_rate: float | None = None) -> HfBackbone:
        """The architecture a stored config (or a preset's values) describes, random weights."""
        data = {k: v for k, v in config.items() if k != "transformers_version"}
        values = {**data, **cls.config_overrides, **cls.drop_path(drop_path_rate)}
        return cls(cls.model_class(cls.config_class.from_dict(values), **cls.init_kwargs), pretrained_cfg)

    @classmethod
    def build_kwargs(cls, drop_path_rate: float | None) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained``."""
        return {**cls.config_overrides, **cls.init_kwargs, **cls.drop_path(drop_path_rate)}

    @classmethod
    def drop_path(cls, rate: float | None) -> dict[str, Any]:
        if rate is None:
            return {}
        if not cls.has_drop_path:
            raise BackboneError(f"{cls.family} has no stochastic depth; drop --drop-path for this backbone")
        return {"drop_path_rate": rate}

    @classmethod
    def is_unused(cls, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in cls.unused_source_tensors)

    def architecture(self) -> dict[str, Any]:
        config = self.model.config
        assert isinstance(config, PretrainedConfig)
        return config.to_dict()

    @property
    def hf_config(self) -> Any:
        return self.model.config


class HfConvNext(HfBackbone):
    """ConvNeXt: the last stage's map with the final LayerNorm applied per location (Hugging Face applies
    it only to the pooled vector; this keeps the pretrained normalisation and gives it a gradient)."""

    family = "hf-convnext"
    model_class: ClassVar[type[PreTrainedModel]] = ConvNextModel
    config_class: ClassVar[type[PretrainedConfig]] = ConvNextConfig
    model_types = ("convnext",)
    has_drop_path = True
    channels_last_helps = True

    @property
    def num_features(self) -> int:
        return int(self.hf_config.hidden_sizes[-1])

    def ordered_blocks(self) -> list[nn.Module]:
        blocks: list[nn.Module] = [self.model.get_submodule("embeddings")]
        encoder: Any = self.model.get_submodule("encoder")
        for stage in encoder.stages:
            blocks += [stage.downsampling_layer, *stage.layers]
        return [*blocks, self.model.get_submodule("layernorm")]

    def forward_features(self, pixel_values: Tensor) -> Tensor:
        fmap = self.model(pixel_values).last_hidden_state
        layernorm = self.model.get_submodule("layernorm")
        return layernorm(fmap.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class HfConvNextV2(HfConvNext):
    """ConvNeXt-V2 (GRN layers, no layer scale): same outputs as V1, different blocks."""

    family = "hf-convnextv2"
    model_class = ConvNextV2Model
    config_class = ConvNextV2Config
    model_types = ("convnextv2",)


class HfTokenGrid(HfBackbone):
    """A ViT-style tower: patch tokens laid back onto their (H/patch, W/patch) grid.

    Prefix tokens (class token) are dropped rather than pooled into the map: the heads already pool
    (attention-weighted and plain average), and a class token has no location to put it at.
    """

    prefix_tokens: ClassVar[int] = 1

    @property
    def num_features(self) -> int:
        return int(self.hf_config.hidden_size)

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """(B, prefix + h*w, C) with the tower's final norm applied to every token."""
        return self.model(pixel_values, interpolate_pos_encoding=True).last_hidden_state

    def ordered_blocks(self) -> list[nn.Module]:
        # Children registered before the block list (embeddings, CLIP's pre-norm) are the stem, those after
        # it (the final norm) the top. transformers 4 nests the list in ``encoder`` (``layer`` or ``layers``);
        # transformers 5 flattened some towers (ViT: ``layers`` on the model itself).
        tower = getattr(self.model, "vision_model", self.model)
        encoder: Any = getattr(tower, "encoder", None)
        holder: Any = encoder if encoder is not None else tower
        layers: Any = getattr(holder, "layers", None) or holder.get_submodule("layer")
        anchor = encoder if encoder is not None else layers
        children = list(tower.children())
        at = next(i for i, child in enumerate(children) if child is anchor)
        return [*children[:at], *layers, *children[at + 1:]]

    def forward_features(self, pixel_values: Tensor) -> Tensor:
        patch = int(self.hf_config.patch_size)
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        tokens = self.tokens(pixel_values)[:, self.prefix_tokens:]
        return tokens.transpose(1, 2).unflatten(2, grid)


class HfClip(HfTokenGrid):
    """``CLIPVisionModel``, also the vision tower of a full ``CLIPModel`` directory (text tower ignored)."""

    family = "hf-clip"
    model_class = CLIPVisionModel
    config_class = CLIPVisionConfig
    model_types = ("clip", "clip_vision_model")
    default_mean, default_std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    default_lr = 1e-5
    unused_source_tensors = (r"^text_model\.", r"^text_projection\.", r"^visual_projection\.", r"^logit_scale$")

    def tokens(self, pixel_values: Tensor) -> Tensor:
        # Hugging Face applies post_layernorm to the class token only; here it normalises every token.
        hidden = self.model(pixel_values, interpolate_pos_encoding=True).last_hidden_state
        return self.post_layernorm(hidden)

    @property
    def post_layernorm(self) -> nn.Module:
        # transformers 5 flattened CLIPVisionModel; 4.x nests the tower under vision_model.
        nested = getattr(self.model, "vision_model", self.model)
        return nested.get_submodule("post_layernorm")


class HfSiglip(HfTokenGrid):
    """``SiglipVisionModel``, also the vision tower of a full ``SiglipModel`` directory. No class token;
    the attention-pooling head is left out (the heads pool)."""

    family = "hf-siglip"
    model_class = SiglipVisionModel
    config_class = SiglipVisionConfig
    model_types = ("siglip", "siglip_vision_model")
    default_mean, default_std = HALF, HALF
    default_lr = 1e-5
    prefix_tokens = 0
    config_overrides: ClassVar[dict[str, Any]] = {"vision_use_head": False}
    unused_source_tensors = (r"^text_model\.", r"(^|\.)head\.", r"^logit_(scale|bias)$")


class HfVit(HfTokenGrid):
    """``ViTModel`` without its pooler."""

    family = "hf-vit"
    model_class = ViTModel
    config_class = ViTConfig
    model_types = ("vit",)
    default_mean, default_std = HALF, HALF
    init_kwargs: ClassVar[dict[str, Any]] = {"add_pooling_layer": False}
    unused_source_tensors = (r"^pooler\.",)


class HfDinov2(HfTokenGrid):
    """``Dinov2Model`` without its mask token (always interpolates its position embeddings)."""

    family = "hf-dinov2"
    model_class = Dinov2Model
    config_class = Dinov2Config
    model_types = ("dinov2",)
    config_overrides: ClassVar[dict[str, Any]] = {"use_mask_token": False}
    unused_source_tensors = (r"^embeddings\.mask_token$",)
    has_drop_path = True

    def tokens(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values).last_hidden_state


HF_FAMILIES: tuple[type[HfBackbone], ...] = (HfConvNext, HfConvNextV2, HfClip, HfSiglip, HfVit, HfDinov2)
