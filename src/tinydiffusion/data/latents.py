"""Latents of a dataset, encoded once: the cache file, its key, the per-channel statistics over the whole set, and
standardisation (the one home of z_std = (z - mean_c) / std_c and its inverse).

The cache holds the encoder's posterior (mean, log_var) of every image, so a latent run can train on the posterior
mean or draw z ~ q(z | x) afresh each time an image is used. It lives in the autoencoder's run directory, named by
the dataset and the SHA-256 of the autoencoder's weights file, and records that digest inside: an autoencoder whose
weights change gets a new cache, never a stale one. Nothing here knows networks: the encoder is a function.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..errors import UserError
from ..io import atomic_write
from .core import to_model_range

MODES = ("mean", "sample")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"data.latents={mode} is not a latent mode; choose mean (the posterior mean of each image) "
                        "or sample (z ~ q(z | x) each time an image is used).")


@torch.no_grad()
def encode_all(encode: Callable, images_uint8: torch.Tensor, batch_size: int = 256, device="cpu"):
    """(mean, log_var), each (N, c, h, w) float32, of encode(x in [-1, 1]) over uint8 images (N, C, H, W)."""
    means, log_vars = [], []
    for i in range(0, len(images_uint8), batch_size):
        m, lv = encode(to_model_range(images_uint8[i:i + batch_size]).to(device))
        means.append(m.float().cpu())
        log_vars.append(lv.float().cpu())
    return torch.cat(means), torch.cat(log_vars)


def images_digest(images_uint8: torch.Tensor) -> str:
    """SHA-256 of the images' bytes (N, C, H, W): names the data a cache was encoded from (~0.1 s for MNIST)."""
    return hashlib.sha256(images_uint8.contiguous().numpy().tobytes()).hexdigest()


def cached_latents(root: Path, digest: str, images_uint8: torch.Tensor, encode: Callable, device="cpu"):
    """(mean, log_var) of every image, and whether they were encoded now: read from the cache file in root/latents/
    named by the images' digest and the autoencoder weights' `digest` when it holds both, else encoded now and
    written there (atomically). Returns ((mean, log_var), encoded_now, path)."""
    data = images_digest(images_uint8)
    path = Path(root) / "latents" / f"{data[:12]}-{digest[:16]}.safetensors"
    if path.exists():
        try:
            with safe_open(str(path), "pt") as f:
                info = f.metadata() or {}
            if info.get("digest") == digest and info.get("images") == data:
                tensors = load_file(str(path))
                return (tensors["mean"], tensors["log_var"]), False, path
        except (SafetensorError, OSError, ValueError, KeyError):
            pass  # a damaged or foreign file is rebuilt
    mean, log_var = encode_all(encode, images_uint8, device=device)
    atomic_write(path, lambda tmp: save_file({"mean": mean, "log_var": log_var}, tmp,
                                             metadata={"digest": digest, "images": data}))
    return (mean, log_var), True, path


def latent_stats(mean: torch.Tensor, log_var: torch.Tensor) -> dict:
    """Per-channel statistics over every image (N, c, h, w): the mean, the std of the posterior means, and the std
    of posterior samples z = mean + sigma * eps, whose variance adds E[sigma^2] (the law of total variance)."""
    m = mean.double().mean(dim=(0, 2, 3))
    var_mean = mean.double().var(dim=(0, 2, 3), unbiased=False)
    var_noise = log_var.double().exp().mean(dim=(0, 2, 3))
    return dict(mean=m.tolist(), std=var_mean.sqrt().tolist(), std_sampled=(var_mean + var_noise).sqrt().tolist(),
                kl_per_dim=float(0.5 * (mean.double().pow(2) + log_var.double().exp() - 1 - log_var.double()).mean()))


def _shift_scale(stats: dict, mode: str, like: torch.Tensor):
    shift = torch.tensor(stats["mean"], dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    scale = torch.tensor(stats["std_sampled" if mode == "sample" else "std"], dtype=like.dtype,
                         device=like.device).view(1, -1, 1, 1)
    return shift, scale  # (1, c, 1, 1) each


def standardize(z: torch.Tensor, stats: dict, mode: str = "mean") -> torch.Tensor:
    """z (B, c, h, w) -> (z - mean_c) / std_c: zero mean, unit variance per channel over the training set."""
    shift, scale = _shift_scale(stats, mode, z)
    return (z - shift) / scale


def unstandardize(z_std: torch.Tensor, stats: dict, mode: str = "mean") -> torch.Tensor:
    """The inverse of standardize: z_std * std_c + mean_c."""
    shift, scale = _shift_scale(stats, mode, z_std)
    return z_std * scale + shift


class LatentSet:
    """The training set as standardised latents for a diffusion run: batch(idx) is the posterior mean of each image,
    or (mode 'sample') a fresh z = mean + sigma * eps drawn with the training generator."""

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor, stats: dict, mode: str = "mean"):
        check_mode(mode)
        self.mean, self.sigma, self.stats, self.mode = mean, (0.5 * log_var).exp(), stats, mode

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mean.shape[1:])

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.mean[idx]  # (B, c, h, w)
        if self.mode == "sample":
            z = z + self.sigma[idx] * torch.randn(z.shape, generator=generator)
        return standardize(z, self.stats, self.mode)
