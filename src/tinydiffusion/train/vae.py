"""Training the VAE baseline (models/vae.py): the negative ELBO and a short Adam loop."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.vae import ConvVAE
from ..objectives import gaussian_kl


def vae_loss(model: ConvVAE, x01: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Negative ELBO per image (Kingma & Welling 2014, eq. 10): BCE reconstruction summed over pixels
    + KL(N(mu, sigma^2) || N(0, I)), with the reparameterisation z = mu + sigma * eps."""
    mu, log_var = model.encode(x01)
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    z = mu + (0.5 * log_var).exp() * eps
    recon = F.binary_cross_entropy_with_logits(model.decode_logits(z), x01, reduction="none").flatten(1).sum(1)
    return (recon + gaussian_kl(mu, log_var)).mean()


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
