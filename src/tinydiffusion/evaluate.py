"""Offline sample-quality metrics: samples (N, C, H, W) in [0, 1] against a dataset's test split, in the features
of the project's own classifier (`fd_classifier`, k-NN precision / recall / density / coverage, class entropy,
label accuracy) and optionally of Inception (`fd_inception`).

Conventions. The Fréchet distance compares the samples with the whole test split. The k-NN metrics use k = 5
(Naeem et al. 2020's choice, for all four; Kynkäänniemi et al. 2019 used k = 3) and a fixed random subset of
the test split the size of the sample set (capped at the split), because k-NN radii shrink as a set grows and
the papers compare equal-sized sets. Both kinds of metric are biased by the sample count: compare numbers at equal N.
"""
from __future__ import annotations

import json
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .data import DATASETS, load_dataset
from .device import use_bf16
from .errors import UserError
from .features import batched, classifier_outputs, file_digest, load_classifier, reference
from .metrics import frechet_distance, gaussian_stats, normalised_entropy, prdc

K = 5  # k-NN neighbourhood size for precision, recall, density, coverage
METRICS = ("fd_classifier", "precision", "recall", "density", "coverage", "class_entropy", "label_accuracy",
           "fd_inception")
INCEPTION_BATCH = 50  # Inception's first layers hold ~5 MB of activations per 299x299 image


# ------------------------------------------------------------------------------------------------ input
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


def check_images(images01, shape: tuple[int, int, int]) -> torch.Tensor:
    """Validate samples against the dataset's image shape and the [0, 1] range; returns a float32 tensor."""
    if not isinstance(images01, torch.Tensor):
        raise UserError(f"Samples must be a torch.Tensor (N, C, H, W), got {type(images01).__name__}.")
    if images01.ndim != 4 or tuple(images01.shape[1:]) != tuple(shape):
        raise UserError(f"Samples have shape {tuple(images01.shape)}; expected (N, {', '.join(map(str, shape))}) "
                        "for this dataset.")
    if len(images01) <= K:
        raise UserError(f"Need more than {K} samples to evaluate, got {len(images01)}; "
                        "1000 or more give stable numbers.")
    x = images01.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise UserError("Samples contain NaN or infinite values.")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise UserError(f"Sample values span [{lo:.3g}, {hi:.3g}]; expected [0, 1] "
                        "(convert from [-1, 1] with (x + 1) / 2).")
    return x


def _reference_subset(features: torch.Tensor, n: int) -> torch.Tensor:
    """A fixed random subset of n reference rows (same for every call, so k-NN metrics are comparable)."""
    if n >= len(features):
        return features
    g = torch.Generator().manual_seed(0)
    return features[torch.randperm(len(features), generator=g)[:n]]


# -------------------------------------------------------------------------------------------- evaluate
def evaluate_report(images01: torch.Tensor, labels: torch.Tensor | None = None, dataset: str = "mnist",
                    metrics: tuple[str, ...] | None = None, *, inception=None) -> dict:
    """evaluate_samples plus the class histogram and the classifier's description (for tables and JSON files)."""
    if dataset not in DATASETS:
        raise UserError(f"Unknown dataset '{dataset}'; choose one of: {', '.join(DATASETS)}.")
    wanted = _resolve_metrics(metrics, labels is not None, inception is not None)
    report = dict(dataset=dataset, metrics={}, class_histogram={}, classifier=None)
    if wanted == {"fd_inception"}:  # Inception alone: no classifier needed (nor trained on first use)
        x = check_images(images01, load_dataset(dataset, "test").shape)
    else:
        net, info = load_classifier(dataset)
        x = check_images(images01, tuple(info["image_shape"]))
        report["metrics"], report["class_histogram"] = _classifier_metrics(net, info, x, labels, dataset, wanted)
        report["classifier"] = dict(test_accuracy=info["test_accuracy"], digest=info["digest"],
                                    architecture=info["architecture"]["name"])
    report["metrics"] = {"n": float(len(x)), **report["metrics"]}
    if "fd_inception" in wanted:
        report["metrics"]["fd_inception"] = _fd_inception(x, dataset, Path(inception))
    return report


def _classifier_metrics(net, info: dict, x: torch.Tensor, labels, dataset: str, wanted: set) -> tuple[dict, dict]:
    """(metrics, class histogram) in the classifier's feature space; x already validated."""
    num_classes = info["architecture"]["num_classes"]
    if labels is not None:
        labels = torch.as_tensor(labels).long().flatten()
        if labels.shape != (len(x),) or labels.min() < 0 or labels.max() >= num_classes:
            raise UserError(f"Labels must be {len(x)} integers in [0, {num_classes - 1}], one per image.")
    feats, pred = classifier_outputs(net, x)  # (N, D), (N,)
    ref = reference(dataset, "classifier", info["digest"], lambda b: classifier_outputs(net, b)[0])
    out: dict[str, float] = {}
    if "fd_classifier" in wanted:
        out["fd_classifier"] = frechet_distance(*gaussian_stats(feats), ref["mu"], ref["sigma"])
    if wanted & {"precision", "recall", "density", "coverage"}:
        out["k"] = float(K)
        scores = prdc(_reference_subset(ref["features"], len(x)), feats, k=K)
        out.update({m: v for m, v in scores.items() if m in wanted})
    hist = torch.bincount(pred, minlength=num_classes)
    if "class_entropy" in wanted:
        out["class_entropy"] = normalised_entropy(hist.numpy())
    if "label_accuracy" in wanted:
        out["label_accuracy"] = (pred == labels).double().mean().item()
    names = info.get("class_names") or [str(i) for i in range(num_classes)]
    return out, dict(zip(names, hist.tolist()))


def evaluate_samples(images01: torch.Tensor, labels: torch.Tensor | None = None, dataset: str = "mnist",
                     metrics: tuple[str, ...] | None = None, *, inception=None) -> dict[str, float]:
    """Sample-quality metrics of images (N, C, H, W) in [0, 1] vs the dataset's test split: "n", "fd_classifier"
    (lower is better), "precision", "recall", "density", "coverage" (k-NN, k = "k"), "class_entropy",
    "label_accuracy" (labels given) and "fd_inception" (inception = path to Inception weights)."""
    return evaluate_report(images01, labels, dataset, metrics, inception=inception)["metrics"]


def _resolve_metrics(metrics, have_labels: bool, have_inception: bool) -> set[str]:
    if metrics is None:
        wanted = set(METRICS) - {"label_accuracy", "fd_inception"}
        return wanted | ({"label_accuracy"} if have_labels else set()) | ({"fd_inception"} if have_inception else set())
    wanted = {m.strip() for m in metrics if m.strip()}
    unknown = wanted - set(METRICS)
    if unknown or not wanted:
        raise UserError(f"Unknown metric(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                        f"choose from: {', '.join(METRICS)}.")
    if "label_accuracy" in wanted and not have_labels:
        raise UserError("label_accuracy needs labels (an .npz with a 'labels' array).")
    if "fd_inception" in wanted and not have_inception:
        raise UserError("fd_inception needs Inception weights: pass --inception PATH (inception=PATH).")
    return wanted


def _fd_inception(images01: torch.Tensor, dataset: str, path: Path) -> float:
    """Fréchet distance (Heusel et al. 2017) in the 2048-d pool features of the user's Inception file."""
    from .inception import load_inception

    fn = load_inception(path)
    ref = reference(dataset, "inception", file_digest(path), fn, INCEPTION_BATCH)
    return frechet_distance(*gaussian_stats(batched(fn, images01, INCEPTION_BATCH)), ref["mu"], ref["sigma"])


# ------------------------------------------------------------------------------------------------ runs
def append_row(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def evaluate_run(run_dir: Path, n: int = 1000, *, sampler: str | None = None, steps: int | None = None,
                 spacing: str | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu",
                 use_ema: bool = True, metrics: tuple[str, ...] | None = None, inception=None) -> dict:
    """Sample n images from a run, evaluate them, and append {"step", "eval", ...} to the run's metrics.jsonl."""
    from .checkpoint import CONFIG, load_meta
    from .config import load_config
    from .data import to_unit_range
    from .generate import sample_run

    run_dir = Path(run_dir)
    meta, cfg = load_meta(run_dir), load_config(run_dir / CONFIG)
    start = time.perf_counter()
    images = sample_run(run_dir, n, sampler=sampler, steps=steps, spacing=spacing, seed=seed,
                        batch_size=batch_size, device=device, use_ema=use_ema)
    seconds = time.perf_counter() - start
    report = evaluate_report(to_unit_range(images), None, meta.get("dataset", "mnist"), metrics, inception=inception)
    row = dict(step=int(meta.get("step", 0)), eval=report["metrics"], class_histogram=report["class_histogram"],
               sampling=dict(sampler=sampler or cfg.sample.sampler, steps=steps or cfg.sample.steps,
                             spacing=spacing or cfg.sample.spacing, seed=seed,
                             n=n, ema=use_ema, seconds=round(seconds, 1)))
    append_row(run_dir / "metrics.jsonl", row)
    return {**report, **row}


@torch.no_grad()
def evaluate_during_training(net, schedule, cfg, meta: dict, step: int, metrics_path: Path, device) -> None:
    """train.eval_every hook: sample cfg.train.eval_n images with the run's sampler, append an eval row."""
    from .data import to_unit_range
    from .generate import generate

    n, k = cfg.train.eval_n, meta.get("num_classes", 0)
    cond = torch.arange(n) % k if k else None  # conditional runs: balanced labels, so label_accuracy is measured
    g = torch.Generator().manual_seed(cfg.seed)
    x = generate(net.eval(), schedule, cfg.sample, cfg.diffusion.prediction, n, tuple(meta["shape"]),
                 generator=g, device=device, cond=cond, bf16=use_bf16(cfg.train.precision, device))
    report = evaluate_report(to_unit_range(x), cond, meta["dataset"])
    append_row(metrics_path, dict(step=step, eval=report["metrics"], class_histogram=report["class_histogram"]))
