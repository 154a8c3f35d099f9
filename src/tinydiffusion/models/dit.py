"""The Diffusion Transformer (Peebles & Xie 2023): patchify, a fixed 2-D sin-cos position embedding, N transformer
blocks modulated by adaLN-Zero, unpatchify. What changes against the U-Net: no convolutions, no down/upsampling and
no skips; every token attends to every other at one resolution, and the condition c = time embedding + condition
embedding enters each block only through the shift, scale and gate of its two LayerNorms.

adaLN-Zero (sec. 3.2): each block regresses (shift, scale, gate) for attention and for the MLP from c; the last
Linear of every modulation and the final layer's output start at zero, so every block starts as the identity and
a fresh net outputs zeros (it predicts the mean target). Text: cross-attention to the token states after the
self-attention, zero-initialised output (PixArt-alpha's layout); labels: an embedding with a null row
(condition.py, shared with the U-Net).

Attention is written out (softmax(q k^T / sqrt(d)) v) rather than through the fused SDPA kernels, because those
(the CPU flash kernel included) do not support forward-mode AD, and consistency/MeanFlow training needs
torch.func.jvp through the net. At <= 196 tokens the explicit form costs little on a CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .condition import Conditioned
from .layers import timestep_embedding


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, differentiable in both AD modes. q (B, h, N, d), k/v (B, h, L, d),
    mask (B, L) True = attend -> (B, h, N, d)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, N, L)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v


def sincos_2d(width: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE/DiT): half the width encodes the row, half the column, each
    as sin/cos at geometric frequencies. -> (grid * grid, width)."""
    quarter = width // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (width/4,)
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")  # (grid, grid) each
    parts = [f(p.reshape(-1, 1) * freqs) for p in (rows, cols) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).float()  # (grid^2, width)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, D) * (1 + scale) + shift, with shift/scale (B, D) per image."""
    return x * (1 + scale[:, None]) + shift[:, None]


class MultiHeadAttention(nn.Module):
    """Self-attention (context None) or cross-attention to context (B, L, E) with mask (B, L)."""

    def __init__(self, width: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim or width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask=None) -> torch.Tensor:
        B, N, D = x.shape
        src = x if context is None else context.to(x.dtype)
        q = self.q(x).reshape(B, N, self.heads, D // self.heads).transpose(1, 2)  # (B, h, N, d)
        k, v = self.kv(src).reshape(B, src.shape[1], 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(attention(q, k, v, mask).transpose(1, 2).reshape(B, N, D))


class DiTBlock(nn.Module):
    """x + gate_a * attn(modulate(LN(x))) [+ cross-attn(LN(x), text)] + gate_m * mlp(modulate(LN(x)))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, context_dim: int = 0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadAttention(width, heads)
        if context_dim:
            self.norm_x = nn.LayerNorm(width, eps=1e-6)
            self.cross = MultiHeadAttention(width, heads, context_dim)
            nn.init.zeros_(self.cross.proj.weight)
            nn.init.zeros_(self.cross.proj.bias)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))  # c -> 2 x (shift, scale, gate)
        nn.init.zeros_(self.ada[-1].weight)  # adaLN-Zero: every gate starts at 0, the block at the identity
        nn.init.zeros_(self.ada[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx=None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c).chunk(6, dim=1)  # each (B, D)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        if ctx is not None:
            x = x + self.cross(self.norm_x(x), *ctx)
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class DiT(Conditioned):
    """net(x, t, cond=None) -> tensor shaped like x, for x (B, C, H, W) with H = W divisible by patch_size.
    t: (B,) continuous time in [0, 1]; cond: a Cond with labels (num_classes > 0) or token states (context_dim > 0);
    None or the null condition is the unconditional branch. `channels` is the width D (the U-Net's name for it)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: int = 128, depth: int = 4,
                 heads: int = 4, patch_size: int = 2, mlp_ratio: float = 4.0, num_classes: int = 0,
                 context_dim: int = 0, guidance_embedding: bool = False):
        super().__init__()
        if image_size % patch_size:
            raise UserError(f"DiT: patch_size {patch_size} does not divide the image size {image_size}; "
                            f"choose one of {[p for p in range(1, 9) if image_size % p == 0]}.")
        if channels % heads or channels % 4:
            raise UserError(f"DiT: the width (model.channels = {channels}) must be divisible by the heads "
                            f"(model.heads = {heads}) and by 4 (the 2-D position embedding).")
        self.patch_size, self.in_channels, grid = patch_size, in_channels, image_size // patch_size
        self.emb_channels = 256  # frequencies of the time embedding (DiT's 256)
        self.patch = nn.Conv2d(in_channels, channels, patch_size, stride=patch_size)  # (B,C,H,W) -> (B,D,H/p,W/p)
        self.register_buffer("pos", sincos_2d(channels, grid)[None], persistent=False)  # (1, N, D)
        self.time_mlp = nn.Sequential(nn.Linear(self.emb_channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.setup_condition(num_classes, context_dim, channels, guidance_embedding)
        self.blocks = nn.ModuleList([DiTBlock(channels, heads, mlp_ratio, context_dim) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(channels, 2 * channels))  # c -> (shift, scale)
        self.out = nn.Linear(channels, patch_size * patch_size * in_channels)
        for layer in (self.ada_out[-1], self.out):  # the final layer starts at zero: a fresh net outputs 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        w = self.patch.weight.data  # initialise the patch embedding like a Linear (as DiT does)
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.patch_size
        ctx = self.context(cond, B, x.device)
        emb = timestep_embedding(t, self.emb_channels, dtype=torch.promote_types(x.dtype, torch.float32))
        c = self.condition_embedding(cond, self.time_mlp(emb.to(x.dtype)))  # (B, D)
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)  # (B, N, D), N = HW / p^2
        for block in self.blocks:
            h = block(h, c, ctx)
        shift, scale = self.ada_out(c).chunk(2, dim=1)
        h = self.out(modulate(self.norm_out(h), shift, scale))  # (B, N, p*p*C)
        h = h.transpose(1, 2).reshape(B, p * p * C, H // p, W // p)  # tokens back onto the grid
        return F.pixel_shuffle(h, p)  # (B, C p^2, H/p, W/p) -> (B, C, H, W)
