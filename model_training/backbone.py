"""The backbone registry: which family a name, directory or stored checkpoint entry is, and building it.

Accepted names (``--backbone``):

- a named random-init preset (:data:`PRESETS`: ``convnext-base``, ``-tiny``, ``-atto``, ``-test``,
  ``vit-test``), for CPU demos and tests;
- a Hugging Face hub id or ``save_pretrained`` directory whose ``config.json`` is a supported architecture
  (:data:`~model_training.backbones.hf_families.HF_FAMILIES`: ConvNeXt, ConvNeXt-V2, CLIP, SigLIP, ViT,
  DINOv2), loaded strictly;
- ``open_clip:...`` or a directory with ``open_clip_config.json`` (the optional ``openclip`` extra).

Checkpoints store :meth:`Backbone.checkpoint_entry` (family, config, pretrained_cfg) so loading never
needs the hub. Entries without a family are this project's first checkpoints: ConvNeXt configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model_training.backbones.base import Backbone, BackboneError, PretrainedCfg
from model_training.backbones.hf_families import HF_FAMILIES, HfBackbone, HfConvNext, HfVit
from model_training.backbones.hf_loading import load_hf_backbone, read_hf_config
from model_training.backbones.open_clip_family import PREFIX, OpenClipBackbone, is_open_clip_dir, load_open_clip
from model_training.config import DEFAULT_BACKBONE

__all__ = ["DEFAULT_BACKBONE", "PRESETS", "Backbone", "BackboneError", "backbone_from_entry", "build_backbone"]


# Random-init sizes. atto matches timm's convnext_atto (hidden sizes 40/80/160/320, depths 2/2/6/2);
# the "-test" ones are the smallest things that still are their family, for unit tests on 2 CPU cores.
PRESETS: dict[str, tuple[type[HfBackbone], dict[str, Any]]] = {
    "convnext-base": (HfConvNext, {"hidden_sizes": [128, 256, 512, 1024], "depths": [3, 3, 27, 3]}),
    "convnext-tiny": (HfConvNext, {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3]}),
    "convnext-atto": (HfConvNext, {"hidden_sizes": [40, 80, 160, 320], "depths": [2, 2, 6, 2]}),
    "convnext-test": (HfConvNext, {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}),
    "vit-test": (HfVit, {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "image_size": 64, "patch_size": 16}),
}
ALL_FAMILIES: tuple[type[Backbone], ...] = (*HF_FAMILIES, OpenClipBackbone)
FAMILIES: dict[str, type[Backbone]] = {family.family: family for family in ALL_FAMILIES}
LEGACY_FAMILY = HfConvNext.family
"""Checkpoints written before backbones had families stored a ``ConvNextConfig`` only."""


def supported() -> str:
    """Every accepted form, for error messages."""
    model_types = ", ".join(t for family in HF_FAMILIES for t in family.model_types)
    return (f"Hugging Face model types {model_types}; {PREFIX}MODEL/TAG, {PREFIX}DIR or {PREFIX}hf-hub:ORG/REPO; "
            f"presets {', '.join(PRESETS)}")


def build_backbone(name: str, *, image_size: int | None = None, drop_path_rate: float | None = None) -> Backbone:
    """The backbone ``name`` stands for, pretrained weights all loaded (presets: random init).

    ``image_size`` is the training resolution: open_clip ViTs are built for it (Hugging Face ViT-style
    towers interpolate their position embeddings per call instead).
    """
    if name in PRESETS:
        family, values = PRESETS[name]
        backbone = family.from_config(values, PretrainedCfg(family.default_mean, family.default_std,
                                                            int(values.get("image_size", 224)),
                                                            f"{family.family} default (random-init preset)"),
                                      drop_path_rate=drop_path_rate)
        backbone.loaded_from = f"{family.family} preset {name!r}: random init"
        return backbone
    if name.startswith(PREFIX) or is_open_clip_dir(name):
        return load_open_clip(name.removeprefix(PREFIX), image_size, drop_path_rate)
    try:
        config = read_hf_config(name)
    except BackboneError as error:
        raise BackboneError(f"{error}; accepted: {supported()}") from None
    return load_hf_backbone(hf_family(config, name), name, drop_path_rate)


def hf_family(config: Mapping[str, Any], source: str) -> type[HfBackbone]:
    """The family whose ``model_type`` the config declares; an unsupported one is an error naming it."""
    model_type = config.get("model_type")
    for family in HF_FAMILIES:
        if model_type in family.model_types:
            return family
    architectures = ", ".join(config.get("architectures") or []) or "no architectures listed"
    raise BackboneError(f"{source}: architecture {model_type!r} ({architectures}) is not a supported backbone; "
                        f"supported: {supported()}")


def backbone_from_entry(entry: Mapping[str, Any]) -> Backbone:
    """Rebuild (random weights) the backbone a checkpoint's ``backbone`` entry describes, without the hub."""
    name = entry.get("family", LEGACY_FAMILY)
    family = FAMILIES.get(name)
    if family is None:
        raise BackboneError(f"checkpoint backbone family {name!r} is unknown; known: {', '.join(FAMILIES)}")
    stored = entry.get("pretrained_cfg")
    pretrained_cfg = PretrainedCfg.from_dict(stored) if stored else PretrainedCfg(source="checkpoint without one")
    return family.from_config(dict(entry["config"]), pretrained_cfg)
