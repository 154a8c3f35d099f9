"""Which real digits make a fair floor for fd_classifier? The shipped classifier was trained on the 60k training
digits and the metric's reference is the 10k test split, so no MNIST digit is unseen by both. This splits the test
digits at random into n held out and 10k - n reference, and scores against that same reference (a) the n held-out
test digits (unseen by the classifier and not in the reference) and (b) n random training digits (not in the
reference, seen by the classifier). Run: `python -m benchmarks.heldout_floor [--n 1000] [--splits 5]`.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from tinydiffusion.data import load_dataset
from tinydiffusion.eval.features import classifier_outputs, load_classifier
from tinydiffusion.eval.metrics import frechet_distance, gaussian_stats


def features(net, images: torch.Tensor) -> torch.Tensor:
    return classifier_outputs(net, images.float() / 255)[0]  # uint8 (N, 1, 28, 28) -> (N, 128)


@torch.no_grad()
def heldout_floor(n: int = 1000, splits: int = 5) -> list[tuple[float, float]]:
    """(fd of n held-out test digits, fd of n training digits) against the remaining test digits, per split."""
    net, _ = load_classifier("mnist")
    test, train = load_dataset("mnist", "test"), load_dataset("mnist", "train")
    ft = features(net, test.images)
    rows = []
    for k in range(splits):
        perm = torch.randperm(len(ft), generator=torch.Generator().manual_seed(100 + k))
        ref = gaussian_stats(ft[perm[n:]])
        held = frechet_distance(*gaussian_stats(ft[perm[:n]]), *ref)
        idx = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(k))[:n]
        rows.append((held, frechet_distance(*gaussian_stats(features(net, train.images[idx])), *ref)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--splits", type=int, default=5)
    args = p.parse_args()
    rows = heldout_floor(args.n, args.splits)
    for k, (held, train) in enumerate(rows):
        print(f"split {k}: held-out test digits {held:.2f}   training digits {train:.2f}")
    print(f"mean: held-out test digits {statistics.mean(r[0] for r in rows):.2f}   "
          f"training digits {statistics.mean(r[1] for r in rows):.2f}")


if __name__ == "__main__":
    main()
