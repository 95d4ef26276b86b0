"""The backbone interface, after timm's: ``forward_features`` gives a spatial map, ``pretrained_cfg`` says
how inputs must be normalised, and loading is all-or-nothing.

Every family gives a (B, C, H, W) feature map, CNNs natively and ViT-style towers by laying their patch
tokens back onto the patch grid, so the attention heads (which score locations) work unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from catalog.preprocessing import IMAGENET_MEAN, IMAGENET_STD

Triple = tuple[float, float, float]
SHOWN_KEYS = 5
"""How many tensor names an error quotes before it only counts the rest."""


class BackboneError(ValueError):
    """A backbone that cannot be built: unknown name, unsupported architecture, or weights that do not all
    load into the architecture (the message names what was found and what is supported)."""


@dataclass(frozen=True)
class PretrainedCfg:
    """What the pretrained weights expect of their inputs (timm's ``pretrained_cfg``, reduced to what
    preprocessing needs) and where that came from, for the log."""

    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    input_size: int = 224
    """Native (pretraining) resolution; other sizes work (ViT position embeddings are interpolated)."""
    source: str = "ImageNet default"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainedCfg:
        return cls(mean=triple(data["mean"]), std=triple(data["std"]), input_size=int(data["input_size"]),
                   source=str(data["source"]))


def triple(values: Sequence[float]) -> Triple:
    if len(values) != 3:
        raise BackboneError(f"expected 3 per-channel values, got {list(values)}")
    return (float(values[0]), float(values[1]), float(values[2]))


class Backbone(nn.Module, ABC):
    """A feature extractor wrapping a library model (``self.model``; its tensors are the checkpoint's
    ``backbone.model.*``)."""

    family: ClassVar[str]
    """The registry's name for this family, stored in checkpoints."""
    default_lr: ClassVar[float] = 1e-4
    """The T1 backbone learning rate when ``--lr`` is not given."""
    channels_last_helps: ClassVar[bool] = False
    """Whether the channels-last memory format applies (convolutional feature extractors)."""

    def __init__(self, model: nn.Module, pretrained_cfg: PretrainedCfg) -> None:
        super().__init__()
        self.model = model
        self.pretrained_cfg = pretrained_cfg
        self.loaded_from = "random init"
        """One line for the training log: where the weights came from and how many tensors loaded."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any], pretrained_cfg: PretrainedCfg) -> Backbone:
        """The architecture :meth:`architecture` described, random weights (a checkpoint fills them)."""

    @property
    @abstractmethod
    def num_features(self) -> int:
        """Channels of the feature map."""

    @abstractmethod
    def forward_features(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, H, W) normalised pixels -> (B, C, h, w) features, final normalisation applied per location."""

    @abstractmethod
    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable description that rebuilds this architecture without the hub."""

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.forward_features(pixel_values)

    def ordered_blocks(self) -> list[nn.Module]:
        """The tower's modules in depth order, input first: stem, every block, final norm (what layer-wise
        learning-rate decay assigns rates by). Parameters held directly by the tower, outside these (class
        and position embeddings), belong to the stem."""
        raise BackboneError(f"{self.family} does not list its blocks, so --llrd cannot apply to it")

    def checkpoint_entry(self, name: str) -> dict[str, Any]:
        """What a checkpoint stores about its backbone (``CheckpointInfo.backbone``)."""
        return {"name": name, "family": self.family, "config": self.architecture(),
                "pretrained_cfg": self.pretrained_cfg.to_dict()}


def quote_keys(label: str, keys: Sequence[str]) -> str:
    """``"missing 12 tensors: a, b, c, d, e, ..."``: the first few names and the count."""
    ordered = sorted(keys)
    shown = ", ".join(ordered[:SHOWN_KEYS]) + (", ..." if len(ordered) > SHOWN_KEYS else "")
    return f"{label} {len(ordered)} tensor{'s' if len(ordered) != 1 else ''}: {shown}"


def require_complete(source: str, family: str, *, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                     mismatched: Sequence[str] = ()) -> None:
    """Refuse weights that do not fill the architecture exactly (a partial load trains a different model)."""
    problems = [quote_keys(label, keys) for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", mismatched)) if keys]
    if problems:
        raise BackboneError(f"{source}: the weights do not match the {family} architecture built from its "
                            f"config; {'; '.join(problems)}")
