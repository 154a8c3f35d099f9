"""The lessons' image figures: the forward process on a real digit, the one-step denoising diagnostic, and the
sampling trajectory (strip + animated GIF). Each figure states the formula it illustrates."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ..data import to_unit_range
from ..denoiser import Denoiser
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..io import atomic_write
from ..paths import Path as DiffusionPath, from_time, signal_label, to_time
from ..process import q_sample
from .grids import font, grid_array, titled, to_pil

LESSON_FORWARD_T = (0, 100, 250, 500, 750, 999)
LESSON_DIAGNOSTIC_T = (100, 300, 600, 900)
LESSON_TRAJECTORY_T = (999, 750, 500, 250, 100, 50, 0)
X0_HAT_FORMULA = {
    "eps": "x0_hat = (x_t - sqrt(1 - alpha_bar_t) * eps_theta(x_t, t)) / sqrt(alpha_bar_t)",
    "x0": "x0_hat = the network's output (it predicts x_0 directly)",
    "v": "x0_hat = (alpha_t * x_t - sigma_t * v_theta(x_t, t)) / (alpha_t^2 + sigma_t^2)",
    "u": "x0_hat = (sigma'_t * x_t - sigma_t * u_theta(x_t, t)) / (alpha_t sigma'_t - sigma_t alpha'_t) (flow: x_t - t u)",
}


def lesson_times(times: tuple[int, ...], T: int | None) -> list:
    """The lesson's steps (given for T = 1000) mapped onto a chain of T steps, t -> round(t * T / 1000); on a
    continuous path (T = None) onto [0, 1], t -> round((t + 1) / 1000, 2) (999 -> 1.0, 100 -> 0.1)."""
    if T is None:
        return sorted({round((t + 1) / 1000, 2) for t in times}, reverse=times[0] > times[-1])
    return sorted({min(T - 1, round(t * T / 1000)) for t in times}, reverse=times[0] > times[-1])


def check_times(times: list, T: int | None) -> list:
    """Times as users give them: integer steps 0..T-1 on a DDPM path, floats in [0, 1] on a continuous one."""
    if T is None:
        bad = [t for t in times if not 0 <= t <= 1]
        if bad:
            raise UserError(f"--t values must lie in [0, 1] on a continuous-time path (1 = noise); got {bad}.")
        return [float(t) for t in times]
    bad = [t for t in times if t != int(t) or not 0 <= t < T]
    if bad:
        raise UserError(f"--t values must be integers in 0..{T - 1} for this chain of T={T} steps; got {bad}.")
    return [int(t) for t in times]


def image_table(cells: list[list[torch.Tensor]], row_labels: list[str], col_labels: list[str], *, nrow: int,
                scale: int, label_size: int = 14) -> Image.Image:
    """A table of image grids: cells[r][c] is (N, C, H, W) in [0, 1]; labels left of rows and above columns."""
    grids = [[to_pil(grid_array(cell, nrow, pad=1, scale=scale)).convert("RGB") for cell in row] for row in cells]
    cw, ch = grids[0][0].size
    f = font(label_size)
    line_h = int(label_size * 1.3)
    gap = 8
    label_w = int(max(f.getlength(line) for lab in row_labels for line in lab.split("\n"))) + 16
    head_h = max(len(c.split("\n")) for c in col_labels) * line_h + 6
    col_w = max(cw, int(max(f.getlength(line) for lab in col_labels for line in lab.split("\n"))) + 8)
    out = Image.new("RGB", (label_w + len(col_labels) * (col_w + gap), head_h + len(cells) * (ch + gap)), "white")
    draw = ImageDraw.Draw(out)
    for c, lab in enumerate(col_labels):
        x = label_w + c * (col_w + gap) + col_w // 2
        for k, line in enumerate(lab.split("\n")):
            draw.text((x, 2 + k * line_h), line, font=f, fill=(0, 0, 0), anchor="mt")
    for r, row in enumerate(grids):
        y = head_h + r * (ch + gap)
        lines = row_labels[r].split("\n")
        for k, line in enumerate(lines):
            draw.text((4, y + ch // 2 + (k - (len(lines) - 1) / 2) * line_h), line, font=f, fill=(0, 0, 0),
                      anchor="lm")
        for c, g in enumerate(row):
            out.paste(g, (label_w + c * (col_w + gap) + (col_w - cw) // 2, y))
    return out


# ------------------------------------------------------------------------------------------- forward
def forward_figure(paths: dict[str, DiffusionPath], x0: torch.Tensor, times: list[int], eps: torch.Tensor, T: int,
                   scale: int = 4, what: str = "MNIST digit") -> Image.Image:
    """One digit x0 (1, C, H, W) in [-1, 1] noised to each step t of T with the same eps (1, C, H, W), a row per
    path (the signal left differs per path, so each row carries its own column labels). A continuous path is
    shown at the same times, t = (step + 1) / T."""
    rows = []
    for name, path in paths.items():
        n = len(times)
        tc = torch.tensor([(k + 1) / T for k in times], dtype=torch.float64)  # (n,) continuous times
        x_t = q_sample(path, x0.expand(n, *x0.shape[1:]), tc, eps.expand(n, *eps.shape[1:]))
        col_labels = [f"t = {k}\n{signal_label(path, float(t))}" for k, t in zip(times, tc)]
        rows.append(image_table([[to_unit_range(x_t[k:k + 1]) for k in range(n)]], [name.replace("-", "\n", 1)],
                                col_labels, nrow=1, scale=scale))
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height for r in rows) + 14 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + 14
    flow = any(not p.variance_preserving for p in paths.values())
    return titled(out, f"The forward process q(x_t | x_0): one {what}, one fixed noise eps (T = {T})",
                  "x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps, with the same eps in every column. "
                  "alpha_bar_t = prod_{s<=t} (1 - beta_s) is the share of the variance that is still signal; "
                  "at alpha_bar = 0.5 signal and noise weigh the same."
                  + (" Rectified flow: x_t = (1 - t) x_0 + t eps, a straight line from the digit to the noise."
                     if flow else ""))


# ---------------------------------------------------------------------------------------- diagnostic
@torch.no_grad()
def diagnostic_figure(net, path: DiffusionPath, prediction: str, x0: torch.Tensor, times: list,
                      generator: torch.Generator, title: str, scale: int = 4) -> tuple[Image.Image, list[float]]:
    """The lesson's 3-row figure: x_t, the model's x0_hat from ONE network call, and x0, at each t.
    x0: (N, C, H, W) in [-1, 1]. Returns the figure and the per-t MSE of x0_hat against x0."""
    denoiser = Denoiser(net, path, prediction, clip_x0=False)  # show the raw estimate, not a clipped one
    device = next(net.parameters()).device
    eps = torch.randn(x0.shape, generator=generator)
    rows, mses = [[], [], []], []
    for t in times:
        tc = to_time(path, t)
        x_t = q_sample(path, x0, tc, eps)
        x0_hat, _ = denoiser(x_t.to(device), tc)
        x0_hat = x0_hat.cpu()
        mses.append(float((x0_hat.clamp(-1, 1) - x0).pow(2).mean()))
        for r, img in enumerate((x_t, x0_hat, x0)):
            rows[r].append(to_unit_range(img))
    col_labels = [f"t = {t}\n{signal_label(path, to_time(path, t))}\nMSE(x0_hat) = {m:.3f}"
                  for t, m in zip(times, mses)]
    table = image_table(rows, ["noisy input\nx_t", "model's\nestimate\nx0_hat", "original\nx_0"], col_labels,
                        nrow=min(4, x0.shape[0]), scale=scale)
    t_max = max(times)
    alpha_max, sigma_max = (float(v) for v in path.alpha_sigma(to_time(path, t_max)))
    amplify = sigma_max / alpha_max
    caption = (f"{X0_HAT_FORMULA[prediction]}: one network evaluation, no sampling loop; x_t = alpha_t * x_0 "
               "+ sigma_t * eps. Small t: the estimate is nearly the digit. Large t: the digit must be "
               "guessed, and x0_hat - x_0 = -(sigma_t / alpha_t) * (eps_hat - eps) multiplies the "
               f"network's error by {amplify:.3g} at t = {t_max}, so the estimate is blurry or saturated. Samplers "
               "refine it over many steps (clipping it to [-1, 1] where sample.clip_x0 says so). Pictures and MSE use "
               "x0_hat clipped to [-1, 1].")
    return titled(table, title, caption), mses


# ---------------------------------------------------------------------------------------- trajectory
@torch.no_grad()
def record_trajectory(net, path: DiffusionPath, sample_cfg, prediction: str, n: int, shape: tuple, *,
                      generator: torch.Generator, device="cpu", cond=None, decode=None) -> tuple[list[dict], list]:
    """Sample n images and keep every step's dict(i, t, x, x0_hat) (CPU copies), t as users name it (the step
    on a DDPM path, see paths.from_time). decode: latents -> images, for a latent run (x and x0_hat are then its
    decoded latents). Returns (steps, their times)."""
    frames = []
    decode = decode or (lambda x: x)

    def keep(d):  # the sampler's callback: x is the sample after the step from t, x0_hat the estimate at t
        frames.append(dict(i=d["i"], t=from_time(path, d["t"]), x=decode(d["x"]).float().cpu().clamp(-1, 1),
                           x0_hat=decode(d["x0_hat"]).float().cpu().clamp(-1, 1)))

    generate(denoiser_for(net, path, prediction, sample_cfg), sample_cfg, n, shape, batch_size=n,
             generator=generator, device=device, cond=cond, callback=keep)
    return frames, [f["t"] for f in frames]


def nearest_visited(targets: list, visited: list) -> list[int]:
    """For each target step the index of the nearest visited step (few-step samplers skip most t), deduplicated."""
    out = []
    for t in targets:
        k = min(range(len(visited)), key=lambda j: (abs(visited[j] - t), j))
        if k not in out:
            out.append(k)
    return out


def trajectory_strip(frames: list[dict], targets: list, title: str, nrow: int, sampler: str,
                     scale: int = 3) -> Image.Image:
    """Columns: the visited steps nearest to targets; rows: the sample after the step, and x0_hat at that step."""
    idx = nearest_visited(targets, [f["t"] for f in frames])
    cols = [frames[k] for k in idx]
    cells = [[to_unit_range(f["x"]) for f in cols], [to_unit_range(f["x0_hat"]) for f in cols]]
    labels = [f"t = {f['t']}\nstep {f['i'] + 1}/{len(frames)}" for f in cols]
    table = image_table(cells, ["sample x\n(after the\nstep at t)", "estimate\nx0_hat\n(at t)"], labels,
                        nrow=nrow, scale=scale)
    caption = (f"At each visited step t the network gives x0_hat; the '{sampler}' sampler then moves x to the next "
               "visited step (ddpm: x_next ~ q(x_next | x_t, x0_hat), Ho et al. 2020, Algorithm 2). "
               "The estimate x0_hat settles on a digit long before the sample x stops being noisy.")
    return titled(table, title, caption)


def trajectory_gif(frames: list[dict], path: Path, nrow: int, max_frames: int = 60, scale: int = 3,
                   ms_per_frame: int = 80, hold_ms: int = 1500) -> int:
    """Animated GIF of the whole denoising: one frame per kept step (at most max_frames, evenly spaced, always
    the last), each showing x and x0_hat. Returns the number of frames written."""
    if max_frames < 1:
        raise UserError("--gif-frames must be at least 1.")
    n = len(frames)
    m = min(max_frames, n)
    keep = sorted({round(k * (n - 1) / max(1, m - 1)) for k in range(m)})  # m evenly spaced, first and last
    f = font(14)
    images = []
    for k in keep:
        fr = frames[k]
        panels = [to_pil(grid_array(to_unit_range(fr[key]), nrow, pad=1, scale=scale)).convert("L")
                  for key in ("x", "x0_hat")]
        w, h = panels[0].size
        im = Image.new("L", (2 * w + 30, h + 46), 255)
        d = ImageDraw.Draw(im)
        # the step label makes every frame distinct, so Pillow never merges two frames into one
        d.text((10, 4), f"step {fr['i'] + 1}/{n}   t = {fr['t']}", font=f, fill=0)
        d.text((10, 24), "sample x", font=f, fill=0)
        d.text((w + 20, 24), "estimate x0_hat", font=f, fill=0)
        im.paste(panels[0], (10, 42))
        im.paste(panels[1], (w + 20, 42))
        images.append(im)
    durations = [ms_per_frame] * (len(images) - 1) + [hold_ms]
    atomic_write(Path(path), lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                        duration=durations, loop=0, optimize=False))
    return len(images)


def sample_config_for(cfg_sample, sampler: str | None, steps: int | None):
    """The run's sampling config with --sampler / --steps applied."""
    return replace(cfg_sample, sampler=sampler or cfg_sample.sampler, steps=steps or cfg_sample.steps)
