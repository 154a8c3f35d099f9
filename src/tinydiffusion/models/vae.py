"""A small convolutional VAE (Kingma & Welling 2014), the course's previous generative model, as the baseline that
diffusion is compared against: one decoder pass per image, trained with reconstruction + KL."""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def vae_loss(model: ConvVAE, x01: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Negative ELBO per image (Kingma & Welling 2014, eq. 10): BCE reconstruction summed over pixels
    + KL(N(mu, sigma^2) || N(0, I)), with the reparameterisation z = mu + sigma * eps."""
    mu, log_var = model.encode(x01)
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    z = mu + (0.5 * log_var).exp() * eps
    recon = F.binary_cross_entropy_with_logits(model.decode_logits(z), x01, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(1)
    return (recon + kl).mean()


def train_vae(model: ConvVAE, images_uint8: torch.Tensor, *, minutes: float = 0, steps: int = 0,
              batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device="cpu") -> dict:
    """Adam on the negative ELBO for `steps` steps or `minutes` of wall-clock, whichever is given.
    images_uint8: (N, C, H, W). Returns steps, seconds and the loss curve (per-image negative ELBO)."""
    if not minutes and not steps:
        raise UserError("No VAE training budget: give minutes or steps.")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step, elapsed, curve = 0, 0.0, []
    while (not steps or step < steps) and (not minutes or elapsed < minutes * 60):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(images_uint8), (batch_size,), generator=g)
        x01 = (images_uint8[idx].float() / 255).to(device)  # uint8 -> [0, 1], the Bernoulli targets
        loss = vae_loss(model, x01, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed += time.perf_counter() - t0
        if not math.isfinite(loss.item()):
            raise UserError(f"The VAE loss became {loss.item()} at step {step}; lower the learning rate.")
        curve.append(loss.item())
    return dict(steps=step, seconds=elapsed, loss=sum(curve[-50:]) / len(curve[-50:]), curve=curve)
