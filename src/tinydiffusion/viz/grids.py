"""Pictures written with Pillow: image grids, labelled grids, titled pages (figures.py and curves.py build on them)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_write


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


def save_labelled_grid(images01: torch.Tensor, path: Path, row_names: list[str]) -> None:
    """A PNG grid of images in [0, 1] with one row per name (class or prompt), the name written left of its row."""
    per_row = len(images01) // len(row_names)
    grid = to_pil(grid_array(images01, per_row, scale=2))
    fnt = font(14)
    left = int(max(fnt.getlength(n) for n in row_names)) + 12
    page = Image.new("RGB", (grid.width + left, grid.height), "white")
    page.paste(grid.convert("RGB"), (left, 0))
    draw, row_h = ImageDraw.Draw(page), grid.height / len(row_names)
    for r, name in enumerate(row_names):
        draw.text((6, (r + 0.5) * row_h - 8), name, font=fnt, fill=(0, 0, 0))
    save_png(page, path)


# ------------------------------------------------------------------------------------ text and layout
def font(size: int = 14) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font. It has ASCII glyphs only, so figure text spells symbols out
    (alpha_bar_t, sqrt, eps) the way the code names them."""
    return ImageFont.load_default(size=size)


def wrap(text: str, fnt, width: int) -> list[str]:
    """Greedy word wrap of text into lines no wider than width pixels (explicit newlines kept)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if line and fnt.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def titled(image: Image.Image, title: str = "", caption: str = "", size: int = 18, margin: int = 12) -> Image.Image:
    """image on a white page with a title above and a wrapped caption (the formula, the reading) below."""
    width = max(image.width + 2 * margin, 480)
    f_title, f_cap = font(size), font(max(11, size - 4))
    title_lines = wrap(title, f_title, width - 2 * margin) if title else []
    cap_lines = wrap(caption, f_cap, width - 2 * margin) if caption else []
    th, ch = int(size * 1.35), int((size - 4) * 1.4)
    height = margin + len(title_lines) * th + margin // 2 + image.height + margin // 2 + len(cap_lines) * ch + margin
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    y = margin
    for line in title_lines:
        draw.text((margin, y), line, font=f_title, fill=(0, 0, 0))
        y += th
    y += margin // 2
    page.paste(image.convert("RGB"), ((width - image.width) // 2, y))
    y += image.height + margin // 2
    for line in cap_lines:
        draw.text((margin, y), line, font=f_cap, fill=(60, 60, 60))
        y += ch
    return page


def hstack(images: list[Image.Image], gap: int = 10) -> Image.Image:
    """Images side by side on white, top-aligned."""
    out = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)),
                    "white")
    x = 0
    for im in images:
        out.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return out
