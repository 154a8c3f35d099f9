"""Experiment `schedules`: the linear and the cosine schedule trained with the same budget, compared on samples
and the project metric (the lesson's suggested experiment; Nichol & Dhariwal 2021, sec. 3.2)."""
from __future__ import annotations

from pathlib import Path

from . import common
from .report import table, write_report

SCHEDULES = ("linear", "cosine")


def add_arguments(p):
    common.add_common(p, minutes=3.0, preset="mnist-ddpm")


def run(args) -> Path:
    out = common.out_dir(args, "schedules")
    rows, files = common.compare_variants(args, out, {s: [f"diffusion.path=ddpm-{s}"] for s in SCHEDULES})
    best = min(rows, key=lambda r: r.get("fd_classifier", float("inf")))
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    body = f"""
Two models from preset `{args.preset}`, identical except for the noise schedule, each trained for {budget};
{args.n} samples each with {rows[0]['sample_steps']} sampler steps, scored by the project metric
(fd_classifier: lower is better; precision ~ realism, recall ~ coverage, class_entropy: 1 = all digit classes
equally often).

- linear: beta_t from 1e-4 to 0.02 (Ho et al. 2020); alpha_bar falls fast, much of the chain is near pure noise.
- cosine: alpha_bar_t = f(t)/f(0), f(t) = cos^2((t/T + 0.008)/1.008 * pi/2) (Nichol & Dhariwal 2021, eq. 17);
  it destroys information more evenly.

{table(rows, ["variant", "train_steps", "epochs", "last_loss", "sample_steps", "ms_per_image",
              *[k for k in common.METRIC_KEYS if k in rows[0]]])}

{common.images_row([r["variant"] for r in rows], files)}

Lowest fd_classifier: **{best['variant']}**. The training losses are not comparable across schedules: each schedule
puts a different share of its steps at easy and hard noise levels. With a short budget the gap can be within the
run-to-run noise; rerun with another `--seed` before drawing conclusions.
"""
    return write_report(out, "Linear vs cosine schedule, same budget", body,
                        dict(budget=budget, preset=args.preset, n=args.n, rows=rows, best=best["variant"]))
