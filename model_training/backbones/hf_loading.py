"""Hugging Face checkpoints (hub id or ``save_pretrained`` directory) loaded strictly into a family.

``from_pretrained`` with ``output_loading_info=True`` reports what did not load; anything missing,
unexpected (beyond the family's deliberately unused tensors) or wrongly shaped is refused, since Hugging
Face would otherwise initialise it randomly and train a different model without a word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import PretrainedConfig
from transformers.utils import cached_file

from model_training.backbones.base import BackboneError, PretrainedCfg, require_complete, triple
from model_training.backbones.hf_families import HfBackbone

PREPROCESSOR_CONFIG = "preprocessor_config.json"


def read_hf_config(name: str) -> dict[str, Any]:
    """``config.json`` of a directory or hub id, as a dict (no model class is chosen yet)."""
    try:
        return PretrainedConfig.get_config_dict(name)[0]
    except (OSError, ValueError) as error:
        where = "local directory" if Path(name).exists() else "hub id (the hub may be unreachable)"
        raise BackboneError(f"cannot read the config of backbone {name!r} as a {where}: {error}") from None


def load_hf_backbone(family: type[HfBackbone], name: str, drop_path_rate: float | None) -> HfBackbone:
    """The family's model with every tensor from ``name`` loaded, or a :class:`BackboneError` saying which
    did not."""
    try:
        loaded: Any = family.model_class.from_pretrained(
            name, output_loading_info=True, ignore_mismatched_sizes=True, **family.build_kwargs(drop_path_rate))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise BackboneError(f"cannot load the weights of {family.family} backbone {name!r}: {error}") from None
    model, info = loaded
    unused = [k for k in info["unexpected_keys"] if family.is_unused(k)]
    require_complete(
        name, family.family, missing=list(info["missing_keys"]),
        unexpected=[k for k in info["unexpected_keys"] if not family.is_unused(k)],
        mismatched=[f"{key} (file {tuple(found)}, model {tuple(wanted)})" for key, found, wanted in
                    info["mismatched_keys"]])
    backbone = family(model, pretrained_cfg(family, name, model.config))
    backbone.loaded_from = (f"{family.family} from {name}: all {len(model.state_dict())} backbone tensors loaded"
                            + (f", {len(unused)} unused ones left out" if unused else ""))
    return backbone


def pretrained_cfg(family: type[HfBackbone], name: str, config: Any) -> PretrainedCfg:
    """Mean/std from the checkpoint's own image processor config when it has one, else the family's."""
    input_size = int(getattr(config, "image_size", 224) or 224)
    path = cached_file(name, PREPROCESSOR_CONFIG, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)
    if path is not None:
        processor = json.loads(Path(path).read_text(encoding="utf-8"))
        if "image_mean" in processor and "image_std" in processor:
            return PretrainedCfg(triple(processor["image_mean"]), triple(processor["image_std"]), input_size,
                                 f"{PREPROCESSOR_CONFIG} of {name}")
    return PretrainedCfg(family.default_mean, family.default_std, input_size,
                         f"{family.family} default (no {PREPROCESSOR_CONFIG} with image_mean/image_std in {name})")
