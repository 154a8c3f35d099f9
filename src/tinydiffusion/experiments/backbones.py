"""Experiment `backbones`: networks side by side at equal wall-clock. Each preset (by default `mnist`, the U-Net,
and `mnist-dit`, the Diffusion Transformer of the same parameter count on the same flow recipe) is trained alone for
the longest mark, with its EMA weights snapshotted at every mark; each snapshot is sampled with the preset's own
sampler on `seeds` seeds of n images and scored with fd_classifier. Beside the scores: parameters, forward GFLOPs per
image (counted by torch's FlopCounterMode: matmuls and convolutions, 2 per multiply-add), training img/s of the run
itself and sampling img*NFE/s. The floor is real training digits at the same n.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import common
from .methods import floor_rows
from .report import describe, machine, table, write_report
from ..data import to_unit_range
from ..device import resolve_device
from ..errors import UserError
from ..models import count_parameters
from ..runs import load_run, sample_run
from ..samplers import nfe as nfe_of


def add_arguments(p):
    common.add_common(p, minutes=10.0, n=1000, sample_steps=None)
    p.add_argument("--presets", default="mnist,mnist-dit", help="comma-separated presets to put side by side")
    p.add_argument("--marks", default="2,5,10",
                   help="minutes of training at which each network is scored; it trains for the largest "
                        "(--minutes is ignored)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds per score")


def gflops_per_image(net: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    """Forward GFLOPs of one network call on one image at t = 0.5 (unconditional)."""
    x, t = torch.zeros(1, *shape), torch.full((1,), 0.5)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, t)
    return counter.get_total_flops() / 1e9


def parse_marks(text: str) -> list[float]:
    try:
        marks = sorted({float(m) for m in text.split(",") if m.strip()})
    except ValueError:
        raise UserError(f"--marks takes comma-separated minutes like 2,5,10; got '{text}'.") from None
    if not marks or marks[0] <= 0:
        raise UserError("--marks needs at least one positive number of minutes.")
    return marks


def score(run_dir: Path, weights: Path, n: int, seeds: int, device: str) -> dict:
    """fd_classifier mean, sd and per-seed values of `weights` sampled with the run's sampler; seconds of seed 0."""
    fds, seconds, images = [], 0.0, None
    for seed in range(seeds):
        start = time.perf_counter()
        x = sample_run(run_dir, n, seed=seed, device=device, weights=weights)
        if seed == 0:
            seconds, images = time.perf_counter() - start, x
        fds.append(common.project_metric(to_unit_range(x))["fd_classifier"])
    return dict(fd_mean=statistics.mean(fds), fd_sd=statistics.stdev(fds) if seeds > 1 else 0.0,
                fd_seeds=" / ".join(f"{f:.2f}" for f in fds), seconds=seconds, images=images)


def run(args) -> Path:
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    marks = parse_marks(args.marks)
    if not presets or args.seeds < 1:
        raise UserError("Give at least one preset and --seeds of 1 or more.")
    args.minutes, args.steps = marks[-1], None
    common.check_sizes(args)
    out = common.out_dir(args, "backbones")
    device = resolve_device(args.device)
    floor = floor_rows(args)
    cost, quality = [], []
    for name in presets:
        args.preset = name
        cfg = common.variant_config(args, [f"train.snapshot_minutes={','.join(f'{m:g}' for m in marks)}"])
        run_dir = out / "runs" / name
        trained = common.train_variant(args, cfg, run_dir)
        _, net, _, meta = load_run(run_dir)
        nfe = nfe_of(cfg.sample.sampler, cfg.sample.steps)
        for mark in marks:
            r = score(run_dir, run_dir / "snapshots" / f"{mark:g}min.safetensors", args.n, args.seeds, device)
            seconds = r.pop("seconds")  # the last mark's is the sampling speed reported below
            grid = common.save_samples_grid(r.pop("images"), out / "grids" / f"{name}_{mark:g}min.png")
            quality.append(dict(preset=name, minutes=mark, **r, times_floor=r["fd_mean"] / floor["fd_mean"],
                                grid=f"[png](grids/{grid})"))
            print(f"{name:>12} {mark:g} min: fd {r['fd_mean']:.2f} +- {r['fd_sd']:.2f}")
        cost.append(dict(preset=name, model=cfg.model.name, patch=getattr(net, "patch_size", cfg.model.patch_size),
                         params_M=count_parameters(net) / 1e6,
                         gflops_per_image=gflops_per_image(net, tuple(meta["shape"])),
                         train_img_s=trained["img_s"],
                         train_steps=trained["steps"], sampler=f"{cfg.sample.sampler} {cfg.sample.steps} {cfg.sample.spacing}",
                         sample_img_nfe_s=args.n * nfe / seconds))
    from ..viz.plot import line_plot

    series = {p: [(r["minutes"], r["fd_mean"]) for r in quality if r["preset"] == p] for p in presets}
    series["real digits (floor)"] = [(m, floor["fd_mean"]) for m in marks]
    line_plot(series, "minutes of training (this machine, alone)", f"fd_classifier at n = {args.n} (lower is better)",
              out / "quality_vs_minutes.png", logy=True, title="Backbones at equal wall-clock")
    body = f"""
Each preset trained alone for {marks[-1]:g} minutes on this machine ({describe(machine())}), its EMA weights kept at
{', '.join(f'{m:g}' for m in marks)} minutes. Every snapshot is sampled with the preset's own sampler, n = {args.n}
images on seeds 0..{args.seeds - 1}; fd_classifier mean and standard deviation. Floor: {args.seeds} sets of {args.n}
real training digits, fd {floor['fd_mean']:.2f} ({floor['fd_min']:.2f}-{floor['fd_max']:.2f}).

## Cost

GFLOPs: one forward call on one image, counted by torch's FlopCounterMode (matmuls and convolutions).
train_img_s: the run's own steps x batch / wall-clock, evaluation pauses included. sample_img_nfe_s: the
{args.n} images of seed 0 at the last mark, images x NFE / seconds.

{table(cost, list(cost[0]))}

## Quality at equal wall-clock

{table(quality, list(quality[0]))}

![quality vs minutes](quality_vs_minutes.png)
"""
    return write_report(out, "Backbones at equal wall-clock", body,
                        dict(cost=cost, quality=quality, floor=floor, n=args.n, seeds=args.seeds, marks=marks))
