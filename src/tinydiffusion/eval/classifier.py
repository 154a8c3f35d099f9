"""The feature classifier behind `fd_classifier`: a small VGG-style CNN whose penultimate layer is the feature
space in which samples are compared with a dataset's test split (the MNIST analogue of Inception's pool3)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FeatureClassifier(nn.Module):
    """(Conv3x3-BN-ReLU)x2 + max-pool per width, adaptive 4x4 average pool, Linear -> ReLU features, Linear logits.
    Input: images (N, C, H, W) in [-1, 1], any H, W >= 8 (28x28 digits and 32x32 colour use the same head)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (32, 64),
                 feature_dim: int = 128, dropout: float = 0.25):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.body = nn.Sequential(*layers)
        # 7x7 (28 px) or 8x8 (32 px) -> 4x4, so one head serves every dataset size
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(c * 16, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, feature_dim) penultimate activations (post-ReLU)."""
        h = self.pool(self.body(x)).flatten(1)  # (N, c, 4, 4) -> (N, 16c)
        return F.relu(self.fc(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, num_classes) logits."""
        return self.head(self.dropout(self.features(x)))


def classifier_architecture(in_channels: int, num_classes: int) -> dict:
    """The architecture stored beside the weights: small enough to train on a 2-core CPU; wider for colour."""
    widths = [32, 64] if in_channels == 1 else [64, 128]
    return dict(name="feature-cnn", in_channels=in_channels, num_classes=num_classes, widths=widths,
                feature_dim=128 if in_channels == 1 else 256)


def build_classifier(arch: dict) -> FeatureClassifier:
    """A FeatureClassifier from an architecture dict (as written by classifier_architecture)."""
    return FeatureClassifier(arch["in_channels"], arch["num_classes"], tuple(arch["widths"]), arch["feature_dim"])
