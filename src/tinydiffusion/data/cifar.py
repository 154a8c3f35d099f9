"""CIFAR-10 (Krizhevsky 2009) from the standard `cifar-10-batches-py` folder, read with the numpy-only unpickler.

Each batch file is a pickled dict: `data` uint8 (N, 3072), each row the 1024 red, then 1024 green, then 1024
blue values of a 32x32 image in row-major order; `labels` a list of N ints. `batches.meta` has `label_names`.
The official files are Python 2 pickles whose keys load as str; re-pickled ones may have bytes keys.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .core import ImageDataset, labelled, restricted_load

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
_HOWTO = ("download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it "
          "(tar xzf), and set data.path or CIFAR10_DIR to the cifar-10-batches-py folder")


def cifar_folder(path: str) -> Path:
    """The batches folder from data.path or $CIFAR10_DIR (its parent, where the archive was extracted, works too)."""
    given = path or os.environ.get("CIFAR10_DIR", "")
    if not given:
        raise UserError(f"CIFAR-10 is not on this machine: {_HOWTO}.")
    folder = Path(given).expanduser()
    if folder.is_file() and folder.name.endswith((".tar.gz", ".tgz")):
        raise UserError(f"{folder} is the archive; extract it with `tar xzf {folder}` and set data.path to "
                        f"the {FOLDER} folder inside.")
    if (folder / FOLDER).is_dir():
        folder = folder / FOLDER
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist; {_HOWTO}.")
    return folder


def _unpickle(file: Path) -> dict:
    """A pickled dict with str keys (Python 2 files give str keys, Python 3 ones bytes)."""
    try:
        with open(file, "rb") as f:
            d = restricted_load(f)
    except FileNotFoundError:
        raise UserError(f"{file} is missing; the CIFAR-10 folder is incomplete ({_HOWTO}).") from None
    except Exception as e:  # a damaged pickle raises many types (EOFError, UnpicklingError, ValueError, ...)
        raise UserError(f"{file} is not a readable CIFAR-10 file ({type(e).__name__}: {e}); "
                        "download and extract the archive again.") from None
    if not isinstance(d, dict):
        raise UserError(f"{file} holds a {type(d).__name__}, not a CIFAR-10 batch dict; check the folder.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    d = _unpickle(file)
    data, labels = d.get("data"), d.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
            and labels is not None and len(labels) == len(data)):
        raise UserError(f"{file} is not a CIFAR-10 batch (it needs `data` uint8 (N, 3072) and N `labels`); "
                        "check that the folder is cifar-10-batches-py.")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)  # (N, 3072) -> (N, 3, 32, 32)


def class_names(folder: Path) -> tuple[str, ...]:
    """label_names from batches.meta, or the standard ten when the file is absent."""
    if not (folder / "batches.meta").exists():
        return CIFAR10_CLASSES
    names = _unpickle(folder / "batches.meta").get("label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{folder / 'batches.meta'} has no label_names list; extract the archive again.")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def load_cifar10(split: str = "train", path: str = "") -> ImageDataset:
    """CIFAR-10 32x32 RGB, 10 classes, from data.path or $CIFAR10_DIR: 50k train (data_batch_1..5), 10k test."""
    folder = cifar_folder(path)
    if split == "train":
        numbered = [(int(m[1]), f) for f in folder.iterdir() if (m := re.fullmatch(r"data_batch_(\d+)", f.name))]
        files = [f for _, f in sorted(numbered)]  # every data_batch_N present, in order
        if not files:
            raise UserError(f"{folder} has no data_batch_1 ... data_batch_5 files; {_HOWTO}.")
    else:
        files = [folder / "test_batch"]
    parts = [read_batch(f) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    return labelled("cifar10", images, labels, class_names(folder), source=str(folder))
