"""A small convolutional VAE (Kingma & Welling 2014), the course's previous generative model, as the baseline that
diffusion is compared against: one decoder pass per image (its loss and training loop: train/vae.py)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UserError


class ConvVAE(nn.Module):
    """Encoder Conv(C->32, s2) -> Conv(32->64, s2) -> Linear to (mu, log_var); decoder the mirror image.
    Works on square images whose side is divisible by 4 (28 -> 14 -> 7, 32 -> 16 -> 8)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 16, channels: int = 32):
        super().__init__()
        if image_size % 4:
            raise UserError(f"The VAE needs an image side divisible by 4, got {image_size}.")
        self.latent_dim, self.side, self.ch = latent_dim, image_size // 4, 2 * channels
        flat = self.ch * self.side * self.side
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, self.ch, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.to_stats = nn.Linear(flat, 2 * latent_dim)
        self.from_z = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(self.ch, channels, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(channels, in_channels, 4, stride=2, padding=1))

    def encode(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [0, 1] (B, C, H, W) -> mu, log_var, each (B, latent_dim)."""
        mu, log_var = self.to_stats(self.encoder(x01)).chunk(2, dim=1)
        return mu, log_var

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, self.ch, self.side, self.side)  # (B, latent) -> (B, 2ch, H/4, W/4)
        return self.decoder(h)  # (B, C, H, W) Bernoulli logits

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images in [0, 1]: z ~ N(0, I), one decoder pass, the Bernoulli means."""
        device = self.from_z.weight.device
        z = torch.randn((n, self.latent_dim), generator=generator).to(device)
        return torch.sigmoid(self.decode_logits(z))
