"""Feature extractors for evaluation: the project's per-dataset classifier and, optionally, an Inception network
from a file the user supplies.

The classifier behind fd_classifier ships inside the package for MNIST (eval/weights/mnist.safetensors + .json:
architecture, recorded test accuracy, metric version), so the metric is the same function on every machine;
datasets without shipped weights get one trained here once and cached outside the repo.

Cache layout, under $TINYDIFFUSION_CACHE or ~/.cache/tinydiffusion:
  classifiers/{dataset}.safetensors + {dataset}.json   trained weights; dataset, architecture, test accuracy
  reference/{dataset}-{extractor}-{digest}.safetensors  test-split features, mean, covariance (per weights file)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data import load_dataset, to_model_range
from ..device import autocast, use_bf16
from ..errors import UserError
from ..io import atomic_write, write_text
from .classifier import build_classifier, classifier_architecture
from .metrics import gaussian_stats

CACHE_ENV = "TINYDIFFUSION_CACHE"


def cache_dir() -> Path:
    """$TINYDIFFUSION_CACHE, else ~/.cache/tinydiffusion (read at call time so tests can redirect it)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tinydiffusion")


SHIPPED = Path(__file__).parent / "weights"  # classifiers that ship with the package
METRIC_VERSION = "fd_classifier/1"  # changes whenever a shipped classifier or the metric's definition does


def shipped_paths(dataset: str) -> tuple[Path, Path] | None:
    """(weights, info) of the classifier shipped for dataset, or None."""
    weights, info = SHIPPED / f"{dataset}.safetensors", SHIPPED / f"{dataset}.json"
    return (weights, info) if weights.exists() and info.exists() else None


def classifier_paths(dataset: str) -> tuple[Path, Path]:
    """Where the trained (cached) classifier of a dataset lives."""
    d = cache_dir() / "classifiers"
    return d / f"{dataset}.safetensors", d / f"{dataset}.json"


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256: reference statistics are keyed by it, so they are
    recomputed whenever the network that made them changes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


BATCH = 500  # images per feature-extraction batch


# -------------------------------------------------------------------------------------------- features
@torch.no_grad()
def batched(fn, images01: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    return torch.cat([fn(images01[s:s + batch]) for s in range(0, len(images01), batch)])


def classifier_outputs(net, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D), predicted class (N,)) of images in [0, 1], in float32 (no autocast: exact and repeatable)."""
    def fn(x):
        f = net.features(x * 2 - 1)  # the library's [-1, 1] convention
        return torch.cat([f, net.head(f).argmax(1, keepdim=True).float()], 1)  # (B, D + 1)
    out = batched(fn, images01)
    return out[:, :-1].contiguous(), out[:, -1].long()


def reference(dataset: str, name: str, digest: str, fn, batch: int = BATCH) -> dict[str, torch.Tensor]:
    """Test-split features of an extractor with their mean / covariance (float64), cached per extractor digest;
    files made by an earlier version of the extractor are deleted when a new one is written."""
    path = cache_dir() / "reference" / f"{dataset}-{name}-{digest}.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # a damaged cache file is recomputed below
            pass
    print(f"note: computing the '{dataset}' test-split reference for {name} (once; cached in {path.parent}).",
          file=sys.stderr)
    test = load_dataset(dataset, "test")
    return save_reference(dataset, name, digest, batched(fn, test.images.float() / 255, batch))


def save_reference(dataset: str, name: str, digest: str, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Store test-split features (N_test, D) with their mean and covariance; drop other digests' files."""
    path = cache_dir() / "reference" / f"{dataset}-{name}-{digest}.safetensors"
    mu, sigma = gaussian_stats(feats)  # float64
    ref = dict(features=feats.contiguous(), mu=mu, sigma=sigma.contiguous())
    atomic_write(path, lambda tmp: save_file(ref, tmp))
    for stale in path.parent.glob(f"{dataset}-{name}-*.safetensors"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return ref


# ------------------------------------------------------------------------------------------- classifier
def train_classifier(dataset: str = "mnist", *, epochs: float = 2, limit: int | None = None, seed: int = 0,
                     batch_size: int = 128, lr: float = 2e-3, precision: str = "auto", quiet: bool = False) -> dict:
    """Train the feature classifier on the train split (Adam, warm-up + cosine decay; bf16 autocast where the CPU
    has it, see device.py), measure its test accuracy, and store weights + JSON in the cache. `limit` trains on
    a random subset (for tests)."""
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    bf16 = use_bf16(precision, "cpu")
    if train.labels is None or not train.num_classes:
        raise UserError(f"Dataset '{dataset}' has no labels, so no feature classifier can be trained for it.")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    C, H, W = train.shape
    arch = classifier_architecture(C, train.num_classes)
    net = build_classifier(arch)
    images, labels = train.images, train.labels
    if limit:
        keep = torch.randperm(len(images), generator=g)[:limit]
        images, labels = images[keep], labels[keep]
    steps_per_epoch = max(1, len(images) // batch_size)  # a subset smaller than a batch is one batch
    total = max(1, math.ceil(epochs * steps_per_epoch))
    warmup = min(100, total // 10 + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start, net = time.perf_counter(), net.train()
    for step in range(total):
        i = step % steps_per_epoch
        if i == 0:
            perm = torch.randperm(len(images), generator=g)
        idx = perm[i * batch_size:(i + 1) * batch_size]
        x = to_model_range(images[idx])  # (B, C, H, W) in [-1, 1]
        if C == 3:  # colour photos (CIFAR-10): random horizontal flips; digits and clothes are not mirror-symmetric
            flip = torch.rand(len(idx), generator=g) < 0.5
            x[flip] = x[flip].flip(-1)
        for group in opt.param_groups:  # linear warm-up, then cosine decay to 0
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
        with autocast("cpu", bf16):
            loss = F.cross_entropy(net(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not quiet and (step + 1) % 100 == 0:
            print(f"  classifier step {step + 1}/{total}, loss {loss.item():.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    net.eval()
    feats, pred = classifier_outputs(net, test.images.float() / 255)  # one pass: accuracy and the reference
    accuracy = (pred == test.labels).double().mean().item()
    info = dict(dataset=dataset, architecture=arch, image_shape=[C, H, W], class_names=list(train.class_names),
                test_accuracy=accuracy, train_images=len(images), epochs=epochs, steps=total, seed=seed,
                train_seconds=round(seconds, 1), torch_version=torch.__version__)
    weights, meta = classifier_paths(dataset)
    atomic_write(weights, lambda tmp: save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp))
    write_text(meta, json.dumps(info, indent=2))
    save_reference(dataset, "classifier", file_digest(weights), feats)
    if not quiet:
        print(f"feature classifier for '{dataset}': test accuracy {accuracy:.2%} after {seconds:.0f} s; "
              f"saved to {weights}", file=sys.stderr)
    return info


def load_classifier(dataset: str) -> tuple[torch.nn.Module, dict]:
    """(classifier in eval mode, its JSON info incl. 'digest' and 'metric_version'): the shipped one where the
    package has it, else the cached one, trained into the cache on first use."""
    weights, meta = shipped_paths(dataset) or classifier_paths(dataset)
    if not weights.exists() or not meta.exists():
        print(f"note: no feature classifier for '{dataset}' in {weights.parent}; training one now (a few minutes "
              "on a CPU, once; `tinydiffusion eval --train-classifier` does this explicitly).", file=sys.stderr)
        train_classifier(dataset)
    try:
        info = json.loads(meta.read_text())
        net = build_classifier(info["architecture"])
        net.load_state_dict(load_file(str(weights)))
    except (json.JSONDecodeError, KeyError, TypeError, SafetensorError, RuntimeError, OSError):
        raise UserError(f"The cached classifier {weights} is damaged or from another version; rebuild it with "
                        f"`tinydiffusion eval --train-classifier --dataset {dataset}`.") from None
    if info.get("dataset") != dataset:
        raise UserError(f"{meta} describes dataset '{info.get('dataset')}', not '{dataset}'; rebuild it with "
                        f"`tinydiffusion eval --train-classifier --dataset {dataset}`.")
    info["digest"] = file_digest(weights)
    info.setdefault("metric_version", f"{METRIC_VERSION} (trained on this machine: compare within it only)")
    return net.eval(), info
