"""One classification head per attribute: channel attention, spatial attention, pooling, MLP.

The published solution's "spatial attention" was a conv stack whose output was average-pooled, so no
location was ever weighted more than another. Here the spatial branch produces one logit per location,
softmax-normalised over the map, and the pooled vector is the attention-weighted sum of the features:
a sleeve head can look at the sleeves. Everything is static-shape tensor algebra (ONNX-exportable).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SqueezeExcitation(nn.Module):
    """Channel attention: reweight channels by a gate computed from their global average."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class SpatialAttentionPool(nn.Module):
    """A learned weight per location (softmax over H*W) and the weighted sum of the feature map."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        # Depthwise 3x3 (neighbourhood context) then pointwise: ~C*(9 + hidden) weights instead of a dense
        # 3x3 conv's 9*C*hidden, which made the heads outweigh a small backbone several times over.
        self.score = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels),
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )

    def weights(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, H*W) attention weights summing to 1 per image."""
        return torch.softmax(self.score(x).flatten(1), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights(x)
        return torch.einsum("ncl,nl->nc", x.flatten(2), w)


class AttentionHead(nn.Module):
    """SE -> spatial attention pooling (concatenated with plain average pooling) -> MLP -> logits."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a head needs at least 2 classes, got {num_classes}")
        self.channel_attention = SqueezeExcitation(channels)
        self.spatial_attention = SpatialAttentionPool(channels, hidden=max(16, min(hidden, channels // 2)))
        # Average pooling alongside the attention pool keeps a global summary (colour of the whole
        # garment) available even when the attention map is sharp.
        self.classifier = nn.Sequential(
            nn.LayerNorm(2 * channels),
            nn.Dropout(dropout),
            nn.Linear(2 * channels, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, features: Tensor) -> Tensor:
        x = self.channel_attention(features)
        pooled = torch.cat([self.spatial_attention(x), x.mean(dim=(2, 3))], dim=1)
        return self.classifier(pooled)
