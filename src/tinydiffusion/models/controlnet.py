"""ControlNet (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models"): a
trainable copy of a frozen base U-Net's encoder and middle reads the noisy image plus a control map, and its features
enter the base through zero-initialised 1x1 convolutions on every skip and on the middle (sec. 3.1, eq. 2). At
initialisation every residual is exactly zero, so the ControlNet's output is the base's, bit for bit, and training
starts from the base's samples rather than from noise (the authors' "sudden convergence", sec. 4.4).

Also the baseline it is measured against: a U-Net trained from scratch with the map concatenated to its input."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import UserError
from .unet import UNet


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlBranch(nn.Module):
    """What trains: the copy of the base's encoder and middle (weights cloned from the base), the hint encoder from
    the map (B, M, H, W) to the first feature resolution (B, C0, H/p, W/p), ending in a zero conv (sec. 3.2), and one
    1x1 conv per residual (zero-initialised, or PyTorch's default init for the ablation with zero_init=False)."""

    def __init__(self, base: UNet, map_channels: int = 1, hint_channels: int = 16, zero_init: bool = True):
        super().__init__()
        if not isinstance(base, UNet):
            raise UserError(f"A ControlNet needs a U-Net base (unet, unet-small, unet-patch, ...); this base is a "
                            f"{type(base).__name__}.")
        self.copy = copy.deepcopy(base).requires_grad_(True)
        del self.copy.up, self.copy.out  # the copy is the encoder and the middle only
        c0, p = base.conv_in.out_channels, base.patch_size
        maybe_zero = _zero if zero_init else (lambda conv: conv)
        self.hint = nn.Sequential(  # (B, M, H, W) -> (B, C0, H/p, W/p)
            nn.Conv2d(map_channels, hint_channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hint_channels, 2 * hint_channels, p, stride=p), nn.SiLU(),  # to the patch grid
            nn.Conv2d(2 * hint_channels, 2 * hint_channels, 3, padding=1), nn.SiLU(),
            maybe_zero(nn.Conv2d(2 * hint_channels, c0, 3, padding=1)))
        self.zero_skips = nn.ModuleList(maybe_zero(nn.Conv2d(c, c, 1)) for c in base.skip_channels)
        self.zero_mid = maybe_zero(nn.Conv2d(base.mid_channels, base.mid_channels, 1))
        self.map_channels = map_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(residual for the middle, residuals for the skips) from the noisy x, t and cond.control."""
        hint = self.hint(cond.control.to(x.dtype))  # (B, M, H, W) -> (B, C0, H/p, W/p)
        h, skips, _, _ = self.copy.encode(x, t, cond, hint=hint)
        return self.zero_mid(h), [z(s) for z, s in zip(self.zero_skips, skips)]


class ControlNet(nn.Module):
    """net(x, t, cond) -> the base's prediction with the branch's residuals, times cond.control_scale (B,), added to
    its skips and middle; without a control map (cond None or cond.control None) it is the base alone. The base is
    frozen: requires_grad off, and only `branch` is saved and optimised (`trainable_parameters`)."""

    def __init__(self, base: UNet, branch: ControlBranch):
        super().__init__()
        self.base, self.branch = base.requires_grad_(False).eval(), branch

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # frozen: no dropout
        return self

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if cond is None or cond.control is None:
            return self.base(x, t, cond)
        check_map(cond.control, x, self.branch.map_channels)
        h, skips, emb, ctx = self.base.encode(x, t, cond)
        mid, residuals = self.branch(x, t, cond)
        s = cond.control_scale.to(h.dtype)[:, None, None, None]  # (B,) -> (B, 1, 1, 1)
        skips = [a + s * r for a, r in zip(skips, residuals)]
        return self.base.decode(h + s * mid, skips, emb, ctx)


class ConcatControl(nn.Module):
    """The baseline: a network trained from scratch on [x, map] (B, C + M, H, W); its first C output channels are
    the prediction (the rest are unused). Without a map it sees the empty map (all -1)."""

    def __init__(self, net: nn.Module, image_channels: int, map_channels: int = 1):
        super().__init__()
        self.net, self.image_channels, self.map_channels = net, image_channels, map_channels

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if cond is None or cond.control is None:
            m = -torch.ones(x.shape[0], self.map_channels, *x.shape[-2:], dtype=x.dtype, device=x.device)
        else:
            m = check_map(cond.control, x, self.map_channels).to(x.dtype)
        return self.net(torch.cat([x, m], 1), t, cond)[:, :self.image_channels]  # (B, C + M, H, W) -> (B, C, H, W)


def check_map(control: torch.Tensor, x: torch.Tensor, map_channels: int) -> torch.Tensor:
    if control.shape[0] != x.shape[0] or control.shape[1] != map_channels or control.shape[-2:] != x.shape[-2:]:
        raise UserError(f"The control maps have shape {tuple(control.shape)}; this network needs "
                        f"({x.shape[0]}, {map_channels}, {x.shape[-2]}, {x.shape[-1]}): one map per image, at its size.")
    return control
