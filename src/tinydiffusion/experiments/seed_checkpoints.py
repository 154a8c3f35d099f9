"""Experiment `seed-checkpoints`: the three checkpoints the lesson asks a learner to verify, each PASS or FAIL.

1. The forward process: q_sample(x0, t=0) is x0; at t = T-1 the output has mean ~ 0 and variance ~ 1.
2. The loss reached by the lesson's recipe (`mnist-seed`): 0.02-0.05 after 20 epochs; above 0.1 something is wrong.
3. The samples are recognisable digits of varied classes, judged by the project classifier.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from . import common
from .report import table, write_report
from ..config import load_config
from ..data import to_unit_range
from ..errors import UserError
from ..process import q_sample
from ..runs import load_run
from ..paths import make_path
from ..viz.grids import save_png
from ..viz.curves import LESSON_BAND, lesson_scale, loss_curve_figure, read_metrics

# Thresholds (written into the report): generous enough for a correct implementation, tight enough to catch a bug.
T0_MAX_ABS = 0.05  # |x_0 - x0| at t = 0; sqrt(1 - alpha_bar_0) = 0.01 for the linear schedule
END_MEAN, END_VAR = 0.05, 0.05  # |mean| and |var - 1| at t = T-1
MIN_PRECISION, MIN_CLASS_ENTROPY = 0.5, 0.8  # realism (k-NN precision) and variety (1 = all classes equally)


def add_arguments(p):
    common.add_common(p, minutes=3.0, preset="mnist-seed", n=256, sample_steps=100)
    p.add_argument("--epochs", type=float, help="train for this many epochs instead (the lesson: 20)")
    p.add_argument("--run", type=Path, help="judge an existing run instead of training one")


def forward_check(cfg, x0: torch.Tensor, seed: int) -> dict:
    """Checkpoint 1 on real digits x0 (N, C, H, W) in [-1, 1] with the run's path: at the first step of the table
    (t = 1/T) and at the last (t = 1)."""
    path = make_path(cfg.diffusion.path, cfg.diffusion.T)
    T = path.T or 1000
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=g)
    n = len(x0)
    x_first = q_sample(path, x0, 1 / T, eps)
    x_last = q_sample(path, x0, 1.0, eps)
    r = dict(t0_mean_abs_diff=float((x_first - x0).abs().mean()), t0_max_abs_diff=float((x_first - x0).abs().max()),
             tlast_mean=float(x_last.mean()), tlast_var=float(x_last.var()), data_mean=float(x0.mean()),
             data_var=float(x0.var()), alpha_bar_last=float(path.squares(1.0)[0]))
    r["pass"] = (r["t0_mean_abs_diff"] < T0_MAX_ABS and abs(r["tlast_mean"]) < END_MEAN
                 and abs(r["tlast_var"] - 1) < END_VAR)
    return r


def loss_check(cfg, rows: list[dict]) -> dict:
    """Checkpoint 2: the last logged loss against the lesson's 0.02-0.05, with the trend of the curve."""
    last, epochs = rows[-1]["loss"], rows[-1].get("epoch", 0.0)
    k = max(1, len(rows) // 4)
    recent, before = rows[-k:], rows[-2 * k:-k] or rows[:1]
    drop = 1 - (sum(r["loss"] for r in recent) / len(recent)) / (sum(r["loss"] for r in before) / len(before))
    r = dict(last_loss=last, lowest_loss=min(x["loss"] for x in rows), epochs=epochs, steps=rows[-1]["step"],
             first_loss=rows[0]["loss"], recent_drop=drop, lesson_scale=lesson_scale(cfg))
    r["pass"] = bool(lesson_scale(cfg) and last <= LESSON_BAND[1])
    if not lesson_scale(cfg):
        r["verdict"] = "the lesson's numbers are for unweighted eps-MSE; this run uses another loss scale"
    elif last > 0.1:
        r["verdict"] = "above 0.1: the lesson says something is wrong (or training has barely started)"
    elif last > LESSON_BAND[1]:
        r["verdict"] = (f"between 0.05 and 0.1 after {epochs:.2f} of the lesson's 20 epochs; the last quarter of the "
                        f"curve fell {drop:.0%}, so "
                        + ("more training should reach the band" if drop > 0.01 else "it has flattened"))
    else:
        r["verdict"] = f"in or below the lesson's band after {epochs:.2f} epochs"
    return r


def samples_check(metric: dict) -> dict:
    """Checkpoint 3: recognisable (k-NN precision against real digits) and varied (normalised class entropy)."""
    r = dict(metric)
    r["pass"] = bool(metric.get("precision", 0) >= MIN_PRECISION
                     and metric.get("class_entropy", 0) >= MIN_CLASS_ENTROPY)
    return r


def run(args) -> Path:
    common.check_sizes(args)
    out = common.out_dir(args, "seed-checkpoints")
    if args.run:
        run_dir = args.run
        cfg = load_config(run_dir / "config.json")
    else:
        cfg = common.variant_config(args)
        if args.epochs:
            cfg = replace(cfg, train=replace(cfg.train, minutes=0, steps=0, epochs=args.epochs))
        run_dir = out / "runs" / "mnist-seed"
        common.train_variant(args, cfg, run_dir)
    if cfg.data.name != "mnist":
        raise UserError(f"The lesson's checkpoints are about MNIST; {run_dir} was trained on '{cfg.data.name}'.")
    load_run(run_dir)  # fail early and clearly if the run has no usable checkpoint

    x0 = common.real_images(cfg, 1000, args.seed)
    c1 = forward_check(cfg, x0, args.seed)
    rows = read_metrics(run_dir)
    c2 = loss_check(cfg, rows)
    save_png(loss_curve_figure(rows, cfg, run_dir.name), out / "loss.png")
    images, ms, steps = common.sample_timed(run_dir, args.n, args.sample_steps, args.seed, args.device)
    c3 = samples_check(common.project_metric(to_unit_range(images), "mnist"))
    grid = common.save_samples_grid(images, out / "samples.png")

    mark = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    summary = [dict(checkpoint="1. forward process", result=mark(c1["pass"]),
                    measured=f"t=0: mean abs(x_t - x_0) = {c1['t0_mean_abs_diff']:.4f}; t={cfg.diffusion.T - 1}: "
                             f"mean {c1['tlast_mean']:+.4f}, var {c1['tlast_var']:.4f}",  # no '|': it splits cells
                    expected=f"< {T0_MAX_ABS}; abs(mean) < {END_MEAN}, abs(var - 1) < {END_VAR}"),
               dict(checkpoint="2. loss", result=mark(c2["pass"]),
                    measured=f"{c2['last_loss']:.4f} after {c2['steps']} steps ({c2['epochs']:.2f} epochs)",
                    expected="0.02-0.05 after 20 epochs; > 0.1 is wrong"),
               dict(checkpoint="3. recognisable samples", result=mark(c3["pass"]),
                    measured=", ".join(f"{k} {c3[k]:.3f}" for k in common.METRIC_KEYS if k in c3),
                    expected=f"precision >= {MIN_PRECISION}, class_entropy >= {MIN_CLASS_ENTROPY}")]
    body = f"""
Run: `{run_dir}` (model `{cfg.model.name}`, {cfg.diffusion.path} path, T = {cfg.diffusion.T}).

{table(summary, ["checkpoint", "result", "measured", "expected"])}

## 1. Forward process
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps on 1000 real test digits (data mean {c1['data_mean']:.3f},
variance {c1['data_var']:.3f}). At t = 0 the output is the digit plus a trace of noise (max difference
{c1['t0_max_abs_diff']:.4f}); at t = {cfg.diffusion.T - 1}, alpha_bar = {c1['alpha_bar_last']:.1e}, so x_t is
essentially eps: mean {c1['tlast_mean']:+.4f}, variance {c1['tlast_var']:.4f}.

## 2. Loss
Last logged loss {c2['last_loss']:.4f} (first {c2['first_loss']:.4f}, lowest {c2['lowest_loss']:.4f}) after
{c2['steps']} steps = {c2['epochs']:.2f} epochs: {c2['verdict']}. An untrained network that outputs ~0 scores ~1;
an independent random guess ~2. The lesson's band is for 20 epochs, so a few-minute budget is judged by the
curve, not only the last number.

![loss curve](loss.png)

## 3. Samples
{args.n} samples, {steps} sampler steps ({ms:.1f} ms per image); the first 64:

![samples]({grid})

precision: share of samples that land near real digits in the classifier's feature space (recognisable);
class_entropy: 1 when all ten digits appear equally often (varied classes).
"""
    results = dict(run=str(run_dir), forward=c1, loss=c2, samples=c3, sample_steps=steps, ms_per_image=ms,
                   passed=[c1["pass"], c2["pass"], c3["pass"]])
    return write_report(out, "The lesson's three checkpoints", body, results)
