"""`tinydiffusion course`: the lessons end to end on a short budget, into one static HTML report (course.html).

It trains the lesson's recipe once (the seed-checkpoints experiment: three checkpoints, PASS/FAIL), then draws
every lesson picture from the viz module on that run, runs the timing and nfe experiments on it, then the lesson's
comparison experiments (linear vs cosine, T = 1000/500/200, VAE vs DDPM) on a shorter budget per model, and writes
course.html beside the pictures, linking every experiment's own report. The lab serves the folder
(`tinydiffusion lab --course DIR`).
"""
from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path

import torch

from . import load
from .common import real_images
from ..conditioning import Cond
from ..io import write_text
from ..paths import make_path
from ..runs import load_run
from ..schedules import make_schedule
from ..viz.curves import schedule_figure
from ..viz.figures import (LESSON_DIAGNOSTIC_T, LESSON_FORWARD_T, LESSON_TRAJECTORY_T, diagnostic_figure, forward_figure,
                           lesson_times, record_trajectory, sample_config_for, trajectory_gif, trajectory_strip)
from ..viz.grids import save_png


def _experiment_args(name: str, argv: list[str]) -> argparse.Namespace:
    """An experiment's own flags, parsed as its command would parse them (so its defaults stay its own)."""
    p = argparse.ArgumentParser(prog=name)
    load(name).add_arguments(p)
    return p.parse_args(argv)


def lesson_pictures(run_dir: Path, out: Path, seed: int) -> list[tuple[str, str, str]]:
    """(file, title, what it shows) for the schedule, forward, diagnostic and trajectory pictures."""
    cfg, net, path, meta = load_run(run_dir)
    T = cfg.diffusion.T
    save_png(schedule_figure({n: make_schedule(n, 1000) for n in ("linear", "cosine")}), out / "schedule.png")
    x0 = real_images(cfg, 1, seed)  # (1, C, H, W) in [-1, 1]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    paths = {n: make_path(n, 1000) for n in ("ddpm-linear", "ddpm-cosine", "flow")}
    save_png(forward_figure(paths, x0, lesson_times(LESSON_FORWARD_T, 1000), eps, 1000), out / "forward.png")
    fig, _ = diagnostic_figure(net, path, cfg.diffusion.prediction, real_images(cfg, 4, seed + 1),
                               lesson_times(LESSON_DIAGNOSTIC_T, path.T), torch.Generator().manual_seed(seed),
                               f"Denoising diagnostic after {meta.get('step', '?')} steps")
    save_png(fig, out / "diagnostic.png")
    sample_cfg = sample_config_for(cfg.sample, None, None)
    k = int(meta.get("num_classes", 0))
    frames, _ = record_trajectory(net, path, sample_cfg, cfg.diffusion.prediction, 4, tuple(meta["shape"]),
                                  generator=torch.Generator().manual_seed(seed),
                                  cond=Cond(labels=torch.arange(4) % k) if k else None)
    save_png(trajectory_strip(frames, lesson_times(LESSON_TRAJECTORY_T, path.T),
                              f"Sampling trajectory, {sample_cfg.sampler}, {len(frames)} steps", 2, sample_cfg.sampler),
             out / "trajectory.png")
    trajectory_gif(frames, out / "trajectory.gif", 2)
    return [("schedule.png", "Noise schedules", f"linear vs cosine betas, T = 1000 (the run uses T = {T})"),
            ("forward.png", "The forward process", "one test digit, one fixed eps, noised along three paths"),
            ("diagnostic.png", "Denoising diagnostic", "x_t, the model's one-call x0_hat, and x_0"),
            ("trajectory.png", "From static to a digit", "x_t and x0_hat during sampling (also trajectory.gif)")]


# the lesson's comparison experiments: (name, folder, title, what it compares)
COMPARISONS = (("schedules", "schedules", "Linear vs cosine schedule", "the same recipe and budget, two schedules"),
               ("timesteps", "timesteps", "Chain length T", "T = 1000, 500 and 200, the same budget"),
               ("vae-vs-ddpm", "vae-vs-ddpm", "VAE vs diffusion", "quality, sharpness and ms per image"))


def run_course(out: Path, minutes: float = 10.0, *, seed: int = 0, device: str = "auto", n: int = 256,
               sample_steps: int = 100, nfe_n: int = 64, lesson_minutes: float | None = None,
               lesson_steps: int | None = None, timing_steps: int | None = None, overrides: tuple[str, ...] = (),
               quiet: bool = True) -> Path:
    """Train once, check the three checkpoints, draw the lessons' pictures, time it, run nfe small, then the
    comparison experiments for lesson_minutes per model (default minutes / 10) or lesson_steps; out/course.html.
    The defaults passed the three checkpoints on a 2-core CPU where 2 minutes failed (README, Known gaps): the
    lesson's recipe needs ~10 minutes (~1,500 steps) for recognisable digits of every class, and its sampler (DDPM,
    sigma^2 = beta) at 100 of its 1000 steps; at 50 the strided large variance leaves grain the classifier reads
    as 8s."""
    start, out = time.perf_counter(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = [a for o in overrides for a in ("--set", o)]
    ck = _experiment_args("seed-checkpoints", ["--out", str(out / "checkpoints"), "--minutes", str(minutes),
                                               "--n", str(n), "--sample-steps", str(sample_steps), "--seed", str(seed),
                                               "--device", device, "--reuse"] + sets + (["--quiet"] if quiet else []))
    load("seed-checkpoints").run(ck)
    results = json.loads((out / "checkpoints" / "results.json").read_text())
    run_dir = Path(results["run"])
    pictures = lesson_pictures(run_dir, out, seed)
    nfe = _experiment_args("nfe", ["--run", str(run_dir), "--out", str(out / "nfe"), "--n", str(nfe_n),
                                   "--samplers", "ddim,dpm++2m", "--steps", "5,20", "--no-ddpm-1000",
                                   "--seed", str(seed)])
    load("nfe").run(nfe)
    timing = ["--run", str(run_dir), "--out", str(out / "timing"), "--seed", str(seed), "--device", device]
    load("timing").run(_experiment_args("timing", timing + (["--steps", str(timing_steps)] if timing_steps else [])))
    budget = ["--steps", str(lesson_steps)] if lesson_steps else ["--minutes", f"{lesson_minutes or minutes / 10:g}"]
    for name, folder, _, _ in COMPARISONS:
        load(name).run(_experiment_args(name, ["--out", str(out / folder), "--n", str(nfe_n), "--seed", str(seed),
                                               "--device", device, "--reuse"] + budget + sets
                                        + (["--sample-steps", str(sample_steps)] if name != "vae-vs-ddpm" else [])
                                        + (["--quiet"] if quiet else [])))
    seconds = time.perf_counter() - start
    command = " ".join(["tinydiffusion course", f"--minutes {minutes:g}"] + [f"--set {o}" for o in overrides])
    compared = [(t, w, d, sorted(p.name for p in (out / d).glob("samples_*.png"))) for _, d, t, w in COMPARISONS]
    write_text(out / "course.html", course_html(results, pictures, command, seconds, compared))
    return out


def course_html(results: dict, pictures: list[tuple[str, str, str]], command: str, seconds: float,
                compared: list[tuple[str, str, str, list[str]]] = ()) -> str:
    """One static page: the PASS/FAIL table, every picture, links to the experiments' own reports."""
    names = ["1. forward process", "2. loss", "3. recognisable samples"]
    c1, c2, c3 = results["forward"], results["loss"], results["samples"]
    measured = [f"t=0: mean |x_t - x_0| = {c1['t0_mean_abs_diff']:.4f}; t=T-1: mean {c1['tlast_mean']:+.4f}, "
                f"var {c1['tlast_var']:.4f}", f"{c2['last_loss']:.4f} after {c2['steps']} steps: {c2['verdict']}",
                ", ".join(f"{k} {c3[k]:.3f}" for k in ("precision", "class_entropy") if k in c3)]
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td class='{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}"
                   f"</td><td>{html.escape(m)}</td></tr>" for a, ok, m in zip(names, results["passed"], measured))
    figs = "".join(f"<h2>{html.escape(t)}</h2><p>{html.escape(w)}</p><img src='{f}' alt='{html.escape(t)}'>"
                   for f, t, w in pictures)
    comparisons = "".join(
        f"<h2>{html.escape(t)}</h2><p>{html.escape(w)}: <a href='{d}/report.md'>{d}/report.md</a></p><div class='row'>"
        + "".join(f"<figure><img src='{d}/{f}' alt='{html.escape(f)}'><figcaption>{html.escape(f[8:-4])}</figcaption>"
                  "</figure>" for f in files) + "</div>" for t, w, d, files in compared)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tinydiffusion: the course, end to end</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}}
img{{max-width:100%;border:1px solid #ddd}} td{{border:1px solid #ccc;padding:3px 8px}} table{{border-collapse:collapse}}
.row{{display:flex;gap:1em;flex-wrap:wrap}} figure{{margin:0}} .row img{{width:200px}}
.pass{{color:#1b5e20;font-weight:bold}} .fail{{color:#b71c1c;font-weight:bold}}</style></head><body>
<h1>The course, end to end</h1>
<p>Reproduced by <code>{html.escape(command)}</code> in {seconds / 60:.1f} minutes.
The lesson's numbers are for 20 epochs; a short budget is judged by the trend (see the loss curve).</p>
<h2>The three checkpoints</h2><table><tr><th>checkpoint</th><th>result</th><th>measured</th></tr>{rows}</table>
<p>Details: <a href="checkpoints/report.md">checkpoints/report.md</a>.</p>
<h2>Training loss</h2><img src="checkpoints/loss.png" alt="loss curve">
<h2>Samples</h2><img src="checkpoints/samples.png" alt="samples">
{figs}
<h2>Quality vs number of steps</h2><p>The nfe experiment on this run (small n): <a href="nfe/report.md">nfe/report.md</a>.</p>
<img src="nfe/quality_vs_nfe.png" alt="quality vs NFE">
<h2>Training step vs generation</h2><p>One training step against 64 images through the whole chain, and what that
means at 512 px: <a href="timing/report.md">timing/report.md</a>.</p>
{comparisons}
</body></html>
"""
