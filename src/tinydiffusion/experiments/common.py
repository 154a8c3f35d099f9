"""What the training experiments share: budget flags, training a variant into the report folder, sampling with a
stopwatch, the project metric, sharpness, and test digits. Each experiment module stays a short script."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from ..checkpoint import CONFIG
from ..conditioning import Cond
from ..config import Config, apply_overrides, get_preset
from ..data import load_dataset, to_model_range, to_unit_range
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..latent_space import to_pixels
from ..runs import load_run
from ..viz.grids import save_grid

METRIC_KEYS = ("fd_classifier", "precision", "recall", "class_entropy")


def add_common(p, *, minutes: float, preset: str = "mnist", n: int = 256, sample_steps: int | None = 100):
    """The flags every training experiment takes. The budget is per trained model."""
    p.add_argument("--out", type=Path, help="report folder (default reports/NAME)")
    p.add_argument("--preset", default=preset, help=f"the recipe every variant starts from (default {preset})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=minutes,
                        help=f"training budget per model in minutes of wall-clock (default {minutes:g})")
    budget.add_argument("--steps", type=int, help="training budget per model in optimiser steps instead")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every variant, e.g. --set model.channels=16 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--n", type=int, default=n, help=f"samples per model for the metric (default {n})")
    p.add_argument("--sample-steps", type=int, default=sample_steps,
                   help="sampler steps per image (default %s)" % (sample_steps or "the run's"))
    p.add_argument("--reuse", action="store_true", help="reuse runs already in the report folder (no retraining)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def out_dir(args, name: str) -> Path:
    return Path(args.out) if args.out else Path("reports") / name


def check_sizes(args) -> None:
    if args.n < 2:
        raise UserError("--n must be at least 2 (the metric compares distributions).")
    if args.sample_steps is not None and args.sample_steps < 1:
        raise UserError("--sample-steps must be at least 1.")
    if (args.minutes is None or args.minutes <= 0) and not args.steps:
        raise UserError("Give a positive --minutes or --steps budget.")


def variant_config(args, overrides: list[str] = ()) -> Config:
    """The preset, the user's --set overrides, the variant's overrides, then the budget and seed."""
    cfg = apply_overrides(get_preset(args.preset), list(args.overrides) + list(overrides))
    train = replace(cfg.train, minutes=0 if args.steps else args.minutes, steps=args.steps or 0, epochs=0,
                    sample_every=0)
    return replace(cfg, train=train, seed=args.seed)


def train_variant(args, cfg: Config, run_dir: Path) -> dict:
    """Train cfg into run_dir (or reuse it with --reuse). Returns steps, minutes, epochs, the last logged loss and
    img_s (training images per second of wall-clock over the whole run)."""
    from ..train import train
    from ..viz.curves import read_metrics

    if (run_dir / CONFIG).exists():
        if not args.reuse:
            raise UserError(f"{run_dir} already holds a run from an earlier experiment; pass --reuse to use it, "
                            "or choose another --out.")
    else:
        train(cfg, run_dir, device=args.device, quiet=args.quiet)
    rows = read_metrics(run_dir)
    steps, seconds = rows[-1]["step"], rows[-1]["elapsed_s"]
    return dict(steps=steps, minutes=seconds / 60, epochs=rows[-1].get("epoch", 0.0), loss=rows[-1]["loss"],
                img_s=steps * cfg.train.batch_size / seconds)


@torch.no_grad()
def sample_timed(run_dir: Path, n: int, steps: int | None, seed: int, device: str = "auto"):
    """n samples from a run with its sampler (steps capped at T), timed.
    Returns (images in [-1, 1], milliseconds per image, steps used)."""
    from ..device import resolve_device, use_bf16

    dev = resolve_device(device)
    cfg, net, path, meta = load_run(run_dir, device=dev)
    steps = min(steps or cfg.sample.steps, path.T or 10**6)  # a DDPM table has T steps; continuous time any
    sample_cfg = replace(cfg.sample, steps=steps)
    k = int(meta.get("num_classes", 0))
    cond = Cond(labels=torch.arange(n) % k) if k else None  # conditional runs: classes in turn
    start = time.perf_counter()
    x = generate(denoiser_for(net, path, cfg.diffusion.prediction, sample_cfg), sample_cfg, n,
                 tuple(meta["shape"]), generator=torch.Generator().manual_seed(seed), device=dev, cond=cond,
                 bf16=use_bf16(cfg.train.precision, dev))
    x = to_pixels(meta, x, dev).clamp(-1, 1)  # a latent run: the decoder pass counts in the time
    return x, (time.perf_counter() - start) / n * 1000, steps


def project_metric(images01: torch.Tensor, dataset: str = "mnist") -> dict:
    """The project's sample-quality numbers (fd_classifier lower is better; precision, recall, class_entropy)."""
    try:
        from ..eval.evaluate import evaluate_samples
    except ImportError:
        raise UserError("This experiment needs the project metric (tinydiffusion.evaluate), which this install "
                        "lacks; update tinydiffusion.") from None
    result = evaluate_samples(images01, labels=None, dataset=dataset, metrics=None)
    return {k: float(result[k]) for k in METRIC_KEYS if k in result}


def sharpness(images01: torch.Tensor) -> dict:
    """Mean gradient magnitude and Laplacian variance of images (N, C, H, W) in [0, 1]: blur lowers both."""
    x = images01.float().mean(1, keepdim=True)  # (N, C, H, W) -> (N, 1, H, W)
    gx, gy = x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]
    grad = (gx[..., :-1, :].pow(2) + gy[..., :, :-1].pow(2)).sqrt().mean()
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]  # (1, 1, 3, 3)
    lap = torch.nn.functional.conv2d(x, kernel)  # (N, 1, H-2, W-2)
    return dict(grad_mean=float(grad), laplacian_var=float(lap.flatten(1).var(1).mean()))


def real_images(cfg: Config, n: int, seed: int = 0, split: str = "test") -> torch.Tensor:
    """n random real images of the run's dataset and split, (n, C, H, W) in [-1, 1]."""
    fit = {k: getattr(cfg.data, k) for k in ("image_size", "channels") if getattr(cfg.data, k, 0)}
    data = load_dataset(cfg.data.name, split, cfg.data.path, **fit)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return to_model_range(data.images[idx])


def save_samples_grid(images: torch.Tensor, path: Path, n: int = 64) -> str:
    """The first n images (in [-1, 1]) as an 8-wide grid; returns the file name for report.md."""
    save_grid(to_unit_range(images[:n]), path, nrow=8, scale=2)
    return Path(path).name


def images_row(names: list[str], files: list[str]) -> str:
    """A markdown table with one picture per column."""
    return "| " + " | ".join(names) + " |\n|" + "---|" * len(names) + "\n| " + \
        " | ".join(f"![{n}]({f})" for n, f in zip(names, files)) + " |"


def compare_variants(args, out: Path, variants: dict[str, list[str]]) -> tuple[list[dict], list[str]]:
    """Train every variant with the same budget, sample args.n images from each, score them.
    Returns one row per variant and the sample-grid file names (in out)."""
    check_sizes(args)
    rows, files = [], []
    for name, overrides in variants.items():
        cfg = variant_config(args, overrides)
        trained = train_variant(args, cfg, out / "runs" / name)
        images, ms, steps = sample_timed(out / "runs" / name, args.n, args.sample_steps, args.seed, args.device)
        metric = project_metric(to_unit_range(images), cfg.data.name)
        files.append(save_samples_grid(images, out / f"samples_{name}.png"))
        rows.append(dict(variant=name, T=cfg.diffusion.T, path=cfg.diffusion.path, train_steps=trained["steps"],
                         train_minutes=trained["minutes"], epochs=trained["epochs"], last_loss=trained["loss"],
                         sample_steps=steps, ms_per_image=ms, **metric))
    return rows, files
