"""Pictures written with Pillow: image grids (the other figures live in viz_*.py modules)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import atomic_write


def grid_array(images01: torch.Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, C) with a white border."""
    images01 = images01.detach().float().cpu().clamp(0, 1)
    N, C, H, W = images01.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(N)))
    rows = math.ceil(N / nrow)
    grid = np.ones((rows * (H + pad) + pad, nrow * (W + pad) + pad, C), dtype=np.float32)
    for k in range(N):
        r, c = divmod(k, nrow)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        grid[y:y + H, x:x + W] = images01[k].permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    grid = (grid * 255).round().astype(np.uint8)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def to_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_png(image: Image.Image, path: Path) -> None:
    atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def save_grid(images01: torch.Tensor, path: Path, nrow: int | None = None, scale: int = 2) -> None:
    """Write a grid of images in [0, 1] as an 8-bit PNG (nearest-neighbour upscaled for small images)."""
    save_png(to_pil(grid_array(images01, nrow, scale=scale)), path)
