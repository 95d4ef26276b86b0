"""The per-category model: a backbone (any family, see :mod:`model_training.backbone`) and one attention
head per attribute.

``forward(pixel_values[N, 3, H, W]) -> dict[attribute name -> logits[N, K_attr]]``, keys in the
taxonomy's attribute order (also :attr:`CategoryModel.attribute_names`), logits in the head's value
order (:attr:`CategoryModel.value_orders`). ``torch.onnx.export`` flattens the dict into outputs in
that same order. The interface follows timm's spirit: :meth:`features`, :meth:`forward_heads`,
:meth:`reset_heads`, :meth:`freeze_backbone`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from catalog.taxonomy import Category
from model_training.backbones.base import Backbone
from model_training.heads import AttentionHead


def value_orders_for(category: Category) -> dict[str, tuple[str, ...]]:
    """Head value order = the taxonomy's order (most frequent first), attributes in taxonomy order."""
    return {a.name: a.values for a in category.attributes}


class CategoryModel(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        value_orders: Mapping[str, Sequence[str]],
        *,
        head_hidden: int = 256,
        head_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_hidden = head_hidden
        self.head_dropout = head_dropout
        self.heads = nn.ModuleDict()
        self.value_orders: dict[str, tuple[str, ...]] = {}
        self.reset_heads(value_orders)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self.value_orders)

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def reset_heads(self, value_orders: Mapping[str, Sequence[str]]) -> None:
        """Replace every head with a fresh one per attribute (e.g. to reuse a backbone for a new category)."""
        if not value_orders:
            raise ValueError("a model needs at least one attribute head")
        self.value_orders = {name: tuple(values) for name, values in value_orders.items()}
        self.heads = nn.ModuleDict(
            {
                name: AttentionHead(self.num_features, len(values), self.head_hidden, self.head_dropout)
                for name, values in self.value_orders.items()
            }
        )

    def freeze_backbone(self, frozen: bool = True) -> None:
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(not frozen)

    def features(self, pixel_values: Tensor) -> Tensor:
        """(N, 3, H, W) -> the backbone's final feature map (N, C, h, w), normalised per location."""
        return self.backbone.forward_features(pixel_values)

    @staticmethod
    def pooled(features: Tensor) -> Tensor:
        """Global average of a feature map: the vector the MMD term compares across domains."""
        return features.mean(dim=(2, 3))

    def forward_heads(self, features: Tensor) -> dict[str, Tensor]:
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, pixel_values: Tensor) -> dict[str, Tensor]:
        return self.forward_heads(self.features(pixel_values))
