"""The course's minimal U-Net ("seed" capstone network), kept layer for layer for fidelity to the lesson."""
from __future__ import annotations

import torch
import torch.nn as nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """(Conv3x3 -> BatchNorm -> ReLU) x 2."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class SeedUNet(nn.Module):
    """Encoder 1->32 (28x28) -> 64 (14x14) -> 128 (7x7), bottleneck 256 at 7x7 with the time embedding
    added to its first 128 channels, decoder with skips from the first two levels. ~1.8M parameters."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.enc1, self.enc2, self.enc3 = conv_block(in_channels, 32), conv_block(32, 64), conv_block(64, 128)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(128, 256)
        self.time_mlp = nn.Sequential(nn.Linear(1, 128), nn.ReLU(), nn.Linear(128, 128))
        self.up1, self.dec1 = nn.ConvTranspose2d(256, 128, 2, stride=2), conv_block(128 + 64, 128)
        self.up2, self.dec2 = nn.ConvTranspose2d(128, 64, 2, stride=2), conv_block(64 + 32, 64)
        self.head = nn.Sequential(nn.Conv2d(64, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, in_channels, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        e1 = self.enc1(x)  # (B, 32, 28, 28)
        e2 = self.enc2(self.pool(e1))  # (B, 64, 14, 14)
        e3 = self.enc3(self.pool(e2))  # (B, 128, 7, 7)
        b = self.bottleneck(e3)  # (B, 256, 7, 7)
        t_emb = self.time_mlp(t.float()[:, None])  # (B,) -> (B, 128); t is continuous time, the lesson's t/T
        b = torch.cat([b[:, :128] + t_emb[:, :, None, None], b[:, 128:]], dim=1)
        d1 = self.dec1(torch.cat([self.up1(b), e2], dim=1))  # (B, 128, 14, 14)
        d2 = self.dec2(torch.cat([self.up2(d1), e1], dim=1))  # (B, 64, 28, 28)
        return self.head(d2)
