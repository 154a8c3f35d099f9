"""Experiment `nfe`: sample quality against the number of network evaluations (NFE) and against wall-clock, for
each sampler at a few NFE budgets, next to the full ancestral chain (DDPM, T steps) as the reference.

Every setting starts from the same noise (one seed), so differences come from the samplers, not the draw.
A budget of K NFE means K time steps for one-evaluation-per-step samplers and (K + 1) // 2 steps for heun
(2 evaluations per step, 1 on the last); the NFE column is counted, not assumed. Conditional runs are sampled
unconditionally (cond = None, no guidance).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..data import to_unit_range
from ..device import use_bf16
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..latent_space import to_pixels
from ..runs import load_run
from ..samplers import SAMPLERS, get_sampler
from ..viz.plot import line_plot
from ..timesteps import SPACINGS
from .report import table, write_report

WITHIN = 0.10  # "comes within 10 % of the full chain's quality" (issue 4)
FAST = ("dpm++2m", "dpm++2m-sde")  # the few-step samplers the closing note measures against the full chain


def add_arguments(p):
    p.add_argument("--run", type=Path, required=True, help="a trained run directory")
    p.add_argument("--out", type=Path, help="report folder (default reports/nfe)")
    p.add_argument("--n", type=int, default=1000, help="samples per setting for the metric (default 1000)")
    p.add_argument("--samplers", default="ddim,dpm++2m,dpm++2m-sde,dpm++3m,heun",
                   help=f"comma-separated samplers (default ddim,dpm++2m,dpm++2m-sde,dpm++3m,heun; any of "
                        f"{', '.join(SAMPLERS)})")
    p.add_argument("--steps", default="5,10,20,50,100", help="NFE budgets, comma-separated (default 5,10,20,50,100)")
    p.add_argument("--spacing", default="logsnr", choices=SPACINGS,
                   help="time-step spacing for every sampler (default logsnr, the one DPM-Solver++ is built for)")
    p.add_argument("--no-ddpm-1000", dest="ddpm_full", action="store_false",
                   help="skip the reference: ancestral DDPM over all T steps (1000 for the default schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")


class CountingNet:
    """Wraps a network and counts its forward calls: one per batch per network evaluation."""

    def __init__(self, net):
        self.net, self.calls = net, 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        return self.net(x, t, cond)

    def __getattr__(self, name):  # num_classes and the like, for code that asks the net
        return getattr(self.net, name)


def steps_for_budget(sampler: str, budget: int) -> int:
    """Time steps that spend at most `budget` network evaluations (heun: 2K - 1 for K steps)."""
    return (budget + 1) // 2 if sampler == "heun" else budget


def parse_settings(args) -> tuple[list[str], list[int]]:
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    for name in samplers:
        get_sampler(name)  # UserError naming the choices
    try:
        budgets = sorted({int(k) for k in args.steps.split(",") if k.strip()})
    except ValueError:
        raise UserError(f"--steps takes comma-separated whole numbers like 5,10,20, got '{args.steps}'.") from None
    if not samplers or not budgets or budgets[0] < 1:
        raise UserError("Give at least one sampler in --samplers and NFE budgets of 1 or more in --steps.")
    if args.n < 2 or args.batch_size < 1:
        raise UserError("--n must be at least 2 (the metric compares distributions) and --batch-size at least 1.")
    return samplers, budgets


def sample_setting(net, path, cfg, meta, sample_cfg, n: int, seed: int, batch_size: int, dev):
    """(images in [-1, 1], seconds, NFE per image) for one sampler setting; the same seed gives the same x_T."""
    counted = CountingNet(net)
    start = time.perf_counter()
    images = generate(denoiser_for(counted, path, cfg.diffusion.prediction, sample_cfg), sample_cfg, n,
                      tuple(meta["shape"]), batch_size=batch_size, generator=torch.Generator().manual_seed(seed),
                      device=dev, bf16=use_bf16(cfg.train.precision, dev))
    images = to_pixels(meta, images, dev)  # a latent run's decoder pass is part of its sampling time
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return images, time.perf_counter() - start, counted.calls / math.ceil(n / batch_size)


def run(args) -> Path:
    from ..device import resolve_device
    from .common import project_metric, save_samples_grid  # the metric is imported lazily, on first use

    samplers, budgets = parse_settings(args)
    out = Path(args.out) if args.out else Path("reports") / "nfe"
    dev = resolve_device(args.device)
    cfg, net, path, meta = load_run(args.run, device=dev)
    T, dataset = path.T or 1000, meta.get("dataset", cfg.data.name)  # continuous paths: a 1000-step reference
    # (label, sampler, steps); budgets above T are skipped, equal step counts (heun's odd budgets) sampled once
    settings = list(dict.fromkeys((name, name, steps_for_budget(name, k))
                                  for name in samplers for k in budgets if k <= T))
    settings += [(f"ddpm ({T} steps)", "ddpm", T)] if args.ddpm_full else []  # any spacing gives all T steps

    rows = []
    for label, name, steps in settings:
        sample_cfg = replace(cfg.sample, sampler=name, steps=steps, spacing=args.spacing, eta=0.0)
        images, seconds, nfe = sample_setting(net, path, cfg, meta, sample_cfg, args.n, args.seed,
                                              args.batch_size, dev)
        grid = save_samples_grid(images, out / "grids" / f"{name}_{steps}.png")
        rows.append(dict(sampler=label, steps=steps, nfe=round(nfe), seconds=seconds, s_per_64=seconds * 64 / args.n,
                         **project_metric(to_unit_range(images), dataset), grid=f"grids/{grid}"))
        print(f"{label:>18} {steps:4d} steps  NFE {nfe:5.0f}  {seconds:7.1f} s  FD {rows[-1]['fd_classifier']:.4g}")

    # Pictures: one line per sampler; the reference is a single point at NFE = T.
    fd = "FD (classifier features), lower is better"
    line_plot(fd_series(rows, "nfe"), "network evaluations per image (NFE)", fd, out / "quality_vs_nfe.png",
              logx=True, logy=True, title=f"Sample quality vs NFE ({args.spacing} spacing)")
    line_plot(fd_series(rows, "seconds"), f"seconds for {args.n} images ({dev.type})", fd,
              out / "quality_vs_seconds.png", logx=True, logy=True, title="Sample quality vs wall-clock")

    note, summary = closing_note(rows, T, args, net, path, cfg, meta, dev)
    columns = ["sampler", "steps", "nfe", "seconds", "s_per_64", *[k for k in rows[0] if k not in (
        "sampler", "steps", "nfe", "seconds", "s_per_64", "grid")], "grid"]
    shown = [{**r, "grid": f"[png]({r['grid']})"} for r in rows]
    body = f"""
Run `{args.run}`: {cfg.model.name}, {cfg.diffusion.path} path, T = {T}, {cfg.diffusion.prediction} prediction.
{args.n} samples per setting from one seed ({args.seed}), {args.spacing} spacing, clip_x0 = {cfg.sample.clip_x0},
device {dev}. NFE = network evaluations per image (counted); seconds = wall-clock for all {args.n} images in batches
of {args.batch_size}; s_per_64 scales that to 64 images. FD is the project metric (`tinydiffusion.evaluate`, lower
is better), estimated from {args.n} samples, so differences of a few percent are within its noise.

{table(shown, columns)}

![quality vs NFE](quality_vs_nfe.png) ![quality vs wall-clock](quality_vs_seconds.png)

## Closing note

{note}
"""
    return write_report(out, "Sample quality vs number of function evaluations", body,
                        dict(run=str(args.run), n=args.n, seed=args.seed, spacing=args.spacing, T=T, rows=rows,
                             **summary))


def fd_series(rows: list[dict], key: str) -> dict[str, list[tuple[float, float]]]:
    """{sampler: [(row[key], FD), ...]}, the input of line_plot."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        series.setdefault(r["sampler"], []).append((r[key], r["fd_classifier"]))
    return series


def closing_note(rows, T, args, net, path, cfg, meta, dev) -> tuple[str, dict]:
    """The smallest NFE at which each FAST sampler comes within 10 % of the full chain's FD, the time for 64
    samples there (measured), and where more steps did not help."""
    lines, summary = [], {}
    worse = []
    for name in dict.fromkeys(r["sampler"] for r in rows):
        mine = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["nfe"])
        worse += [f"{name} {a['nfe']} -> {b['nfe']} NFE ({a['fd_classifier']:.3g} -> {b['fd_classifier']:.3g})"
                  for a, b in zip(mine, mine[1:]) if b["fd_classifier"] > a["fd_classifier"]]
    reference = [r for r in rows if r["sampler"] == f"ddpm ({T} steps)"]
    for name in [n for n in FAST if any(r["sampler"] == n for r in rows)] if reference else []:
        fast = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["nfe"])
        fd_ref = reference[0]["fd_classifier"]
        good = [r for r in fast if r["fd_classifier"] <= (1 + WITHIN) * fd_ref]
        key = name.replace("+", "p").replace("-", "_")  # dpm++2m-sde -> dpmpp2m_sde
        if good:
            r = good[0]
            sample_cfg = replace(cfg.sample, sampler=name, steps=r["steps"], spacing=args.spacing, eta=0.0)
            _, s64, _ = sample_setting(net, path, cfg, meta, sample_cfg, 64, args.seed, 64, dev)
            summary.update({f"{key}_within_10pct_nfe": r["nfe"], f"{key}_fd": r["fd_classifier"], "ddpm_fd": fd_ref,
                            f"{key}_seconds_64": s64})
            lines.append(f"{name} comes within {WITHIN:.0%} of the {T}-step DDPM quality at **{r['nfe']} NFE** "
                         f"(FD {r['fd_classifier']:.3g} vs {fd_ref:.3g}); 64 samples at that NFE take **{s64:.2f} s** "
                         f"on this machine (one batch of 64, measured), "
                         f"{reference[0]['s_per_64'] / s64:.0f}x faster than "
                         f"the {T}-step chain (about {reference[0]['s_per_64']:.1f} s for 64).")
        else:
            best = min(fast, key=lambda r: r["fd_classifier"])
            summary.update({f"{key}_within_10pct_nfe": None, "ddpm_fd": fd_ref, f"{key}_best_fd": best["fd_classifier"]})
            lines.append(f"{name} does not come within {WITHIN:.0%} of the {T}-step DDPM quality (FD {fd_ref:.3g}) "
                         f"at any NFE tried; its best is FD {best['fd_classifier']:.3g} at {best['nfe']} NFE.")
    lines.append("More steps did not always help: " + "; ".join(worse) + "." if worse else
                 "Here every sampler improved (or held) with every increase in NFE.")
    return "\n\n".join(lines), summary

