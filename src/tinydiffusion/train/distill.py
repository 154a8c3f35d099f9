"""distill(teacher, method, out): a consistency model as a normal run directory, top to bottom: data -> noise level
pair -> target (one teacher ODE step, or the data itself) -> pseudo-Huber -> step -> EMAs -> log -> checkpoint.

cd: consistency distillation, Song et al. 2023 Algorithm 2. The student starts from the teacher's weights; the
    pair (t_{n+1}, t_n) is drawn from N Karras levels on the teacher's path; the target is f_target(x^_{t_n}, t_n)
    with x^ one teacher step (consistency.teacher_step) and f_target an EMA (decay mu) of the student.
ct: improved consistency training, Song & Dhariwal 2023 (iCT): no teacher step (x_{t_n} shares the noise of
    x_{t_{n+1}}), the student starts from random weights (the teacher run only gives the architecture and path),
    the target is the student itself under stop-grad, the curriculum doubles N, levels are drawn log-normally
    (P_mean = -1.1), and the loss is weighted 1 / (sigma~_{n+1} - sigma~_n). Known weak spot: CT stalls at small
    batch, where the one-sample target is noisy.
One pair of levels per batch (the samplers' one-step updates take scalar times).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CONFIG, save_checkpoint
from ..conditioning import Cond
from ..config import apply_overrides
from ..consistency import (SOLVERS, curriculum, discretisation, karras_sigmas, lognormal_weights, pseudo_huber,
                           sigma_tilde, t_min, t_of_sigma, teacher_step)
from ..data import Batches, load_dataset, to_model_range, to_unit_range
from ..denoiser import Denoiser
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..models import count_parameters
from ..registry import Registry
from ..runs import load_run
from ..viz.grids import save_grid
from .lock import run_lock
from .optim import budget, make_optimizer, update_ema

METHODS = Registry("distillation method")
METHODS.add("cd", text="consistency distillation from the teacher (Song et al. 2023, Algorithm 2)")
METHODS.add("ct", text="improved consistency training, no teacher step (Song & Dhariwal 2023)")


def distill(teacher_dir: Path, method: str, out: Path, *, minutes: float = 0.0, steps: int = 0,
            solver: str = "heun", N: int = 18, mu: float = 0.95, overrides: list[str] = (), seed: int = 0,
            quiet: bool = True) -> dict:
    """Distil (cd) or train (ct) a consistency model from the teacher run in teacher_dir into the run `out`."""
    out = Path(out)
    METHODS.check(method)
    if solver not in SOLVERS:
        raise UserError(f"Unknown teacher solver '{solver}'; choose one of: {', '.join(SOLVERS)}.")
    if N < 2:
        raise UserError(f"--N must be at least 2 noise levels, got {N}.")
    if not 0 <= mu < 1:
        raise UserError(f"--mu (the target network's EMA decay) must be in [0, 1), got {mu}.")
    if not (minutes or steps):
        raise UserError("No distillation budget: give --minutes or --steps.")
    if (out / CONFIG).exists():
        raise UserError(f"{out} already holds a run; choose another --out.")
    if not Path(teacher_dir).is_dir():
        raise UserError(f"Teacher run {teacher_dir} does not exist; train one with `tinydiffusion train`.")
    tcfg, tnet, path, meta = load_run(teacher_dir)
    base = tcfg.diffusion.prediction
    if base.startswith("cm-"):
        raise UserError(f"{teacher_dir} is already a consistency model; distil from a diffusion or flow run.")
    if tcfg.data.autoencoder:
        raise UserError("Distilling a latent run is not supported yet; use a pixel teacher run.")
    cfg = replace(tcfg, seed=seed, diffusion=replace(tcfg.diffusion, prediction=f"cm-{base}"),
                  sample=replace(tcfg.sample, sampler="consistency", steps=1, spacing="uniform"),
                  train=replace(tcfg.train, lr=2e-4, warmup_steps=0, lr_decay="none", minutes=minutes, steps=steps,
                                epochs=0))
    cfg = apply_overrides(cfg, list(overrides))
    with run_lock(out):
        return _distill(cfg, tcfg, tnet, path, meta, method, out, solver, N, mu, str(teacher_dir), quiet)


def _distill(cfg, tcfg, tnet, path, meta, method, out, solver, N, mu, teacher_dir, quiet):
    tc = cfg.train
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    data = load_dataset(cfg.data.name, "train", cfg.data.path, image_size=cfg.data.image_size,
                        channels=cfg.data.channels)
    num_classes, shape = int(meta.get("num_classes", 0)), tuple(meta["shape"])
    batches = Batches(len(data), tc.batch_size, cfg.seed)
    max_steps, max_seconds = budget(cfg, batches.steps_per_epoch)
    teacher = Denoiser(tnet.requires_grad_(False), path, tcfg.diffusion.prediction)

    # 1. student (teacher's weights for cd, fresh for ct), target network, EMA for sampling, optimiser
    student = copy.deepcopy(tnet).requires_grad_(True).train()
    if method == "ct":
        for m in student.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    target = copy.deepcopy(student).requires_grad_(False).eval() if method == "cd" else student
    ema = copy.deepcopy(student).requires_grad_(False).eval() if tc.ema_decay > 0 else None
    optimizer = make_optimizer(tc, student.parameters(), torch.device("cpu"))
    f_student = Denoiser(student, path, cfg.diffusion.prediction)
    f_target = Denoiser(target, path, cfg.diffusion.prediction)
    ts = discretisation(path, N)  # (N,) ascending times, ts[0] = t_min
    s_lo, s_hi = float(sigma_tilde(path, t_min(path))), float(sigma_tilde(path, float(ts[-1])))
    K = max_steps or 10_000  # ct's curriculum length when the budget is in minutes
    meta = dict(meta, distill=dict(method=method, teacher=str(Path(teacher_dir).resolve()), solver=solver, N=N,
                                   mu=mu), parameters=count_parameters(student))
    step, elapsed = 0, 0.0
    (out).mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").touch()

    def checkpoint():
        meta["step"] = step
        save_checkpoint(out, cfg, meta, student, ema, optimizer, dict(step=step, elapsed=elapsed,
                        generator=g.get_state(), torch_rng=torch.get_rng_state()), keep=tc.keep_checkpoints)

    def log(step, loss, elapsed):
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(dict(step=step, loss=loss, elapsed_s=round(elapsed, 2))) + "\n")

    checkpoint()
    window, window_n = 0.0, 0
    while (max_steps is None or step < max_steps) and (max_seconds is None or elapsed < max_seconds):
        t0 = time.perf_counter()
        idx = batches.indices(step)
        x0 = to_model_range(data.images[idx])  # (B, C, H, W) in [-1, 1]
        cond = Cond(labels=data.labels[idx]) if num_classes else None
        eps = torch.randn(x0.shape, generator=g)
        # 2. a pair of adjacent noise levels t_hi > t_lo, and the target at t_lo
        if method == "cd":
            n = int(torch.randint(0, N - 1, (1,), generator=g))
            t_lo, t_hi = float(ts[n]), float(ts[n + 1])
            weight = 1.0
        else:
            sigmas = karras_sigmas(curriculum(step, K), s_lo, s_hi)
            n = int(np.searchsorted(np.cumsum(lognormal_weights(sigmas)), float(torch.rand((), generator=g))))
            n = min(n, len(sigmas) - 2)
            t_lo, t_hi = (float(t_of_sigma(path, torch.tensor(s))) for s in sigmas[n:n + 2])
            t_lo = t_min(path) if n == 0 else t_lo
            weight = 1.0 / (sigmas[n + 1] - sigmas[n])
        a_hi, sg_hi = (float(v) for v in path.alpha_sigma(t_hi))
        x_hi = a_hi * x0 + sg_hi * eps
        with torch.no_grad():
            if method == "cd":
                x_lo = teacher_step(solver, teacher, x_hi, t_hi, t_lo, cond)
            else:
                a_lo, sg_lo = (float(v) for v in path.alpha_sigma(t_lo))
                x_lo = a_lo * x0 + sg_lo * eps  # the same noise: a one-sample estimate of the ODE step
            f_lo = f_target(x_lo, t_lo, cond)[0]
        f_hi = f_student(x_hi, t_hi, cond)[0]
        loss = (weight * pseudo_huber(f_hi, f_lo)).mean()
        step += 1
        if not math.isfinite(loss.item()):
            raise UserError(f"The distillation loss became {loss.item()} at step {step}; the last good checkpoint "
                            f"in {out} is intact. Lower train.lr (--set train.lr=5e-5).")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), tc.grad_clip)
        optimizer.step()
        if method == "cd":
            update_ema(target, student, mu)  # 3. the target network theta^- <- mu theta^- + (1 - mu) theta
        if ema is not None:
            update_ema(ema, student, min(tc.ema_decay, (1 + step) / (10 + step)) if tc.ema_warmup else tc.ema_decay)
        elapsed += time.perf_counter() - t0
        window, window_n = window + loss.item(), window_n + 1
        if step % tc.log_every == 0 or step == max_steps:
            log(step, window / window_n, elapsed)
            window, window_n = 0.0, 0
        if step % tc.checkpoint_every == 0:
            checkpoint()
    if window_n:  # a minutes budget ends between log rows: the last one is logged too
        log(step, window / window_n, elapsed)
    checkpoint()
    net = (ema or student).eval()
    x = generate(denoiser_for(net, path, cfg.diffusion.prediction, cfg.sample), cfg.sample, 64, shape,
                 generator=torch.Generator().manual_seed(cfg.seed),
                 cond=Cond(labels=torch.arange(64) % num_classes) if num_classes else None)
    save_grid(to_unit_range(x), out / "samples" / f"step_{step:07d}.png")
    return dict(steps=step, elapsed_s=elapsed, loss=loss.item() if step else float("nan"))
