"""open_clip vision towers (the optional ``openclip`` extra): the competition winners' exact backbones.

Names, after ``open_clip:``:

- ``MODEL/TAG``: a model config open_clip knows (built in or added with ``open_clip.add_model_config``) and
  a pretrained tag (``ViT-H-14-quickgelu/dfn5b``, ``convnext_xxlarge/laion2b_s34b_b82k_augreg_soup``) or a
  local weights file (``ViT-B-16/path/to/open_clip_model.safetensors``);
- ``DIR``: a local open_clip directory (``open_clip_config.json`` + ``open_clip_model.safetensors``, what
  ``open_clip.push_to_hf_hub.save_for_hf`` writes); a plain directory holding ``open_clip_config.json`` is
  recognised without the prefix;
- ``hf-hub:ORG/REPO``: such a directory on the Hugging Face hub.

Only the vision tower is built, at the training resolution (the pretrained position embeddings are
resized once at load, as open_clip itself does), and its projection head is pruned: the heads pool the
feature map themselves. Supported towers: open_clip's ``VisionTransformer`` and timm ConvNeXt trunks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from model_training.backbones.base import Backbone, BackboneError, PretrainedCfg, require_complete, triple

PREFIX = "open_clip:"
CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")
VISUAL = "visual."


def open_clip_module() -> Any:
    try:
        import open_clip
    except ImportError as error:
        raise BackboneError(f"open_clip backbones need the optional extra: pip install -e '.[openclip]' ({error})"
                            ) from None
    return open_clip


@dataclass(frozen=True)
class OpenClipSource:
    """A resolved name: the model config, the weights file and the normalisation the weights expect."""

    model_cfg: dict[str, Any]
    weights: Path
    pretrained_cfg: PretrainedCfg


def is_open_clip_dir(name: str) -> bool:
    return (Path(name) / CONFIG_NAME).is_file()


def resolve(spec: str) -> OpenClipSource:
    """``MODEL/TAG``, ``MODEL/FILE``, ``DIR`` or ``hf-hub:ORG/REPO`` (without the ``open_clip:`` prefix)."""
    if spec.startswith("hf-hub:"):
        from huggingface_hub import snapshot_download

        spec = snapshot_download(spec.removeprefix("hf-hub:"), allow_patterns=[CONFIG_NAME, *WEIGHT_NAMES])
    if is_open_clip_dir(spec):
        return resolve_dir(Path(spec))
    open_clip = open_clip_module()
    model_name, _, pretrained = spec.partition("/")
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise BackboneError(f"open_clip model {model_name!r} is unknown (neither built in nor added with "
                            f"open_clip.add_model_config) and {spec!r} is not an open_clip directory")
    native = int(model_cfg["vision_cfg"].get("image_size", 224))
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if tag_cfg:
        weights = Path(open_clip.download_pretrained(tag_cfg))
        origin = f"open_clip pretrained config of {model_name}/{pretrained}"
    elif pretrained and Path(pretrained).is_file():
        weights, origin = Path(pretrained), "open_clip default (a weights file carries no preprocessing config)"
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise BackboneError(f"open_clip:{spec}: {pretrained!r} is neither a pretrained tag of {model_name} "
                            f"({', '.join(tags) or 'none'}) nor a weights file")
    mean = tag_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = tag_cfg.get("std", open_clip.OPENAI_DATASET_STD)
    return OpenClipSource(model_cfg, weights, PretrainedCfg(triple(mean), triple(std), native, origin))


def resolve_dir(folder: Path) -> OpenClipSource:
    open_clip = open_clip_module()
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    weights = next((folder / name for name in WEIGHT_NAMES if (folder / name).is_file()), None)
    if weights is None:
        raise BackboneError(f"{folder}: no open_clip weights file (looked for {', '.join(WEIGHT_NAMES)})")
    model_cfg = config["model_cfg"]
    preprocess = config.get("preprocess_cfg") or {}
    origin = f"{CONFIG_NAME} of {folder}" if "mean" in preprocess else "open_clip default"
    return OpenClipSource(model_cfg, weights, PretrainedCfg(
        triple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        triple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),
        int(model_cfg["vision_cfg"].get("image_size", 224)), origin))


def tower_config(model_cfg: dict[str, Any], image_size: int | None, drop_path_rate: float | None) -> dict[str, Any]:
    """What :func:`build_tower` needs, at the training resolution and stochastic depth."""
    vision_cfg = dict(model_cfg["vision_cfg"])
    if vision_cfg.get("attentional_pool") or isinstance(vision_cfg.get("layers"), list):
        raise BackboneError("open_clip towers with attentional pooling or ModifiedResNet layers are not supported; "
                            "supported: VisionTransformer and timm ConvNeXt towers")
    if image_size is not None:
        vision_cfg["image_size"] = image_size
    if drop_path_rate is not None:
        if not vision_cfg.get("timm_model_name"):
            raise BackboneError("open_clip VisionTransformer towers have no stochastic depth; drop --drop-path")
        vision_cfg["timm_drop_path"] = drop_path_rate
    return {"embed_dim": model_cfg["embed_dim"], "quick_gelu": bool(model_cfg.get("quick_gelu", False)),
            "vision_cfg": vision_cfg}


def build_tower(config: dict[str, Any]) -> nn.Module:
    """The full vision tower (projection included, so a weights file can be checked against it)."""
    open_clip_module()
    # _build_vision_tower is what open_clip's own CLIP class calls; it has kept this signature since 2.0.
    from open_clip.model import _build_vision_tower
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    tower = _build_vision_tower(config["embed_dim"], config["vision_cfg"], config["quick_gelu"])
    trunk = getattr(tower, "trunk", None)
    if not (isinstance(tower, VisionTransformer) or (isinstance(tower, TimmModel) and is_timm_convnext(trunk))):
        raise BackboneError(f"open_clip tower {type(tower).__name__}({type(trunk).__name__ if trunk else ''}) is "
                            "not supported; supported: VisionTransformer and timm ConvNeXt towers")
    return tower


def is_timm_convnext(trunk: object) -> bool:
    from timm.models.convnext import ConvNeXt

    return isinstance(trunk, ConvNeXt)


def prune_head(tower: nn.Module) -> nn.Module:
    """Drop the projection to the joint embedding (unused by the feature map, so no gradient: DDP refuses)."""
    if hasattr(tower, "trunk"):
        tower.head = nn.Identity()
    else:
        tower.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)  # type: ignore[operator]
    return tower


def load_tower_weights(tower: nn.Module, weights: Path) -> int:
    """Every ``visual.*`` tensor of ``weights`` into ``tower``, or a :class:`BackboneError`; returns how many
    text-tower (unused) tensors the file also held."""
    from open_clip.factory import load_state_dict
    from open_clip.model import resize_pos_embed

    try:
        state = load_state_dict(str(weights))
    except Exception as error:  # safetensors, pickle and zip errors share no base class
        raise BackboneError(f"cannot read open_clip weights {weights}: {error}") from None
    visual = {k: v for k, v in state.items() if k.startswith(VISUAL)}
    resize_pos_embed(visual, SimpleNamespace(visual=tower))
    visual = {k.removeprefix(VISUAL): v for k, v in visual.items()}
    expected = tower.state_dict()
    require_complete(str(weights), OpenClipBackbone.family, missing=sorted(set(expected) - set(visual)),
                     unexpected=sorted(set(visual) - set(expected)),
                     mismatched=[f"{k} (file {tuple(visual[k].shape)}, model {tuple(v.shape)})"
                                 for k, v in expected.items() if k in visual and visual[k].shape != v.shape])
    tower.load_state_dict(visual, strict=True)
    return len(state) - len(visual)


class OpenClipBackbone(Backbone):
    family = "open-clip"
    default_lr = 1e-5

    @classmethod
    def from_config(cls, config: dict[str, Any], pretrained_cfg: PretrainedCfg) -> OpenClipBackbone:
        return cls(prune_head(build_tower(config)), pretrained_cfg, config)

    def __init__(self, model: nn.Module, pretrained_cfg: PretrainedCfg, config: dict[str, Any]) -> None:
        super().__init__(model, pretrained_cfg)
        self.config = config

    def architecture(self) -> dict[str, Any]:
        return self.config

    @property
    def tower(self) -> Any:
        """The open_clip module, untyped (open_clip has no type hints)."""
        return self.model

    @property
    def num_features(self) -> int:
        trunk = getattr(self.tower, "trunk", None)
        return int(trunk.num_features if trunk is not None else self.tower.transformer.width)

    def ordered_blocks(self) -> list[nn.Module]:
        trunk = getattr(self.tower, "trunk", None)
        if trunk is not None:  # timm ConvNeXt: stem, each stage's downsample and blocks, the head's norm
            blocks: list[nn.Module] = [trunk.stem]
            for stage in trunk.stages:
                blocks += [stage.downsample, *stage.blocks]
            return [*blocks, trunk.norm_pre, trunk.head]
        tower = self.tower  # VisionTransformer; class and position embeddings are direct parameters (stem)
        return [tower.conv1, tower.ln_pre, *tower.transformer.resblocks, tower.ln_post]

    def forward_features(self, pixel_values: Tensor) -> Tensor:
        trunk = getattr(self.tower, "trunk", None)
        if trunk is not None:
            # timm ConvNeXt: its head norm (a LayerNorm2d) applied per location, as for Hugging Face ConvNeXt.
            return trunk.head.norm(trunk.forward_features(pixel_values))
        out = self.tower.forward_intermediates(pixel_values, indices=1, normalize_intermediates=True,
                                               intermediates_only=True)
        features: Tensor = out["image_intermediates"][-1]
        return features


def load_open_clip(spec: str, image_size: int | None, drop_path_rate: float | None) -> OpenClipBackbone:
    """The vision tower ``spec`` names, every tensor loaded from its weights file."""
    source = resolve(spec)
    config = tower_config(source.model_cfg, image_size, drop_path_rate)
    tower = build_tower(config)
    with torch.no_grad():
        unused = load_tower_weights(tower, source.weights)
    loaded = len(tower.state_dict())
    backbone = OpenClipBackbone(prune_head(tower), source.pretrained_cfg, config)
    backbone.loaded_from = (f"open-clip from {source.weights}: all {loaded} vision tower tensors loaded, "
                            f"{unused} text-tower tensors left out, projection head pruned")
    return backbone
