"""Your own images: a folder of PNG/JPEG files (class subfolders give labels), or an .npz array file.

A folder holds one split unless it has `train/` and `test/` subfolders; otherwise both splits read all of it.
Folder images are scaled (shorter side) and centre-cropped to data.image_size (32 when 0) as they are decoded.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import UserError
from .core import ImageDataset, check_fit_options, labelled

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
DEFAULT_SIZE = 32  # folder images have no common native size
_GRAY_MODES = {"1", "L", "LA", "I", "F"}  # plus the 16-bit modes I;16, I;16B, ...


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in EXTENSIONS and not p.name.startswith(".") and p.is_file()  # skips ._x.png (macOS)


def _images_under(d: Path) -> list[Path]:
    hidden = lambda p: any(s.startswith(".") for s in p.relative_to(d).parts)  # noqa: E731 (.git, .thumbnails)
    return sorted(p for p in d.rglob("*") if _is_image(p) and not hidden(p))


def list_images(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    """(files, labels or None, class names): each subfolder with images is a class; a flat folder has no labels."""
    if not root.is_dir():
        raise UserError(f"{root} does not exist or is not a folder; set data.path to a folder of PNG/JPEG images.")
    loose = sorted(p for p in root.iterdir() if _is_image(p))
    classes = [(d.name, files) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
               and (files := _images_under(d))]
    if classes and loose:
        raise UserError(f"{root} mixes loose images ({loose[0].name}, ...) with class folders ({classes[0][0]}/, ...); "
                        "move the loose images into a class folder, or remove the subfolders.")
    if not classes:
        if not loose:
            raise UserError(f"{root} holds no images ({', '.join(sorted(EXTENSIONS))}); add some, or check data.path.")
        return loose, None, ()
    files = [f for _, fs in classes for f in fs]
    labels = [k for k, (_, fs) in enumerate(classes) for _ in fs]
    return files, labels, tuple(name for name, _ in classes)


def read_image(path: Path, size: int, mode: str) -> tuple[np.ndarray, bool]:
    """One file -> (uint8 (size, size, 1 or 3), whether the file was grayscale). mode: 'L' or 'RGB'."""
    try:
        with Image.open(path) as im:
            im.draft(None, (size, size))  # JPEG: decode at a reduced scale no smaller than size (much faster)
            im = ImageOps.exif_transpose(im)  # phone photos are stored sideways with an EXIF rotation
            gray = im.mode in _GRAY_MODES or im.mode.startswith("I;16")
            if im.mode.startswith("I;16"):  # Pillow's convert('L') clips 16-bit values instead of scaling them
                im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257).round().astype(np.uint8))
            if "A" in im.getbands() or "transparency" in im.info:  # flatten onto white, not onto hidden colours
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            im = ImageOps.fit(im.convert(mode), (size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path} is not a readable image ({e}); delete or replace it.") from None
    return (arr[..., None] if arr.ndim == 2 else arr), gray  # (H, W) -> (H, W, 1)


def load_folder(split: str = "train", path: str = "", image_size: int = 0, channels: int = 0) -> ImageDataset:
    """A folder of images (class subfolders give labels), scaled and centre-cropped to data.image_size (32)."""
    if not path:
        raise UserError("data.name=folder needs data.path: a folder of PNG/JPEG images (class subfolders give labels).")
    check_fit_options(image_size, channels)
    root = Path(path).expanduser()
    if (root / "train").is_dir() and (root / "test").is_dir():
        root = root / split
    files, labels, names = list_images(root)
    size = image_size or DEFAULT_SIZE
    decoded = [read_image(f, size, "L" if channels == 1 else "RGB") for f in files]
    x = np.stack([a for a, _ in decoded]).transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if channels == 0 and all(gray for _, gray in decoded):
        x = x[:, :1]  # every file was grayscale: R = G = B, keep one channel
    images = torch.from_numpy(np.ascontiguousarray(x))
    return labelled("folder", images, None if labels is None else np.array(labels), names, source=str(root))


# ------------------------------------------------------------------------------------------------- .npz
def _as_uint8_nchw(x: np.ndarray, file: Path) -> np.ndarray:
    """images (N, C, H, W), (N, H, W, C) or (N, H, W); float in [0, 1] or integers 0..255 -> uint8 (N, C, H, W)."""
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"{file}: `images` has shape {x.shape}; expected (N, C, H, W) with C = 1 or 3.")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind not in "fiu" or x.size == 0:
        raise UserError(f"{file}: `images` holds {x.dtype} values; expected floats in [0, 1] or uint8.")
    lo, hi = float(x.min()), float(x.max())
    if x.dtype.kind == "f":
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= -1e-3 and hi <= 1 + 1e-3):
            raise UserError(f"{file}: `images` runs from {lo:.3g} to {hi:.3g}; float images on disk must be in [0, 1] "
                            "(divide 0..255 data by 255, map [-1, 1] data with (x + 1) / 2).")
        return np.ascontiguousarray(np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8))
    if lo < 0 or hi > 255:
        raise UserError(f"{file}: integer `images` run from {lo:.0f} to {hi:.0f}; expected 0..255.")
    return np.ascontiguousarray(x.astype(np.uint8))


def load_npz(split: str = "train", path: str = "") -> ImageDataset:
    """Arrays you supply: FILE.npz with `images` (N, C, H, W) in [0, 1] or uint8 and optional `labels` (N,)."""
    if not path:
        raise UserError("data.name=npz needs data.path: a FILE.npz (or a folder holding train.npz and test.npz).")
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / f"{split}.npz"
    if not file.is_file():
        raise UserError(f"{file} does not exist; check data.path.")
    try:
        with np.load(file, allow_pickle=False) as z:  # never unpickle objects from a data file
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{file} is not a readable .npz file ({e}); write it with numpy.savez.") from None
    if "images" not in arrays and len(arrays) != 1:
        raise UserError(f"{file} has no `images` array (it has: {', '.join(arrays) or 'nothing'}); "
                        "save the images under the key `images`.")
    images = _as_uint8_nchw(arrays.get("images", next(iter(arrays.values()))), file)
    labels = arrays.get("labels")
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise UserError(f"{file}: `labels` is {labels.dtype} {labels.shape}; expected integers of shape (N,).")
    names = tuple(str(n) for n in arrays["class_names"]) if "class_names" in arrays else ()
    return labelled("npz", torch.from_numpy(images), labels, names, source=str(file))
