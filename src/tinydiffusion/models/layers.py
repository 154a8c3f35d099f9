"""Building blocks shared by the denoisers: time embedding, residual block, self- and cross-attention,
resampling, and the Context that carries text conditioning."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError


def timestep_embedding(s: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017; Ho et al. 2020 appendix B) of continuous time s in [0, 1],
    scaled by 1000 so that it matches the usual embedding of integer steps. (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=s.device, dtype=torch.float32) / half)
    args = 1000.0 * s.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def norm(kind: str, channels: int) -> nn.Module:
    """GroupNorm with at least 4 channels per group (DDPM: 32 groups of 128 channels; the lesson: 8 groups of
    32-64), or nothing ('none') where speed matters more. One channel per group would be instance norm, which
    discards each image's per-channel brightness and gives blobby, grey-background samples in small nets."""
    if kind == "group":
        return nn.GroupNorm(math.gcd(min(32, max(1, channels // 4)), channels), channels)
    if kind == "none":
        return nn.Identity()
    raise UserError(f"Unknown norm '{kind}'; choose group or none.")


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


@dataclass(frozen=True, eq=False)
class Context:
    """Text conditioning: per-token states (B, L, D) and a key mask (B, L), True = a real token.

    A row with no True in its mask is the null context (the empty prompt): cross-attention then sees only
    the model's learned null token. It slices and moves like a tensor, so samplers and batching pass it on.
    """

    tokens: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self):
        if self.tokens.dim() != 3 or self.tokens.shape[:2] != self.mask.shape:
            raise ValueError(f"Context needs tokens (B, L, D) and mask (B, L); got {tuple(self.tokens.shape)} "
                             f"and {tuple(self.mask.shape)}.")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> "Context":
        return Context(self.tokens[index], self.mask[index])

    def to(self, device) -> "Context":
        return Context(self.tokens.to(device), self.mask.to(device))

    def masked(self) -> "Context":
        """Zero the states of masked positions, so padding and dropped prompts carry nothing."""
        return Context(self.tokens * self.mask[..., None], self.mask)

    def null(self) -> "Context":
        """The null context for the same batch size: no tokens."""
        return Context(self.tokens[:, :0], self.mask[:, :0])

    @staticmethod
    def cat(*parts: "Context") -> "Context":
        """Concatenate along the batch, padding each to the longest token length with masked zeros."""
        L = max(p.tokens.shape[1] for p in parts)
        tokens = [F.pad(p.tokens, (0, 0, 0, L - p.tokens.shape[1])) for p in parts]  # (B, l, D) -> (B, L, D)
        masks = [F.pad(p.mask, (0, L - p.mask.shape[1]), value=False) for p in parts]
        return Context(torch.cat(tokens), torch.cat(masks))


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
