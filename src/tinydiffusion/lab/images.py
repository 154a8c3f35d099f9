"""Tensors -> PNG data URLs for the page (the grids of viz/grids.py, encoded in memory)."""
from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from ..data import to_unit_range
from ..viz.grids import grid_array, to_pil


def png_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def grid_url(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> str:
    """(N, C, H, W) in [-1, 1] (clamped) -> a data URL of their PNG grid."""
    return png_url(to_pil(grid_array(to_unit_range(images), nrow, pad=pad)))
