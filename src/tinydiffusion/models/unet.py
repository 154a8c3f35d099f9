"""The improved U-Net (Ho et al. 2020, appendix B; Nichol & Dhariwal 2021): residual blocks with a
sinusoidal time embedding in every block, self-attention at chosen resolutions, skips at every block.
Conditioning: a class embedding added to the time embedding, or text through cross-attention at the low
resolutions plus the pooled prompt added to the time embedding (Rombach et al. 2022; Saharia et al. 2022)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .condition import Conditioned
from .layers import (CrossAttention, Downsample, ResBlock, SelfAttention, Upsample, norm,
                     timestep_embedding)


class UNet(Conditioned):
    """net(x, t, cond=None) -> eps/x0/v shaped like x. t: (B,) continuous time in [0, 1]. cond: a Cond with class
    labels for a class model (NULL_LABEL, or cond=None, means unconditional), or with token states for a text
    model (context_dim > 0; cond=None or a row without tokens means unconditional).

    The text null is a learned token that every cross-attention always sees next to the prompt's tokens,
    so an empty prompt (no tokens) is well defined and is the unconditional branch; cross-attention goes at
    `cross_attention_resolutions`, by default every level below the first (14 and 7 for 28 px; 7 and 4 with 2x2 patches)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: int = 64,
                 channel_mult: tuple = (1, 2, 2), num_res_blocks: int = 2, attention_resolutions: tuple = (7,),
                 heads: int = 4, dropout: float = 0.0, num_classes: int = 0, norm_kind: str = "group",
                 context_dim: int = 0, cross_attention_resolutions: tuple | None = None, patch_size: int = 1,
                 scale_shift: bool = False, guidance_embedding: bool = False):
        super().__init__()
        if image_size % patch_size:
            raise UserError(f"patch_size {patch_size} does not divide the image size {image_size}.")
        # Patchify (Peebles & Xie 2023, for a U-Net): p x p pixels -> p*p channels, so the U-Net's first level
        # runs at image_size / p; the output is shuffled back to full resolution.
        self.patch_size, in_channels, image_size = patch_size, in_channels * patch_size ** 2, image_size // patch_size
        self.emb_channels, emb_dim = channels, 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.setup_condition(num_classes, context_dim, emb_dim, guidance_embedding)  # labels, text, w (condition.py)
        if cross_attention_resolutions is None:
            cross_attention_resolutions = [image_size]
            for _ in range(len(channel_mult) - 1):
                cross_attention_resolutions.append((cross_attention_resolutions[-1] + 1) // 2)
            cross_attention_resolutions = tuple(cross_attention_resolutions[1:])
        xattn = dict(context_dim=context_dim, resolutions=cross_attention_resolutions if context_dim else ())
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        # Encoder: at each level num_res_blocks blocks, then downsample (not after the last level).
        self.down, skip_ch, ch, res = nn.ModuleList(), [channels], channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(self._block(ch, channels * mult, emb_dim, res, attention_resolutions, heads,
                                             dropout, norm_kind, scale_shift, **xattn))
                ch = channels * mult
                skip_ch.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(Downsample(ch))
                skip_ch.append(ch)
                res = (res + 1) // 2
        self.skip_channels, self.mid_channels = tuple(skip_ch), ch  # what encode() returns (a ControlNet's zero convs)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout, norm_kind, scale_shift),
                                  SelfAttention(ch, heads, norm_kind), ResBlock(ch, ch, emb_dim, dropout, norm_kind,
                                                                                scale_shift)])
        if context_dim:
            self.mid.insert(2, CrossAttention(ch, context_dim, heads, norm_kind))

        # Decoder: num_res_blocks + 1 blocks per level, each taking one skip, then upsample.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(ch + skip_ch.pop(), channels * mult, emb_dim, res,
                                           attention_resolutions, heads, dropout, norm_kind, scale_shift, **xattn))
                ch = channels * mult
            if level > 0:
                self.up.append(Upsample(ch))
                res = res * 2
        self.out = nn.Sequential(norm(norm_kind, ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _block(c_in, c_out, emb_dim, res, attention_resolutions, heads, dropout, norm_kind, scale_shift,
               context_dim=0, resolutions=()):
        block = nn.ModuleList([ResBlock(c_in, c_out, emb_dim, dropout, norm_kind, scale_shift)])
        if res in attention_resolutions:
            block.append(SelfAttention(c_out, heads, norm_kind))
        if res in resolutions:
            block.append(CrossAttention(c_out, context_dim, heads, norm_kind))
        return block

    def embed(self, t: torch.Tensor, cond) -> torch.Tensor:
        return self.condition_embedding(cond, self.time_mlp(timestep_embedding(t, self.emb_channels)))  # (B, 4C)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        return self.decode(*self.encode(x, t, cond))

    def encode(self, x: torch.Tensor, t: torch.Tensor, cond=None, hint: torch.Tensor | None = None):
        """The encoder and middle: (h after the middle, the skips, emb, ctx). hint (B, C, H/p, W/p) is added to the
        first features (a ControlNet's copy, models/controlnet.py)."""
        ctx = self.context(cond, x.shape[0], x.device)
        emb = self.embed(t, cond)
        h = self.conv_in(F.pixel_unshuffle(x, self.patch_size))  # (B, C, H, W) -> (B, C p^2, H/p, W/p)
        if hint is not None:
            h = h + hint
        skips = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, Downsample) else _run(layer, h, emb, ctx)
            skips.append(h)
        return _run(self.mid, h, emb, ctx), skips, emb, ctx

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, ctx) -> torch.Tensor:
        """The decoder: each level takes the skips from the end of the list (which it empties)."""
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, skips[-1].shape[-2:])
            else:
                h = _run(layer, torch.cat([h, skips.pop()], dim=1), emb, ctx)
        return F.pixel_shuffle(self.out(h), self.patch_size)  # (B, C p^2, H/p, W/p) -> (B, C, H, W)


def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, ctx) -> torch.Tensor:
    """Apply ResBlocks (which take the embedding), cross-attention (the context) and self-attention."""
    for layer in layers:
        if isinstance(layer, ResBlock):
            h = layer(h, emb)
        elif isinstance(layer, CrossAttention):
            h = layer(h, *ctx)
        else:
            h = layer(h)
    return h
