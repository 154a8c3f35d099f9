"""Experiment `latent-vs-pixel`: latent diffusion beside pixel diffusion at equal total CPU minutes. It trains the
autoencoder (`--ae-preset`, `--ae-minutes`), a latent run on it for the minutes left (autoencoder minutes counted),
a latent run for the whole budget (autoencoder minutes not counted) and the pixel preset for the whole budget; each
diffusion run is sampled with its own sampler on `seeds` seeds of n images and scored with fd_classifier, and timed
for 64 images (generate + decode, median of 9). Beside them: the autoencoder's reconstruction ceiling and the floor
of real training digits, and a picture: original | reconstruction | latent sample | pixel sample.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from . import common
from .backbones import score
from .methods import floor_rows
from .report import describe, machine, table, write_report
from ..checkpoint import latest
from ..data import to_unit_range
from ..device import resolve_device, use_bf16
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..latent_space import load_latent_space, run_latent_space
from ..runs import load_run, sample_run
from ..viz.grids import save_grid


def add_arguments(p):
    common.add_common(p, minutes=10.0, preset="mnist", n=1000, sample_steps=None)
    p.add_argument("--latent-preset", default="mnist-latent", help="the latent recipe (default mnist-latent)")
    p.add_argument("--ae-preset", default="mnist-ae", help="the autoencoder recipe (default mnist-ae)")
    p.add_argument("--ae-minutes", type=float, default=3.0, help="the autoencoder's budget, part of the total")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds per score")


@torch.no_grad()
def seconds_per_64(run_dir: Path, device, repeats: int = 9) -> float:
    """Median seconds to generate 64 images with the run's sampler, decoding included for a latent run (run loaded
    once, one warm-up call)."""
    cfg, net, path, meta = load_run(run_dir, device=device)
    space = run_latent_space(meta, device)
    denoiser = denoiser_for(net, path, cfg.diffusion.prediction, cfg.sample)

    def once(seed: int):
        x = generate(denoiser, cfg.sample, 64, tuple(meta["shape"]), generator=torch.Generator().manual_seed(seed),
                     device=device, bf16=use_bf16(cfg.train.precision, device))
        return x if space is None else space.decode(x)

    once(repeats)
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        once(seed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train(args, preset: str, minutes: float, run_dir: Path, extra: list[str] = ()) -> dict:
    args.preset, args.minutes = preset, minutes
    return common.train_variant(args, common.variant_config(args, list(extra)), run_dir)


def run(args) -> Path:
    total = args.minutes
    if args.steps:
        raise UserError("latent-vs-pixel compares equal minutes; give --minutes, not --steps.")
    if args.seeds < 1 or not 0 < args.ae_minutes < (total or 0):
        raise UserError("Give --seeds of 1 or more and --ae-minutes between 0 and --minutes.")
    common.check_sizes(args)
    out, device = common.out_dir(args, "latent-vs-pixel"), resolve_device(args.device)
    pixel_preset = args.preset
    floor = floor_rows(args)
    ae_dir = out / "runs" / "ae"
    ae = _train(args, args.ae_preset, args.ae_minutes, ae_dir)
    ae_minutes = ae["minutes"]
    ceiling = json.loads((latest(ae_dir) / "meta.json").read_text())["reconstruction"]
    variants = [("latent, autoencoder minutes counted", "latent", args.latent_preset, total - ae_minutes),
                ("latent, autoencoder minutes not counted", "latent-full", args.latent_preset, total),
                ("pixel", "pixel", pixel_preset, total)]
    rows, images = [], {}
    for label, name, preset, minutes in variants:
        extra = [f"data.autoencoder={ae_dir}"] if name.startswith("latent") else []
        trained = _train(args, preset, minutes, out / "runs" / name, extra)
        r = score(out / "runs" / name, None, args.n, args.seeds, device)
        images[name] = r.pop("images")
        total_minutes = trained["minutes"] + (ae_minutes if name == "latent" else 0.0)
        rows.append(dict(variant=label, preset=preset, train_minutes=trained["minutes"], total_minutes=total_minutes,
                         steps=trained["steps"], train_img_s=trained["img_s"], fd_mean=r["fd_mean"], fd_sd=r["fd_sd"],
                         fd_seeds=r["fd_seeds"], times_floor=r["fd_mean"] / floor["fd_mean"],
                         s_per_64=seconds_per_64(out / "runs" / name, device)))
        print(f"{name:>12}: fd {r['fd_mean']:.2f} +- {r['fd_sd']:.2f}, {rows[-1]['s_per_64']:.3f} s per 64")
    space = load_latent_space(ae_dir)
    x = common.real_images(common.variant_config(args), 16, args.seed)  # (16, C, H, W) in [-1, 1]
    strip = torch.cat([x, space.decode(space.encode(x)).clamp(-1, 1), images["latent"][:16], images["pixel"][:16]])
    save_grid(to_unit_range(strip), out / "latent_vs_pixel.png", nrow=16, scale=2)
    speed = rows[2]["s_per_64"] / rows[0]["s_per_64"]
    body = f"""
On this machine ({describe(machine())}), alone. The autoencoder (`{args.ae_preset}`) trained {ae_minutes:.1f} minutes;
its reconstruction ceiling: PSNR {ceiling['psnr']:.1f} dB (MSE {ceiling['mse']:.5f}) on {ceiling['n']} held-out test
images{f", fd_classifier {ceiling['fd_classifier']:.2f} for {ceiling['n']} reconstructed training images against {ceiling['fd_classifier_originals']:.2f} for the same originals" if 'fd_classifier' in ceiling else ''}.
Every diffusion run is sampled with its own sampler, n = {args.n} on seeds 0..{args.seeds - 1}. Floor: real training
digits, fd {floor['fd_mean']:.2f}. s_per_64: 64 images, generate + decode, median of 9.

{table(rows, list(rows[0]))}

Latent sampling is {speed:.2f}x as fast as pixel sampling; latent quality (autoencoder minutes counted) is
{rows[0]['fd_mean'] / rows[2]['fd_mean']:.2f}x the pixel fd_classifier.

Original | reconstruction | latent sample | pixel sample:

![latent vs pixel](latent_vs_pixel.png)
"""
    return write_report(out, "Latent vs pixel diffusion at equal minutes", body,
                        dict(rows=rows, ceiling=ceiling, floor=floor, ae_minutes=ae_minutes, n=args.n, seeds=args.seeds))
