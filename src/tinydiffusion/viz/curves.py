"""The lessons' curves: noise schedules, the training-loss curve, and the loss per t-bin on held-out digits."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from ..denoiser import Denoiser
from ..errors import UserError
from ..paths import Path as DiffusionPath, coefficients, from_time
from ..process import q_sample, u_from_x0_eps, v_from_x0_eps
from ..schedules import Schedule
from .grids import hstack, titled
from .plot import COLORS, Line, Ref, line_plot_image

# The lesson's landmarks for the eps-prediction MSE (COURSE_FACTS, checkpoint 2).
RANDOM_GUESS_MSE = 2.0  # E||eps - g||^2 / D for an independent guess g ~ N(0, I)
LESSON_BAND = (0.02, 0.05)  # the loss after 20 epochs on MNIST


# ------------------------------------------------------------------------------------------- schedule
def crossing(alpha_bar: torch.Tensor, level: float = 0.5) -> int:
    """First t with alpha_bar_t <= level (alpha_bar decreases with t)."""
    below = (alpha_bar <= level).nonzero()
    return int(below[0]) if len(below) else len(alpha_bar) - 1


def schedule_figure(schedules: dict[str, Schedule]) -> Image.Image:
    """beta_t (log scale), alpha_bar_t with the 50 %-signal line, and log-SNR, one colour per schedule."""
    T = next(iter(schedules.values())).T
    t = list(range(T))
    colors = dict(zip(schedules, (COLORS[0], COLORS[3], COLORS[2], COLORS[4])))  # blue, vermilion first
    half = {n: crossing(s.alpha_bar) for n, s in schedules.items()}
    betas = line_plot_image([Line(t, s.betas.tolist(), n, colors[n]) for n, s in schedules.items()],
                            title="beta_t (log scale)", xlabel="t", ylabel="beta_t", logy=True)
    refs = [Ref(y=0.5, label="50% signal: alpha_bar = 0.5")]
    refs += [Ref(x=half[n], label=f"t={half[n]}", color=colors[n]) for n in schedules]
    alpha_bar = line_plot_image([Line(t, s.alpha_bar.tolist(), n, colors[n]) for n, s in schedules.items()],
                                refs=refs, title="alpha_bar_t = prod_{s<=t} (1 - beta_s)", xlabel="t",
                                ylabel="alpha_bar_t", ylim=(-0.03, 1.03))
    log_snr = line_plot_image([Line(t, s.log_snr.tolist(), n, colors[n]) for n, s in schedules.items()],
                              refs=[Ref(y=0.0, label="log-SNR = 0 (50% signal)")],
                              title="log-SNR = log(alpha_bar_t / (1 - alpha_bar_t))", xlabel="t", ylabel="log-SNR")
    ends = ", ".join(f"{n}: alpha_bar[{T - 1}] = {float(s.alpha_bar[-1]):.1e}" for n, s in schedules.items())
    halves = ", ".join(f"{n} at t = {half[n]}" for n in schedules)
    caption = ("alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s, x_t = sqrt(alpha_bar_t) * x_0 + "
               "sqrt(1 - alpha_bar_t) * eps. linear: beta_t from 1e-4 to 0.02 (times 1000/T for other T), so "
               "alpha_bar falls fast and is near 0 for the last part of the chain. cosine: alpha_bar_t = f(t)/f(0), "
               "f(t) = cos^2((t/T + 0.008)/1.008 * pi/2), beta clipped at 0.999: it destroys information more "
               f"evenly. Half the variance is signal ({halves}); {ends}.")
    return titled(hstack([betas, alpha_bar, log_snr]), f"Noise schedules, T = {T}", caption)


# ------------------------------------------------------------------------------------------ loss curve
def read_metrics(run_dir: Path) -> list[dict]:
    """The training rows of run_dir/metrics.jsonl (step, loss, lr, epoch, ...); evaluation rows are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"No metrics.jsonl in {run_dir}; is it a run directory written by `tinydiffusion train`?")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]  # `eval --run` and train.eval_every append {"step", "eval", ...} rows
    if not rows:
        raise UserError(f"{path} is empty: the run logged no loss yet (it logs every train.log_every steps).")
    return rows


def lesson_scale(cfg) -> bool:
    """The lesson's landmarks (random guess ~ 2, 0.02-0.05) are about the unweighted eps MSE only."""
    return cfg.diffusion.prediction == "eps" and cfg.diffusion.weighting == "none"


def loss_curve_figure(rows: list[dict], cfg, run_name: str) -> Image.Image:
    """Training loss (mean over each logging window) against epochs (or steps for runs under one epoch)."""
    by_epoch = rows[-1].get("epoch", 0) >= 1
    x = [r["epoch"] if by_epoch else r["step"] for r in rows]
    loss = [r["loss"] for r in rows]
    refs = []
    if lesson_scale(cfg):
        refs = [Ref(y=RANDOM_GUESS_MSE, label="random guess ~ 2"),
                Ref(y=LESSON_BAND[0], y2=LESSON_BAND[1], label="lesson after 20 epochs: 0.02-0.05", color=COLORS[2])]
    plot = line_plot_image([Line(x, loss, "training loss", COLORS[0])], refs=refs, logy=True, size=(760, 420),
                     title=f"{run_name}: training loss (log scale)", xlabel="epoch" if by_epoch else "step",
                     ylabel=f"{cfg.diffusion.prediction}-MSE", integer_x=not by_epoch)
    last = rows[-1]
    caption = ("L = E_(t, x_0, eps) ||eps - eps_theta(x_t, t)||^2, t ~ U{0..T-1} (Ho et al. 2020, Algorithm 1)"
               if lesson_scale(cfg) else
               f"L = E ||target - net(x_t, t)||^2 for prediction '{cfg.diffusion.prediction}', weighting "
               f"'{cfg.diffusion.weighting}' (the lesson's eps-MSE landmarks do not apply to this scale)")
    caption += (f". Each point is the mean over {cfg.train.log_every} steps. Last: {last['loss']:.4f} at step "
                f"{last['step']} (epoch {last.get('epoch', 0):.2f}); lowest logged: {min(loss):.4f}.")
    if lesson_scale(cfg):
        caption += " Predicting eps_hat = 0 gives 1; an independent random guess 2; above 0.1 late in training, " \
                   "something is wrong."
    return titled(plot, "Training loss", caption)


# ------------------------------------------------------------------------------------------- loss by t
@torch.no_grad()
def loss_by_t(net, path: DiffusionPath, prediction: str, x0: torch.Tensor, bins: int,
              generator: torch.Generator, batch_size: int = 250) -> list[dict]:
    """The training loss (target MSE, unweighted) and the error of the image estimate clip(x0_hat) per equal-width
    bin of t, on held-out x0 (N, C, H, W) in [-1, 1]. Every digit is evaluated once per bin at a t drawn
    uniformly inside the bin (a step of the table on a DDPM path; bins and t as paths.from_time names them)."""
    T = path.T or 1000  # continuous paths: 1000 equal slices of [0, 1] to bin
    if not 1 <= bins <= T:
        raise UserError(f"--bins must be between 1 and T={T}, got {bins}.")
    denoiser = Denoiser(net, path, prediction, clip_x0=False)
    device = next(net.parameters()).device
    edges = torch.linspace(0, T, bins + 1).round().long().tolist()
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        loss_sum, x0_sum = 0.0, 0.0
        for start in range(0, len(x0), batch_size):
            x = x0[start:start + batch_size]
            t = (torch.randint(lo, hi, (len(x),), generator=generator).double() + 1) / T  # (B,) in (0, 1]
            eps = torch.randn(x.shape, generator=generator)
            x_t = q_sample(path, x, t, eps)
            x0_hat, eps_hat = (v.cpu() for v in denoiser(x_t.to(device), t))
            target = _target(path, prediction, x, eps, t)
            pred = _target(path, prediction, x0_hat, eps_hat, t)
            loss_sum += float((pred - target).pow(2).flatten(1).mean(1).sum())
            x0_sum += float((x0_hat.clamp(-1, 1) - x).pow(2).flatten(1).mean(1).sum())  # the image guess, in range
        t_lo, t_hi = (lo if path.T else from_time(path, lo / T)), (hi - 1 if path.T else from_time(path, hi / T))
        out.append(dict(t_lo=t_lo, t_hi=t_hi, t_mid=(t_lo + t_hi) / 2, loss=loss_sum / len(x0),
                        x0_mse=x0_sum / len(x0)))
    return out


def _target(path: DiffusionPath, prediction: str, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor):
    """What a network predicting `prediction` would output for (x0, eps) at times t (B,)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from_x0_eps(x0, eps, *coefficients(path, t, x0))
    return u_from_x0_eps(x0, eps, *(c.to(x0.dtype).reshape(-1, 1, 1, 1) for c in path.derivatives(t)))


def loss_by_t_figure(rows: list[dict], prediction: str, n: int, run_name: str) -> Image.Image:
    """The two per-bin curves on a log scale, with the worst bins named in the caption."""
    mid = [r["t_mid"] for r in rows]
    worst = max(rows, key=lambda r: r["loss"])
    worst_x0 = max(rows, key=lambda r: r["x0_mse"])
    lines = [Line(mid, [r["loss"] for r in rows], f"training loss ({prediction}-MSE)", COLORS[0], markers=True),
             Line(mid, [r["x0_mse"] for r in rows], "x0-MSE of clip(x0_hat)", COLORS[3], markers=True)]
    plot = line_plot_image(lines, logy=True, size=(760, 420), xlabel="t (bin centre)", ylabel="MSE (log scale)",
                           title=f"{run_name}: loss per t-bin on {n} held-out test digits")
    high_t = {"eps": "there x_t is almost pure noise",
              "x0": "there the target, the image, must be guessed from almost pure noise",
              "v": "there the target is almost the image itself (v -> -x_0 as alpha_bar -> 0), guessed from almost "
                   "pure noise",
              "u": "there the target u = eps - x_0 needs the image, guessed from almost pure noise"}
    low_t = worst["t_mid"] < rows[-1]["t_hi"] / 2
    why = "there the noise is faint and hard to pin down" if low_t else high_t[prediction]
    caption = (f"For each bin, every test digit is noised once at a t drawn in the bin, x_t = sqrt(alpha_bar_t) x_0 + "
               f"sqrt(1 - alpha_bar_t) eps, then one network call. The {prediction}-MSE (what training minimises) is "
               f"worst for t in [{worst['t_lo']}, {worst['t_hi']}] ({worst['loss']:.3g}): {why}. The error of the "
               f"image estimate, ||clip(x0_hat) - x_0||^2, is worst for t in [{worst_x0['t_lo']}, {worst_x0['t_hi']}] "
               f"({worst_x0['x0_mse']:.3g}): there the digit must be guessed. "
               "Before clipping, ||x0_hat - x_0||^2 = (1 - alpha_bar_t)/alpha_bar_t * ||eps_hat - eps||^2, so a small "
               "eps error at large t is a large image error.")
    return titled(plot, "Which noise levels is the model worst at?", caption)


# --------------------------------------------------------------------------------------- control fidelity
def read_fidelity(run_dir: Path) -> list[dict]:
    """The fidelity rows a control run logged (train/controlnet.py: step, fidelity_f1, fidelity_label_accuracy)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"No metrics.jsonl in {run_dir}; is it a run directory written by `tinydiffusion train`?")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "fidelity_f1" in r]
    if not rows:
        raise UserError(f"{path} holds no fidelity rows: it is not a ControlNet run, or it was trained with "
                        "control.fidelity_every=0.")
    return rows


def fidelity_curve_figure(runs: dict[str, list[dict]], title: str = "") -> Image.Image:
    """The map F1 (and, where logged, label accuracy) of samples against held-out maps over training, one line per
    run: Zhang et al. 2023 (sec. 4.4) see the model start following its maps suddenly, not gradually."""
    palette = dict(zip(runs, COLORS))
    kind = next(iter(runs.values()))[0].get("fidelity_kind", "edges")
    f1 = line_plot_image([Line([r["step"] for r in rows], [r["fidelity_f1"] for r in rows], name, palette[name],
                               markers=True) for name, rows in runs.items()],
                         title=f"{kind} F1 (1-pixel tolerance)", xlabel="step", ylabel="F1", ylim=(0, 1.02),
                         size=(560, 380), integer_x=True)
    panels = [f1]
    if all("fidelity_label_accuracy" in rows[0] for rows in runs.values()):
        panels.append(line_plot_image(
            [Line([r["step"] for r in rows], [r["fidelity_label_accuracy"] for r in rows], name, palette[name],
                  markers=True) for name, rows in runs.items()],
            refs=[Ref(y=0.1, label="chance (10 classes)")], title="label accuracy", xlabel="step",
            ylabel="accuracy", ylim=(0, 1.02), size=(560, 380), integer_x=True))
    last = "; ".join(f"{n}: F1 {rows[-1]['fidelity_f1']:.3f} at step {rows[-1]['step']}" for n, rows in runs.items())
    caption = (f"Samples from the EMA weights for {next(iter(runs.values()))[0].get('fidelity_n', '?')} fixed maps of "
               f"held-out test digits, the {kind} map of each sample against its map; step 0 is the frozen base "
               f"alone (zero convolutions), the chance level. Last: {last}.")
    return titled(hstack(panels), title or "Control fidelity over training", caption)
