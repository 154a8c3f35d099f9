"""IDX files (LeCun's MNIST format, also used by Fashion-MNIST, EMNIST and KMNIST): a general reader and loaders.

Layout: magic = 0x00 0x00 <dtype code> <ndim>, then ndim big-endian uint32 sizes, then the values,
big-endian and row-major. Files may be gzipped; we tell from the content, not the name.
"""
from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .core import ImageDataset, labelled

# The IDX type codes (third magic byte) and the numpy dtype each stands for.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# train-images-idx3-ubyte, t10k-images.idx3-ubyte.gz, emnist-letters-test-images-idx3-ubyte, ...
_IMAGES = re.compile(r"^(?P<prefix>(?:.*[-_.])?)(?P<split>train|t10k|test)[-_.]images[-_.]"
                     r"idx3[-_.]ubyte(?:\.gz)?$")
_SPLIT_WORDS = {"train": ("train",), "test": ("t10k", "test")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (raw or gzipped) as an array of its stored shape and type, in native byte order."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # the gzip magic number
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; check data.path.") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not an IDX file; point at the file or use data.name=idx.") from None
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path} is a damaged gzip file ({e}); download it again.") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise UserError(f"{path} is not an IDX file (it starts with {raw[:4].hex() or 'nothing'}, where IDX "
                        "images start with 00000803 and labels with 00000801); check that it is the right file.")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    expected = header + dtype.itemsize * math.prod(dims)
    if len(raw) != expected or not dims:
        raise UserError(f"{path} is truncated or damaged: its header promises {expected - header} bytes of data "
                        f"and it holds {max(0, len(raw) - header)}; download it again.")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def labels_path_for(images: Path) -> Path | None:
    """The labels file that goes with an images file (same name with labels/idx1), raw or gzipped."""
    stem = re.sub(r"images([-_.])idx3", r"labels\1idx1", images.name).removesuffix(".gz")
    for name in (stem, stem + ".gz"):
        if (images.parent / name).is_file():
            return images.parent / name
    return None


def find_images_file(folder: Path, split: str) -> Path:
    """The one IDX images file of `split` in folder (a raw file is preferred to its .gz twin)."""
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist; set data.path to a folder holding IDX files "
                        "(train-images-idx3-ubyte.gz and friends).")
    found: dict[str, Path] = {}  # name without .gz -> file
    for f in sorted(folder.iterdir()):
        m = _IMAGES.match(f.name)
        if m and m["split"] in _SPLIT_WORDS[split] and f.is_file():
            stem = f.name.removesuffix(".gz")
            if stem not in found or not f.name.endswith(".gz"):  # the raw file reads faster than its .gz
                found[stem] = f
    if not found:
        want = "train-images-idx3-ubyte(.gz)" if split == "train" else "t10k-images-idx3-ubyte(.gz)"
        raise UserError(f"{folder} has no IDX images for the {split} split; it should hold {want}.")
    if len(found) > 1:
        raise UserError(f"{folder} holds several IDX image sets for {split} ({', '.join(found)}); "
                        "set data.path to the one images file you want.")
    return next(iter(found.values()))


def load_idx_images(images_file: Path, name: str, class_names=()) -> ImageDataset:
    """An IDX images file (N, H, W) uint8 and, when it is beside it, its labels file (N,)."""
    x = read_idx(images_file)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise UserError(f"{images_file} holds {x.dtype} data of shape {x.shape}; expected 8-bit images (N, H, W).")
    if images_file.name.lower().startswith("emnist"):
        x = x.transpose(0, 2, 1)  # EMNIST stores every image transposed (see its readme); (N, W, H) -> (N, H, W)
    images = torch.from_numpy(np.ascontiguousarray(x)[:, None])  # (N, H, W) -> (N, 1, H, W)
    labels_file = labels_path_for(images_file)
    y = None
    if labels_file is not None:
        y = read_idx(labels_file)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise UserError(f"{labels_file} holds {y.dtype} data of shape {y.shape}; expected integer labels (N,).")
    return labelled(name, images, y, class_names, source=str(images_file.parent))


def load_idx(split: str = "train", path: str = "") -> ImageDataset:
    """IDX files you supply (MNIST, EMNIST, KMNIST, ...): data.path = a folder or one images file."""
    if not path:
        raise UserError("data.name=idx needs data.path: a folder holding train-images-idx3-ubyte(.gz), "
                        "train-labels-idx1-ubyte(.gz), t10k-images-... and t10k-labels-... (or one images file).")
    p = Path(path).expanduser()
    images_file = p if p.is_file() else find_images_file(p, split)  # a single file serves both splits
    return load_idx_images(images_file, "idx")


def load_fashion(split: str = "train", path: str = "") -> ImageDataset:
    """Fashion-MNIST 28x28 grayscale, 10 clothing classes (Debian's dataset-fashion-mnist): 60k train, 10k test."""
    folder = Path(path or os.environ.get("FASHION_MNIST_DIR") or FASHION_DIR).expanduser()
    if not folder.is_dir():
        raise UserError(f"Fashion-MNIST is not at {folder}: install it with `apt-get install dataset-fashion-mnist` "
                        "(as root), or set data.path (or FASHION_MNIST_DIR) to a folder of its four IDX files.")
    return load_idx_images(find_images_file(folder, split), "fashion", FASHION_CLASSES)
