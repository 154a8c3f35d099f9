"""Datasets held in memory as uint8 tensors (N, C, H, W), served as float batches in [-1, 1].

Every loader is `loader(split="train"|"test", path="") -> ImageDataset` in the DATASETS registry; load_dataset
also accepts a bare path (an image folder, an .npz file, a CIFAR-10 or IDX folder) as the name, and fits the
images to data.image_size / data.channels. Nothing downloads: each loader says where to put its files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..registry import Registry
from .cifar import load_cifar10
from .core import (Batches, ImageDataset, conform, convert_channels, resize_center_crop, restricted_load,
                   to_model_range, to_unit_range)
from .files import load_folder, load_npz
from .idx import load_fashion, load_idx, read_idx
from .mnist import load_mnist, mnist_pickle_path, read_mnist_pickle
from .samples import load_samples, write_samples

__all__ = ["DATASETS", "Batches", "ImageDataset", "load_dataset", "resolve", "restricted_load", "to_model_range",
           "to_unit_range", "conform", "convert_channels", "resize_center_crop", "read_idx", "mnist_pickle_path",
           "read_mnist_pickle", "load_samples", "write_samples"]



@dataclass(frozen=True)
class DatasetEntry:
    """A loader(split, path) -> ImageDataset; `fits_as_it_decodes`: it also takes image_size and channels and
    fits each image while decoding (image folders), instead of conform() fitting the decoded set."""

    loader: Callable
    fits_as_it_decodes: bool = False


DATASETS = Registry("dataset", ", or give the path of an image folder or .npz file")
DATASETS.add("mnist", DatasetEntry(load_mnist), load_mnist.__doc__.splitlines()[0])
DATASETS.add("fashion", DatasetEntry(load_fashion), load_fashion.__doc__.splitlines()[0])
DATASETS.add("cifar10", DatasetEntry(load_cifar10), load_cifar10.__doc__.splitlines()[0])
DATASETS.add("idx", DatasetEntry(load_idx), load_idx.__doc__.splitlines()[0])
DATASETS.add("folder", DatasetEntry(load_folder, fits_as_it_decodes=True), load_folder.__doc__.splitlines()[0])
DATASETS.add("npz", DatasetEntry(load_npz), load_npz.__doc__.splitlines()[0])


def resolve(name: str, path: str = "") -> tuple[str, str]:
    """(registered name, path): a registered name passes through; a path given as the name is classified."""
    if name in DATASETS:
        return name, path
    p = Path(name).expanduser()
    if not p.exists():
        if "/" not in name and "." not in name:
            DATASETS.get(name)  # the unknown name's sentence
        raise UserError(f"{name} does not exist; choose one of: {', '.join(DATASETS)}, or give the path of an "
                        "image folder or .npz file.")
    if path:
        raise UserError(f"data.name is already a path ({name}) and data.path is set too ({path}); give one of them.")
    if p.is_file():
        if p.suffix == ".npz":
            return "npz", str(p)
        if "idx" in p.name:
            return "idx", str(p)
        raise UserError(f"{p} is a file tinydiffusion cannot read as a dataset; give an .npz file, an IDX file "
                        "or a folder.")
    names = {f.name for f in p.iterdir()}
    if names & {"batches.meta", "test_batch", "data_batch_1", "cifar-10-batches-py"}:
        return "cifar10", str(p)
    if any("idx3-ubyte" in n for n in names):
        return "idx", str(p)
    if {"train.npz", "test.npz"} & names:
        return "npz", str(p)
    return "folder", str(p)


def load_dataset(name: str, split: str = "train", path: str = "", *, image_size: int = 0,
                 channels: int = 0) -> ImageDataset:
    """A registered dataset by name ('mnist', 'cifar10', ...) or a path, split 'train' or 'test', fitted to
    image_size x image_size (0 = native) and `channels` (0 = as stored, 1 = grayscale, 3 = RGB)."""
    if split not in ("train", "test"):
        raise UserError(f"Unknown split '{split}'; choose train or test.")
    name, path = resolve(name, path)
    entry = DATASETS.get(name)
    options = dict(image_size=image_size, channels=channels) if entry.fits_as_it_decodes else {}
    ds = entry.loader(split=split, path=path, **options)
    if len(ds) == 0:
        raise UserError(f"Dataset '{name}' ({split}) has no images.")
    return conform(ds, image_size, channels)
