"""Building blocks shared by the denoisers: time embedding, residual block, self- and cross-attention,
resampling."""
from __future__ import annotations

import math
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import Registry


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017; Ho et al. 2020 appendix B) of continuous time t in [0, 1],
    scaled by 1000 so that it matches the usual embedding of integer steps. (B,) -> (B, dim), in `dtype`
    (float64 where a derivative in t is checked against finite differences)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = 1000.0 * t.to(dtype)[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


NORMS = Registry("norm")
NORMS.add("group", lambda channels: nn.GroupNorm(math.gcd(min(32, max(1, channels // 4)), channels), channels),
          "GroupNorm with at least 4 channels per group")
NORMS.add("none", lambda channels: nn.Identity(), "no normalisation (faster, less stable)")


def norm(kind: str, channels: int) -> nn.Module:
    """GroupNorm with at least 4 channels per group (DDPM: 32 groups of 128 channels; the lesson: 8 groups of
    32-64), or nothing ('none') where speed matters more. One channel per group would be instance norm, which
    discards each image's per-channel brightness and gives blobby, grey-background samples in small nets."""
    return NORMS.get(kind)(channels)


class ResBlock(nn.Module):
    """norm-SiLU-conv, + the embedding, norm-SiLU-dropout-conv, + (1x1) skip. The embedding either adds a
    per-channel shift before the second norm (Ho et al. 2020), or, with scale_shift, scales and shifts the
    normalised features, h = norm(h) (1 + scale) + shift (AdaGN, Dhariwal & Nichol 2021, sec. 3)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0, norm_kind: str = "group",
                 scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1, self.conv1 = norm(norm_kind, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2, self.conv2 = norm(norm_kind, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(F.silu(emb))[:, :, None, None]  # (B, C or 2C) -> (B, C or 2C, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual (Ho et al. 2020 use it at 16x16)."""

    def __init__(self, channels: int, heads: int = 4, norm_kind: str = "group"):
        super().__init__()
        self.heads = heads
        self.norm = norm(norm_kind, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class CrossAttention(nn.Module):
    """Image queries attend to text keys/values (Rombach et al. 2022, sec. 3.3), residual, zero-initialised
    output. context: (B, L, D) states, mask: (B, L) True = attend; L >= 1 (the caller adds a null token)."""

    def __init__(self, channels: int, context_dim: int, heads: int = 4, norm_kind: str = "group"):
        super().__init__()
        self.heads = heads
        self.norm = norm(norm_kind, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        L, d = context.shape[1], C // self.heads
        q = self.q(self.norm(x)).reshape(B, self.heads, d, H * W).transpose(-1, -2)  # (B, heads, HW, d)
        k, v = self.kv(context).reshape(B, L, 2, self.heads, d).permute(2, 0, 3, 1, 4)  # each (B, heads, L, d)
        h = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask[:, None, None, :])
        h = h.transpose(-1, -2).reshape(B, C, H, W)  # (B, heads, HW, d) -> (B, C, H, W)
        return x + self.proj(h)


class Downsample(nn.Module):
    """Strided 3x3 conv: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv, cropped to the skip's size (7 -> 14, 14 -> 28)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))
