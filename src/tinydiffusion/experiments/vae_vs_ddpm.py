"""Experiment `vae-vs-ddpm`: the lesson's reflection table, measured. A small convolutional VAE and a DDPM trained
on the same data with the same budget; quality (project metric), sharpness and milliseconds per image."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from . import common
from .report import table, write_report
from ..data import load_dataset, to_unit_range
from ..models.vae import ConvVAE
from ..train.vae import train_vae
from ..device import resolve_device


def add_arguments(p):
    common.add_common(p, minutes=3.0, preset="mnist-ddpm", n=128, sample_steps=None)
    p.add_argument("--latent-dim", type=int, default=16, help="VAE latent size (default 16)")


@torch.no_grad()
def _time_vae(vae: ConvVAE, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """n VAE samples in [0, 1] and the milliseconds per image (best of 3, after a warm-up pass)."""
    vae.eval()
    vae.sample(min(n, 8))
    best, images = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        images = vae.sample(n, torch.Generator().manual_seed(seed)).cpu()
        best = min(best, time.perf_counter() - start)
    return images, best / n * 1000


def run(args) -> Path:
    common.check_sizes(args)
    out = common.out_dir(args, "vae-vs-ddpm")
    dev = resolve_device(args.device)

    # 1. DDPM: the preset with the shared budget
    cfg = common.variant_config(args)
    ddpm = common.train_variant(args, cfg, out / "runs" / "ddpm")
    x_ddpm, ddpm_ms, steps = common.sample_timed(out / "runs" / "ddpm", args.n, args.sample_steps, args.seed,
                                                 args.device)
    ddpm01 = to_unit_range(x_ddpm)

    # 2. VAE: same training images, same budget (minutes or steps), same batch size
    fit = {k: getattr(cfg.data, k) for k in ("image_size", "channels") if getattr(cfg.data, k, 0)}
    data = load_dataset(cfg.data.name, "train", cfg.data.path, **fit)
    C, H, _ = data.shape
    torch.manual_seed(args.seed)
    vae = ConvVAE(C, H, latent_dim=args.latent_dim).to(dev)
    vae_run = train_vae(vae, data.images, minutes=0 if args.steps else args.minutes, steps=args.steps or 0,
                        batch_size=cfg.train.batch_size, seed=args.seed, device=dev)
    vae01, vae_ms = _time_vae(vae, args.n, args.seed)

    # 3. the same numbers for real digits as the ceiling: training digits, because the metric's reference is
    #    the test split and test digits would be scored against themselves
    real01 = to_unit_range(common.real_images(cfg, args.n, args.seed, split="train"))
    rows = []
    for name, images, ms, passes, loss in (
            ("VAE", vae01, vae_ms, 1, f"{vae_run['loss']:.1f} (BCE + KL, per image)"),
            ("DDPM", ddpm01, ddpm_ms, steps, f"{ddpm['loss']:.4f} (MSE on eps)"),
            ("real training digits", real01, None, None, "")):
        rows.append(dict(model=name, network_passes=passes if passes else "", ms_per_image=ms if ms else "",
                         train_steps={"VAE": vae_run["steps"], "DDPM": ddpm["steps"]}.get(name, ""),
                         final_loss=loss, **common.project_metric(images, cfg.data.name), **common.sharpness(images)))
    files = [common.save_samples_grid(x * 2 - 1, out / f"samples_{k}.png")  # [0, 1] -> [-1, 1]
             for k, x in (("vae", vae01), ("ddpm", ddpm01), ("real", real01))]
    vae_row, ddpm_row, real_row = rows
    ratio = ddpm_ms / vae_ms if vae_ms else float("inf")
    budget = f"{args.steps} steps each" if args.steps else f"{args.minutes:g} minutes each"
    # blur lowers the Laplacian variance and leftover noise raises it, so "better" means closer to real digits
    closer = min((vae_row, ddpm_row), key=lambda r: abs(math.log(r["laplacian_var"] / real_row["laplacian_var"])))
    nan = float("nan")

    def quality(row):
        return f"fd_classifier {row.get('fd_classifier', nan):.3g}, Laplacian variance {row['laplacian_var']:.3g}"

    reflection = [
        dict(aspect="Speed", VAE=f"one decoder pass: {vae_ms:.3g} ms/image",
             DDPM=f"{steps} sequential network passes: {ddpm_ms:.3g} ms/image ({ratio:.0f}x slower)"),
        dict(aspect="Quality", VAE=quality(vae_row),
             DDPM=f"{quality(ddpm_row)} (real digits: {real_row['laplacian_var']:.3g}); sharpness closer to real "
                  f"digits: {closer['model']}"),
        dict(aspect="Why", VAE=f"a {args.latent_dim}-number bottleneck; a pixel-wise likelihood averages over "
                               "plausible digits (blur)",
             DDPM="iterative refinement: each step removes a little noise, with no bottleneck"),
        dict(aspect="Loss", VAE="reconstruction (BCE) + KL to N(0, I)",
             DDPM="MSE between the true and the predicted noise"),
    ]
    body = f"""
Both models trained on the {cfg.data.name} training images for {budget}; {args.n} samples each. Sharpness is the
mean gradient magnitude and the variance of the Laplacian of the images in [0, 1]: blur lowers both and leftover
noise raises both, so read them against the real digits' values. Quality is the project metric (fd_classifier: lower is better).

{table(rows, ["model", "network_passes", "ms_per_image", "train_steps", "final_loss",
              *[k for k in common.METRIC_KEYS if k in rows[0]], "grad_mean", "laplacian_var"])}

{common.images_row(["VAE", "DDPM", "real training digits"], files)}

## The lesson's reflection table, measured

{table(reflection, ["aspect", "VAE", "DDPM"])}
"""
    results = dict(budget=budget, n=args.n, sample_steps=steps, ddpm_over_vae_time=ratio, rows=rows,
                   vae=dict(steps=vae_run["steps"], seconds=vae_run["seconds"], loss=vae_run["loss"]),
                   ddpm=ddpm)
    return write_report(out, "VAE vs DDPM, same data and budget", body, results)
