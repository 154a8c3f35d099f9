"""Experiment `timesteps`: the same recipe with T = 1000, 500 and 200 diffusion steps and the same training budget
(the lesson's suggested experiment). The linear betas are scaled by 1000/T, so every chain ends near pure noise."""
from __future__ import annotations

from pathlib import Path

from . import common
from .report import table, write_report
from ..errors import UserError


def add_arguments(p):
    common.add_common(p, minutes=3.0, preset="mnist-ddpm")
    p.add_argument("--T-values", default="1000,500,200", help="comma-separated chain lengths (default 1000,500,200)")


def run(args) -> Path:
    try:
        Ts = [int(v) for v in args.T_values.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--T-values expects comma-separated integers like 1000,500,200; got '{args.T_values}'."
                        ) from None
    out = common.out_dir(args, "timesteps")
    rows, files = common.compare_variants(args, out, {f"T={T}": [f"diffusion.T={T}"] for T in Ts})
    for r in rows:  # a full ancestral chain runs T network passes: time it from the measured per-step cost
        r["full_chain_ms_per_image"] = r["ms_per_image"] / r["sample_steps"] * r["T"]
    best = min(rows, key=lambda r: r.get("fd_classifier", float("inf")))
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    body = f"""
The same recipe (`{args.preset}`) with chains of T = {", ".join(map(str, Ts))} steps, each trained for {budget};
{args.n} samples each, scored by the project metric (fd_classifier: lower is better).
Sampling uses the same number of sampler steps for every T (capped at T), so the table compares what the
training T does; `full_chain_ms_per_image` is the cost of sampling all T steps (T x the measured cost per step).

{table(rows, ["variant", "train_steps", "last_loss", "sample_steps", "ms_per_image", "full_chain_ms_per_image",
              *[k for k in common.METRIC_KEYS if k in rows[0]]])}

{common.images_row([r["variant"] for r in rows], files)}

Lowest fd_classifier: **{best['variant']}**. A shorter chain makes full ancestral sampling proportionally cheaper;
training sees each noise level more often. Few-step samplers (DDIM and later) get the speed without retraining.
"""
    return write_report(out, "Chain length T = 1000 vs 500 vs 200, same budget", body,
                        dict(budget=budget, preset=args.preset, n=args.n, T_values=Ts, rows=rows, best=best["variant"]))
