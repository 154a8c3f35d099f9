"""A small convolutional KL-regularised autoencoder (Rombach et al. 2022, sec. 3 and appendix G): the latent space of
latent diffusion. The encoder maps an image to a diagonal Gaussian q(z | x) = N(mean, exp(log_var)) on a
(latent_channels, H / f, W / f) grid, f = 2 ** (levels - 1); the decoder maps z back to the image. Training (the
reconstruction loss and the small KL weight): train/autoencoder.py; the standardised latent space a diffusion run
uses: latent_space.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .layers import Downsample, Upsample, norm


class Block(nn.Module):
    """norm-SiLU-conv, norm-SiLU-conv, + (1x1) skip: ResBlock without a time embedding."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = norm("group", c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = norm("group", c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Up(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv to the finer level's width (c_in -> c_out): the decoder's full-resolution
    convolutions run at the narrow width."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class KLAutoencoder(nn.Module):
    """Encoder: conv_in -> per level [num_res_blocks Blocks, Downsample except the last] -> Block -> norm-SiLU-conv
    to 2 * latent_channels (mean, log_var). Decoder: conv_in -> Block, then per level, coarsest first,
    [decoder_blocks Blocks, Up to the next level's width except the last] -> norm-SiLU-conv to the image. With
    channels 16 and channel_mult (1, 2, 4), 28 x 28 x 1 -> 7 x 7 x latent_channels (f = 4) at widths 16, 32, 64.
    The widths grow as the grid shrinks so that the decoder, which runs once per generated image, costs 0.04 GFLOPs
    per 28 x 28 image; the encoder runs once per training image (the latent cache)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 0, *, latent_channels: int = 4,
                 channels: int = 16, channel_mult: tuple[int, ...] = (1, 2, 4), num_res_blocks: int = 1,
                 decoder_blocks: int = 1):
        super().__init__()
        if num_classes:
            raise UserError("An autoencoder is not conditioned on labels; set data.conditional=false.")
        f = 2 ** (len(channel_mult) - 1)
        if image_size % f:
            raise UserError(f"An autoencoder with {len(channel_mult)} levels needs an image side divisible by {f}, "
                            f"got {image_size}.")
        widths = [channels * m for m in channel_mult]
        self.latent_channels, self.downsample = latent_channels, f
        self.latent_side = image_size // f
        enc = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        c = widths[0]
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(Block(c, w))
                c = w
            if level < len(widths) - 1:
                enc.append(Downsample(c))
        enc += [Block(c, c), norm("group", c), nn.SiLU(), nn.Conv2d(c, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1), Block(widths[-1], widths[-1])]
        for level in reversed(range(len(widths))):
            dec += [Block(widths[level], widths[level]) for _ in range(decoder_blocks)]
            if level:
                dec.append(Up(widths[level], widths[level - 1]))
        dec += [norm("group", widths[0]), nn.SiLU(), nn.Conv2d(widths[0], in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [-1, 1] -> mean, log_var, each (B, latent_channels, H / f, W / f). log_var is clamped to
        [-30, 20] as in LDM, so exp() stays finite."""
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_channels, h, w) -> images (B, C, h * f, w * f), near [-1, 1] (not clamped)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None):
        """(reconstruction of a posterior sample z = mean + sigma * eps, mean, log_var) for the training loss; eps
        (B, latent_channels, h, w) drawn here from generator unless given."""
        mean, log_var = self.encode(x)
        eps = torch.randn(mean.shape, generator=generator) if eps is None else eps
        eps = eps.to(mean.device, mean.dtype)
        return self.decode(mean + (0.5 * log_var).exp() * eps), mean, log_var
