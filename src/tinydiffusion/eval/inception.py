"""Optional Inception features for `fd_inception` (FID proper when the file holds the standard weights).

Inception weights cannot be downloaded here, so the user passes a file:
- TorchScript: NVIDIA's `inception-2015-12-05.pt` (its forward takes `return_features`; input 0..255), or any
  scripted module that maps (N, 3, 299, 299) in [0, 1] to 2048-d features (a list/tuple output: its last
  element).
- A state dict (.pth loaded with weights_only=True, or .safetensors) of pytorch-fid's FID Inception
  (`pt_inception-2015-12-05-6726825d.pth`), rebuilt by `FIDInceptionV3` below with torchvision's module names.
Images are resized to 299x299 (bilinear, as pytorch-fid) and grey images are replicated to 3 channels.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError

FEATURE_DIM = 2048


class Conv(nn.Sequential):
    """torchvision's BasicConv2d: Conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU, with its parameter names."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)
        self.relu = nn.ReLU(inplace=True)


def _pool(x, kind: str):
    """The FID graph's pool branch: TF's average pool excludes padding; Mixed_7c uses a max pool instead."""
    if kind == "max":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    def __init__(self, c, pool_features):
        super().__init__()
        self.branch1x1 = Conv(c, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = Conv(c, 48, 1), Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(c, 64, 1), Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(c, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_pool(x, "avg"))], 1)


class BlockB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.branch3x3 = Conv(c, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(c, 64, 1), Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    def __init__(self, c, c7):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(c, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = Conv(c, c7, 1), Conv(c7, c7, **row), Conv(c7, 192, **col)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = Conv(c, c7, 1), Conv(c7, c7, **col)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = Conv(c7, c7, **row), Conv(c7, c7, **col)
        self.branch7x7dbl_5 = Conv(c7, 192, **row)
        self.branch_pool = Conv(c, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_pool(x, "avg"))], 1)


class BlockD(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = Conv(c, 192, 1), Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(c, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    def __init__(self, c, pool: str):
        super().__init__()
        row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.pool = pool
        self.branch1x1 = Conv(c, 320, 1)
        self.branch3x3_1 = Conv(c, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = Conv(384, 384, **row), Conv(384, 384, **col)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(c, 448, 1), Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = Conv(384, 384, **row), Conv(384, 384, **col)
        self.branch_pool = Conv(c, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(_pool(x, self.pool))], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as in TF's FID graph (Szegedy et al. 2016; Heusel et al. 2017), pytorch-fid's parameter names;
    (N, 3, 299, 299) in [-1, 1] -> (N, 2048) final average-pool features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = Conv(3, 32, 3, stride=2), Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1, self.Conv2d_4a_3x3 = Conv(64, 80, 1), Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = BlockD(768), BlockE(1280, "avg"), BlockE(2048, "max")

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ... -> (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # (N, 2048, 8, 8) -> (N, 2048)


def _to_inception_input(images01: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 3, 299, 299) in [0, 1]: bilinear resize first, then replicate grey channels."""
    x = F.interpolate(images01.float(), size=(299, 299), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def load_inception(path: Path):
    """A function images01 (N, C, H, W) -> features (N, 2048) from a TorchScript or state-dict file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"No Inception weights at {path}; pass --inception a TorchScript (.pt) or state-dict file.")
    try:
        with warnings.catch_warnings():  # torch.jit.load warns that TorchScript is deprecated; the files remain common
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError):
        net = None
    if net is not None:
        names = [a.name for a in net.forward.schema.arguments]
        if "return_features" in names:  # NVIDIA's detector (StyleGAN2-ADA metrics): uint8-range input
            return _checked(lambda x: net(_to_inception_input(x) * 255, return_features=True), path)
        return _checked(lambda x: net(_to_inception_input(x)), path)
    net = FIDInceptionV3().eval()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}  # classifier heads
        net.load_state_dict(state)
    except Exception as e:  # torch.load / safetensors / load_state_dict raise several types for foreign files
        raise UserError(f"{path} is neither TorchScript nor a state dict of the FID Inception-v3 "
                        f"({type(e).__name__}); use pytorch-fid's pt_inception-2015-12-05 weights.") from None
    return _checked(lambda x: net(_to_inception_input(x) * 2 - 1), path)


def _checked(fn, path: Path):
    """Wrap a feature function: no grad, last element of list outputs, (N, 2048, 1, 1) -> (N, 2048), dim check."""
    @torch.no_grad()
    def features(images01: torch.Tensor) -> torch.Tensor:
        out = fn(images01)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        out = out.float().flatten(1)  # (N, 2048, 1, 1) -> (N, 2048)
        if out.shape != (len(images01), FEATURE_DIM):
            raise UserError(f"{path} gives features of shape {tuple(out.shape)}, not (N, {FEATURE_DIM}); "
                            "pass a network that returns Inception's 2048-d pool features.")
        return out
    return features
