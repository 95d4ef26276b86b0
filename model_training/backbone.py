"""The ConvNeXt backbone: a Hugging Face hub id, a local ``save_pretrained`` directory, or a named
random-init size for CPU demos and tests.

The checkpoint stores the backbone's full ``ConvNextConfig`` so loading never needs the hub: the
architecture is rebuilt from the config and the trained weights come from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import ConvNextConfig, ConvNextModel

DEFAULT_BACKBONE = "facebook/convnext-base-384-22k-1k"

# Random-init sizes. atto matches timm's convnext_atto (hidden sizes 40/80/160/320, depths 2/2/6/2);
# "convnext-test" is the smallest thing that is still a ConvNeXt, for unit tests on 2 CPU cores.
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "convnext-base": {"hidden_sizes": [128, 256, 512, 1024], "depths": [3, 3, 27, 3]},
    "convnext-tiny": {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3]},
    "convnext-atto": {"hidden_sizes": [40, 80, 160, 320], "depths": [2, 2, 6, 2]},
    "convnext-test": {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
}


class BackboneError(ValueError):
    """A backbone name that is neither a named config, a local directory nor a loadable hub id."""


def build_backbone(name: str, *, drop_path_rate: float | None = None) -> ConvNextModel:
    """A ConvNeXt from a named config (random init), a local directory or a hub id (pretrained)."""
    if name in NAMED_CONFIGS:
        config = ConvNextConfig(**NAMED_CONFIGS[name])
        if drop_path_rate is not None:
            config.drop_path_rate = drop_path_rate
        return ConvNextModel(config)
    kwargs: dict[str, Any] = {}
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        model = ConvNextModel.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:
        where = "local directory" if Path(name).exists() else "hub id (the hub may be unreachable)"
        raise BackboneError(
            f"cannot load backbone {name!r} as a {where}: {error}; named random-init configs: "
            f"{', '.join(NAMED_CONFIGS)}"
        ) from None
    if not isinstance(model, ConvNextModel):
        raise BackboneError(f"{name!r} is not a ConvNeXt model (got {type(model).__name__})")
    return model


def backbone_config(model: ConvNextModel) -> dict[str, Any]:
    """The JSON-serialisable config stored in checkpoints."""
    return model.config.to_dict()


def backbone_from_config(config: dict[str, Any]) -> ConvNextModel:
    """Rebuild the architecture (random weights) from a stored config; the checkpoint fills the weights."""
    data = {k: v for k, v in config.items() if k not in ("transformers_version",)}
    return ConvNextModel(ConvNextConfig.from_dict(data))


def feature_channels(model: ConvNextModel) -> int:
    sizes = model.config.hidden_sizes
    if not sizes:
        raise BackboneError("backbone config has no hidden_sizes")
    return int(sizes[-1])
