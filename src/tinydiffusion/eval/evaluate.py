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
from pathlib import Path

import torch

from .. import distributed

from ..data import DATASETS, load_dataset, to_unit_range
from ..device import use_bf16
from ..errors import UserError
from ..registry import Registry
from .features import batched, classifier_outputs, file_digest, load_classifier, reference
from .metrics import frechet_distance, gaussian_stats, normalised_entropy, prdc

K = 5  # k-NN neighbourhood size for precision, recall, density, coverage
METRICS = Registry("metric")
METRICS.add("fd_classifier", text="Frechet distance in the project classifier's 128-d features, vs the test split")
METRICS.add("precision", text="share of samples inside the test set's k-NN manifold (Kynkaanniemi et al. 2019)")
METRICS.add("recall", text="share of test images inside the samples' k-NN manifold")
METRICS.add("density", text="how many test k-NN balls hold each sample, / k (Naeem et al. 2020)")
METRICS.add("coverage", text="share of test images whose k-NN ball holds a sample")
METRICS.add("class_entropy", text="normalised entropy of the classifier's class histogram (1 = all classes alike)")
METRICS.add("label_accuracy", text="share of samples the classifier reads as their requested class (needs labels)")
METRICS.add("fd_inception", text="Inception FID, from a user-supplied weights file (--inception PATH)")
INCEPTION_BATCH = 50  # Inception's first layers hold ~5 MB of activations per 299x299 image


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
    DATASETS.check(dataset)
    wanted = _resolve_metrics(metrics, labels is not None, inception is not None)
    report = dict(dataset=dataset, metrics={}, class_histogram={}, classifier=None)
    if wanted == {"fd_inception"}:  # Inception alone: no classifier needed (nor trained on first use)
        x = check_images(images01, load_dataset(dataset, "test").shape)
    else:
        net, info = load_classifier(dataset)
        x = check_images(images01, tuple(info["image_shape"]))
        report["metrics"], report["class_histogram"] = _classifier_metrics(net, info, x, labels, dataset, wanted)
        report["classifier"] = dict(test_accuracy=info["test_accuracy"], digest=info["digest"],
                                    architecture=info["architecture"]["name"], metric_version=info["metric_version"])
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
    """Sample n images from a run, evaluate them, and append {"step", "eval", ...} to the run's metrics.jsonl.
    Under torchrun the n images are sampled by all ranks (generate's per-batch streams: the same images as one
    process) and rank 0 alone evaluates and writes; the other ranks return None."""
    from ..checkpoint import CONFIG, load_meta
    from ..config import load_config
    from ..runs import sample_run

    run_dir = Path(run_dir)
    meta, cfg = load_meta(run_dir), load_config(run_dir / CONFIG)
    start = time.perf_counter()
    images = sample_run(run_dir, n, sampler=sampler, steps=steps, spacing=spacing, seed=seed,
                        batch_size=batch_size, device=device, use_ema=use_ema)
    seconds = time.perf_counter() - start
    if not distributed.is_main():
        return None
    report = evaluate_report(to_unit_range(images), None, meta.get("dataset", "mnist"), metrics, inception=inception)
    row = dict(step=int(meta.get("step", 0)), eval=report["metrics"], class_histogram=report["class_histogram"],
               sampling=dict(sampler=sampler or cfg.sample.sampler, steps=steps or cfg.sample.steps,
                             spacing=spacing or cfg.sample.spacing, seed=seed,
                             n=n, ema=use_ema, seconds=round(seconds, 1)))
    append_row(run_dir / "metrics.jsonl", row)
    return {**report, **row}


@torch.no_grad()
def evaluate_during_training(net, path, cfg, meta: dict, step: int, metrics_path: Path, device) -> None:
    """train.eval_every hook: sample cfg.train.eval_n images with the run's sampler, append an eval row."""
    from ..conditioning import Cond
    from ..generate import denoiser_for, generate

    n, k = cfg.train.eval_n, meta.get("num_classes", 0)
    labels = torch.arange(n) % k if k else None  # conditional runs: balanced labels, so label_accuracy is measured
    g = torch.Generator().manual_seed(cfg.seed)
    x = generate(denoiser_for(net.eval(), path, cfg.diffusion.prediction, cfg.sample), cfg.sample, n,
                 tuple(meta["shape"]), generator=g, device=device, cond=None if labels is None else Cond(labels=labels),
                 bf16=use_bf16(cfg.train.precision, device))
    from ..latent_space import to_pixels
    report = evaluate_report(to_unit_range(to_pixels(meta, x, device)), labels, meta["dataset"])
    append_row(metrics_path, dict(step=step, eval=report["metrics"], class_histogram=report["class_histogram"]))
