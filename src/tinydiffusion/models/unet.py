"""The improved U-Net (Ho et al. 2020, appendix B; Nichol & Dhariwal 2021): residual blocks with a
sinusoidal time embedding in every block, self-attention at chosen resolutions, skips at every block."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import Downsample, ResBlock, SelfAttention, Upsample, norm, timestep_embedding


class UNet(nn.Module):
    """net(x, s, cond=None) -> eps/x0/v shaped like x. s: (B,) continuous time; cond: (B,) class labels
    (the null label `num_classes`, or cond=None, means unconditional)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: int = 64,
                 channel_mult: tuple = (1, 2, 2), num_res_blocks: int = 2, attention_resolutions: tuple = (7,),
                 heads: int = 4, dropout: float = 0.0, num_classes: int = 0, norm_kind: str = "group"):
        super().__init__()
        self.num_classes, self.emb_channels = num_classes, channels
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        # Encoder: at each level num_res_blocks blocks, then downsample (not after the last level).
        self.down, skip_ch, ch, res = nn.ModuleList(), [channels], channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(self._block(ch, channels * mult, emb_dim, res, attention_resolutions, heads,
                                             dropout, norm_kind))
                ch = channels * mult
                skip_ch.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(Downsample(ch))
                skip_ch.append(ch)
                res = (res + 1) // 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout, norm_kind), SelfAttention(ch, heads, norm_kind),
                                  ResBlock(ch, ch, emb_dim, dropout, norm_kind)])

        # Decoder: num_res_blocks + 1 blocks per level, each taking one skip, then upsample.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(ch + skip_ch.pop(), channels * mult, emb_dim, res,
                                           attention_resolutions, heads, dropout, norm_kind))
                ch = channels * mult
            if level > 0:
                self.up.append(Upsample(ch))
                res = res * 2
        self.out = nn.Sequential(norm(norm_kind, ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _block(c_in, c_out, emb_dim, res, attention_resolutions, heads, dropout, norm_kind):
        block = nn.ModuleList([ResBlock(c_in, c_out, emb_dim, dropout, norm_kind)])
        if res in attention_resolutions:
            block.append(SelfAttention(c_out, heads, norm_kind))
        return block

    def embed(self, s: torch.Tensor, cond) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(s, self.emb_channels))  # (B, 4C)
        if self.label_emb is not None:
            labels = torch.full_like(s, self.num_classes, dtype=torch.long) if cond is None else cond.long()
            emb = emb + self.label_emb(labels)
        return emb

    def forward(self, x: torch.Tensor, s: torch.Tensor, cond=None) -> torch.Tensor:
        emb = self.embed(s, cond)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, Downsample) else _run(layer, h, emb)
            skips.append(h)
        h = _run(self.mid, h, emb)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, skips[-1].shape[-2:])
            else:
                h = _run(layer, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Apply a list of ResBlocks (which take the embedding) and attention layers (which do not)."""
    for layer in layers:
        h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
    return h
