"""`tinydiffusion eval`: sample-quality metrics of a samples file or of a run, and the feature classifier they use."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .common import add_sampling_args


def add_eval(sub):
    from ..eval.evaluate import METRICS

    p = sub.add_parser("eval", help="sample-quality metrics (fd_classifier, precision, recall, ...) of samples "
                                    "or a run")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--samples", type=Path, help=".npz (images (N, C, H, W) in [0, 1], optional labels) "
                                                     "or a folder of one-image PNGs")
    source.add_argument("--run", type=Path, help="a run directory: sample --n images, evaluate them and append "
                                                 "the result to its metrics.jsonl")
    p.add_argument("--dataset", help="the reference dataset (default mnist; with --run, the run's dataset)")
    p.add_argument("--metrics", help=f"comma-separated subset of: {', '.join(METRICS)} (default: all that apply)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--inception", type=Path, help="Inception weights (TorchScript or state dict) for fd_inception")
    p.add_argument("--train-classifier", action="store_true",
                   help="(re)train the dataset's feature classifier into the cache, then evaluate if asked to")
    p.add_argument("--epochs", type=float, default=2, help="classifier training epochs (with --train-classifier)")
    add_sampling_args(p.add_argument_group("with --run"), n=1000, n_help="number of samples to draw")
    p.set_defaults(func=run_eval)


def run_eval(args):
    from ..eval.features import train_classifier

    metrics = tuple(args.metrics.split(",")) if args.metrics else None
    dataset = args.dataset
    if args.run is not None:
        from ..checkpoint import load_meta

        run_dataset = load_meta(args.run).get("dataset", "mnist")
        if dataset and dataset != run_dataset:
            raise UserError(f"The run in {args.run} was trained on '{run_dataset}', not '{dataset}'; drop --dataset.")
        dataset = run_dataset
    dataset = dataset or "mnist"
    if args.train_classifier:
        info = train_classifier(dataset, epochs=args.epochs)
        print(f"feature classifier for '{dataset}': test accuracy {info['test_accuracy']:.2%} "
              f"({info['steps']} steps, {info['train_seconds']:.0f} s)")
    if args.samples is not None:
        report = _evaluate_file(args.samples, dataset, metrics, args.inception)
    elif args.run is not None:
        report = _evaluate_run(args, metrics)
        if report is None:
            return
    elif args.train_classifier:
        return
    else:
        raise UserError("Give --samples FILE, --run DIR, or --train-classifier.")
    print_table(report)
    if args.json:
        from ..io import write_text

        write_text(args.json, json.dumps(report, indent=2))
        print(f"wrote {args.json}")


def _evaluate_file(path: Path, dataset: str, metrics, inception) -> dict:
    from ..data import load_samples
    from ..eval.evaluate import evaluate_report

    images, labels = load_samples(path)
    return {"samples": str(path), **evaluate_report(images, labels, dataset, metrics, inception=inception)}


def _evaluate_run(args, metrics) -> dict:
    from ..device import resolve_device
    from ..eval.evaluate import evaluate_run

    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1.")
    report = evaluate_run(args.run, args.n, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                          seed=args.seed, batch_size=args.batch_size, device=resolve_device(args.device),
                          use_ema=not args.raw, metrics=metrics, inception=args.inception)
    if report is None:  # a rank other than 0 under torchrun: it sampled its share; rank 0 reports
        return None
    s = report["sampling"]
    print(f"sampled {s['n']} images with {s['sampler']} ({s['steps']} steps, {s['spacing']} spacing) in "
          f"{s['seconds']:.0f} s; "
          f"appended to {args.run / 'metrics.jsonl'} at step {report['step']}")
    return {"run": str(args.run), **report}


def print_table(report: dict) -> None:
    """A two-column table of the metrics, then the class histogram and the classifier used."""
    rows = report["metrics"]
    width = max(map(len, rows)) + 2
    print(f"{'metric':<{width}}value")
    for name, value in rows.items():
        print(f"{name:<{width}}{value:.0f}" if name in ("n", "k") else f"{name:<{width}}{value:.4f}")
    if report["class_histogram"]:
        print("classes: " + " ".join(f"{c}:{v}" for c, v in report["class_histogram"].items()))
    clf = report["classifier"]
    if clf:
        print(f"features: {report['dataset']} {clf['architecture']} (test accuracy {clf['test_accuracy']:.2%}, "
              f"digest {clf['digest']}); vs the test split; k-NN metrics on an equal-sized test subset")
