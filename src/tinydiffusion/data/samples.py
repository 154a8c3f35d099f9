"""Sample files: .npz with `images` float32 (N, C, H, W) in [0, 1] (and `labels` int64 (N,) when conditional), and
folders of one-image PNGs. Reading never runs code (allow_pickle=False); writing is atomic."""
from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import write_bytes


def write_samples(path: Path, images01: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """images (N, C, H, W) in [0, 1] (and labels (N,)) -> an .npz file."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UserError(f"Output file {path} must end in .npz (arrays) or .png (a grid).")
    arrays = {"images": images01.numpy().astype(np.float32)}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def load_samples(path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (N, C, H, W) float32 in [0, 1], labels (N,) int64 or None) from an .npz file or a folder of PNGs."""
    path = Path(path)
    if path.is_dir():
        return _load_png_folder(path), None
    if not path.exists():
        raise UserError(f"No samples file at {path}; write one with `tinydiffusion sample --out FILE.npz`.")
    if path.suffix == ".png":
        raise UserError(f"{path} is a single PNG (a grid); evaluate an .npz or a folder of one-image PNGs.")
    if path.stat().st_size == 0:
        raise UserError(f"The samples file {path} is empty.")
    try:
        f = np.load(path, allow_pickle=False)  # allow_pickle=False: a samples file never runs code
        if not hasattr(f, "files"):  # a bare .npy array
            raise UserError(f"{path} holds a single array, not an .npz archive with an 'images' array.")
        with f:
            if "images" not in f.files:
                raise UserError(f"{path} has no 'images' array (it has: {', '.join(f.files) or 'nothing'}).")
            images = np.asarray(f["images"])
            labels = np.asarray(f["labels"]) if "labels" in f.files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"{path} is not a readable .npz file ({e}).") from None
    if images.dtype.kind not in "fiu":
        raise UserError(f"{path}: 'images' has dtype {images.dtype}; expected float32 in [0, 1].")
    if labels is not None and (labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]):
        raise UserError(f"{path}: 'labels' must be integers, one per image (shape {images.shape[:1]}), "
                        f"got {labels.dtype} {labels.shape}.")
    return (torch.from_numpy(images.astype(np.float32)),
            None if labels is None else torch.from_numpy(labels.astype(np.int64)))


def _load_png_folder(folder: Path) -> torch.Tensor:
    """Every *.png in the folder (sorted by name), one image each: 8-bit grey or RGB -> [0, 1]."""
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    if not files:
        raise UserError(f"The folder {folder} holds no .png images.")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            a = np.asarray(im.convert("L" if im.mode in ("1", "L", "I;16", "I") else "RGB"), dtype=np.float32)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)
    if len({a.shape for a in arrays}) > 1:
        raise UserError(f"The PNGs in {folder} differ in size or channels; they must all be one image size.")
    return torch.from_numpy(np.stack(arrays) / 255.0).float()


