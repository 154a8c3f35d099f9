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
reflow: 2-rectified flow, Liu et al. 2023. The teacher (a rectified-flow run) maps `pairs` noise draws eps to its
    samples x1 with its deterministic ODE sampler; the student, starting from the teacher's weights, is trained
    with the flow loss on these fixed couplings (x_t = (1 - t) x1 + t eps, u = eps - x1, t uniform), which
    straightens its paths so that few Euler steps suffice. The pair generation is timed and recorded apart.
lcm: latent consistency distillation, Luo et al. 2023 (arXiv:2310.04378): cd of a class-conditional teacher (pixel or
    latent) with classifier-free guidance baked in. Each batch draws a scale w ~ U[w_min, w_max]; the teacher's ODE
    step uses CFG at w (guidance.ClassifierFreeGuidance: both branches in one batched call); student and target
    see w as an input (a zero-initialised MLP on its sinusoidal embedding, models/condition.py), so the student
    starts as the teacher at any w and samples at w with one call per step, no unconditional branch.
One pair of levels (and one w) per batch (the samplers' one-step updates take scalar times). A latent teacher is
distilled on its cached, standardised training latents; the student is a latent run on the same autoencoder.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..checkpoint import CONFIG, model_from_config, save_checkpoint
from ..conditioning import Cond
from ..config import apply_overrides
from ..consistency import (SOLVERS, curriculum, discretisation, karras_sigmas, lognormal_weights, pseudo_huber,
                           sigma_tilde, t_min, t_of_sigma, teacher_step)
from ..data import Batches, load_dataset, to_model_range, to_unit_range
from ..denoiser import Denoiser
from ..errors import UserError
from ..device import use_bf16
from ..generate import denoiser_for, generate
from ..guidance import ClassifierFreeGuidance
from ..latent_space import latent_training_set, to_pixels
from ..objectives import diffusion_loss, sample_t
from ..models import count_parameters
from ..registry import Registry
from ..runs import load_run
from ..viz.grids import save_grid
from . import ddp
from .lock import run_lock
from .optim import budget, make_optimizer, update_ema

METHODS = Registry("distillation method")
METHODS.add("cd", text="consistency distillation from the teacher (Song et al. 2023, Algorithm 2)")
METHODS.add("ct", text="improved consistency training, no teacher step (Song & Dhariwal 2023)")
METHODS.add("reflow", text="2-rectified flow: retrain a flow run on its own (noise, sample) pairs (Liu et al. 2023)")
METHODS.add("lcm", text="latent consistency distillation: cd with classifier-free guidance baked in, w an input "
            "(Luo et al. 2023)")
DETERMINISTIC = ("euler", "heun", "dpm++2m", "dpm++3m", "ddim")  # reflow's pairs need an ODE sampler


def distill(teacher_dir: Path, method: str, out: Path, *, minutes: float = 0.0, steps: int = 0,
            solver: str = "heun", N: int = 18, mu: float = 0.95, overrides: list[str] = (), seed: int = 0,
            quiet: bool = True, pairs: int = 20_000, guidance_range: tuple[float, float] = (1.0, 4.0)) -> dict:
    """Distil (cd, lcm) or train (ct) a consistency model, or reflow a flow run, from the teacher run in teacher_dir
    into the run `out`. pairs: reflow's number of (noise, teacher sample) couplings; guidance_range: lcm's
    [w_min, w_max]."""
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
    w_lo, w_hi = (float(w) for w in guidance_range)
    if method == "lcm" and not 0 <= w_lo <= w_hi:
        raise UserError(f"--guidance-range needs 0 <= w_min <= w_max, got {w_lo:g},{w_hi:g}.")
    if (out / CONFIG).exists():
        raise UserError(f"{out} already holds a run; choose another --out.")
    distributed.barrier()  # every rank has looked before rank 0 writes
    if not Path(teacher_dir).is_dir():
        raise UserError(f"Teacher run {teacher_dir} does not exist; train one with `tinydiffusion train`.")
    tcfg, tnet, path, meta = load_run(teacher_dir)
    base = tcfg.diffusion.prediction
    if base.startswith("cm-"):
        raise UserError(f"{teacher_dir} is already a consistency model; distil from a diffusion or flow run.")
    if method == "lcm" and (tcfg.data.text or not int(meta.get("num_classes", 0))):
        raise UserError(f"LCM bakes classifier-free guidance on class labels into the student, and {teacher_dir} is "
                        + ("a text run (not supported yet)" if tcfg.data.text else "unconditional")
                        + "; distil a class-conditional run (--preset mnist-latent-class or mnist-class).")
    train_cfg = replace(tcfg.train, lr=2e-4, warmup_steps=0, lr_decay="none", minutes=minutes, steps=steps, epochs=0)
    if method == "reflow":
        if tcfg.diffusion.path != "flow":
            raise UserError(f"Reflow straightens a rectified-flow run's couplings, and {teacher_dir} is on the "
                            f"'{tcfg.diffusion.path}' path; distil it with --method cd, or reflow a flow run "
                            "(--preset mnist).")
        if tcfg.sample.sampler not in DETERMINISTIC:
            raise UserError(f"The teacher samples with '{tcfg.sample.sampler}', which adds noise; reflow needs the "
                            f"couplings of an ODE sampler ({', '.join(DETERMINISTIC)}).")
        if pairs < tcfg.train.batch_size:
            raise UserError(f"--pairs {pairs} is fewer than one batch of {tcfg.train.batch_size}.")
        cfg = replace(tcfg, seed=seed, diffusion=replace(tcfg.diffusion, t_sampling="uniform"),
                      sample=replace(tcfg.sample, sampler="euler", steps=1, spacing="uniform"), train=train_cfg)
    else:
        model = replace(tcfg.model, guidance_embedding=True) if method == "lcm" else tcfg.model
        cfg = replace(tcfg, seed=seed, diffusion=replace(tcfg.diffusion, prediction=f"cm-{base}"), model=model,
                      sample=replace(tcfg.sample, sampler="consistency", steps=1, spacing="uniform"), train=train_cfg)
    cfg = apply_overrides(cfg, list(overrides))
    with run_lock(out) if distributed.is_main() else contextlib.nullcontext():
        return _distill(cfg, tcfg, tnet, path, meta, method, out, solver, N, mu, str(teacher_dir), quiet, pairs,
                        (w_lo, w_hi))


def reflow_pairs(tcfg, tnet, path, n: int, shape: tuple, num_classes: int, seed: int):
    """(noise (n, *shape), the teacher's samples from it (n, *shape), labels (n,) or None): the teacher's deterministic
    sampler run from each noise draw (sharded over ranks under torchrun); pixels clamped to [-1, 1], latents (a
    latent teacher) as they are."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *shape), generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g) if num_classes else None
    x1 = generate(denoiser_for(tnet, path, tcfg.diffusion.prediction, tcfg.sample), tcfg.sample, n, shape,
                  seed=seed, noise=noise, cond=None if labels is None else Cond(labels=labels),
                  bf16=use_bf16(tcfg.train.precision, "cpu"))
    return noise, x1 if tcfg.data.autoencoder else x1.clamp(-1, 1), labels


def guidance_student(cfg, tnet, shape: tuple, num_classes: int) -> torch.nn.Module:
    """lcm: the student network of cfg (the teacher's architecture plus the w embedding) holding the teacher's
    weights; the w embedding's last layer is zero, so it starts as the teacher at every w."""
    student = model_from_config(cfg, shape, num_classes)
    missing, unexpected = student.load_state_dict(tnet.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("guidance_mlp.") for k in missing), (missing, unexpected)
    return student


def _distill(cfg, tcfg, tnet, path, meta, method, out, solver, N, mu, teacher_dir, quiet, pairs, guidance_range):
    tc = cfg.train
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)  # the global batch's noise and levels, alike on every rank
    shards, main = ddp.Shards(tc.batch_size, tc.accumulate), distributed.is_main()  # see train/ddp.py
    num_classes, shape = int(meta.get("num_classes", 0)), tuple(meta["shape"])
    extra = {}
    if method == "reflow":  # the training set: the teacher's couplings, made once
        start = time.perf_counter()
        coupled = reflow_pairs(tcfg, tnet, path, pairs, shape, num_classes, cfg.seed)
        extra = dict(pairs=pairs, pair_sampler=tcfg.sample.sampler, pair_steps=tcfg.sample.steps,
                     pair_seconds=round(time.perf_counter() - start, 1))
        n_data = pairs
    else:
        data = load_dataset(cfg.data.name, "train", cfg.data.path, image_size=cfg.data.image_size,
                            channels=cfg.data.channels)
        latents = latent_training_set(cfg, data)[1] if cfg.data.autoencoder else None  # the teacher's latent space
        n_data = len(data)
    batches = Batches(n_data, tc.batch_size, cfg.seed)
    max_steps, max_seconds = budget(cfg, batches.steps_per_epoch)
    teacher = Denoiser(tnet.requires_grad_(False), path, tcfg.diffusion.prediction)

    # 1. student (teacher's weights for cd, lcm and reflow; fresh for ct), target network, EMA, optimiser
    student = copy.deepcopy(tnet) if method != "lcm" else guidance_student(cfg, tnet, shape, num_classes)
    student.requires_grad_(True).train()
    if method == "ct":
        for m in student.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    target = copy.deepcopy(student).requires_grad_(False).eval() if method in ("cd", "lcm") else student
    ema = copy.deepcopy(student).requires_grad_(False).eval() if tc.ema_decay > 0 else None
    optimizer = make_optimizer(tc, student.parameters(), torch.device("cpu"))
    wrapped = ddp.wrap(student, torch.device("cpu"))  # DDP on several ranks; target and EMA read `student`
    f_student = Denoiser(wrapped, path, cfg.diffusion.prediction)
    f_target = Denoiser(target, path, cfg.diffusion.prediction)
    ts = discretisation(path, N)  # (N,) ascending times, ts[0] = t_min
    s_lo, s_hi = float(sigma_tilde(path, t_min(path))), float(sigma_tilde(path, float(ts[-1])))
    K = max_steps or 10_000  # ct's curriculum length when the budget is in minutes
    if method == "lcm":
        extra["guidance_range"] = list(guidance_range)
    meta = dict(meta, distill=dict(method=method, teacher=str(Path(teacher_dir).resolve()), solver=solver, N=N,
                                   mu=mu, **extra), parameters=count_parameters(student), world_size=shards.world)
    step, elapsed, carry, value = 0, 0.0, 0.0, float("nan")
    if main:
        (out).mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").touch()

    def checkpoint():
        meta["step"] = step
        rng = ddp.rng_states()  # a collective: every rank calls checkpoint
        if main:
            save_checkpoint(out, cfg, meta, student, ema, optimizer, dict(step=step, elapsed=elapsed,
                            generator=g.get_state(), torch_rng=rng), keep=tc.keep_checkpoints)

    def log(step, loss, elapsed):
        if main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(dict(step=step, loss=loss, elapsed_s=round(elapsed, 2))) + "\n")

    def consistency_step(idx) -> float:
        """cd / ct / lcm: forward and backward of this rank's micro-batches of the global batch idx; their summed
        loss."""
        x0 = latents.batch(idx, g) if latents is not None else to_model_range(data.images[idx])  # (B, C, H, W)
        cond = Cond(labels=data.labels[idx]) if num_classes else None
        eps = torch.randn(x0.shape, generator=g)
        teacher_w = teacher
        if method == "lcm":  # one guidance scale per batch, in the condition of student and target
            w = guidance_range[0] + (guidance_range[1] - guidance_range[0]) * float(torch.rand((), generator=g))
            cond, teacher_w = replace(cond, guidance=torch.full((len(idx),), w)), ClassifierFreeGuidance(teacher, w)
        # 2. a pair of adjacent noise levels t_hi > t_lo, and the target at t_lo
        if method in ("cd", "lcm"):
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
        local = 0.0
        for k, rows in enumerate(shards.slices()):  # this rank's micro-batches of the global batch
            c = None if cond is None else cond[rows]
            x_hi = a_hi * x0[rows] + sg_hi * eps[rows]
            with torch.no_grad():
                if method in ("cd", "lcm"):  # lcm: the guided teacher (its Cond's w is read by the student only)
                    x_lo = teacher_step(solver, teacher_w, x_hi, t_hi, t_lo, c)
                else:
                    a_lo, sg_lo = (float(v) for v in path.alpha_sigma(t_lo))
                    x_lo = a_lo * x0[rows] + sg_lo * eps[rows]  # the same noise: a one-sample estimate of the ODE step
                f_lo = f_target(x_lo, t_lo, c)[0]
            with ddp.no_sync(wrapped, last=k == shards.accumulate - 1):
                f_hi = f_student(x_hi, t_hi, c)[0]
                loss = (weight * pseudo_huber(f_hi, f_lo)).mean() / shards.accumulate
                loss.backward()
            local += loss.item()
        return local

    def reflow_step(idx) -> float:
        """reflow: the flow loss on the teacher's fixed couplings (x1, eps) of the global batch idx, forward and
        backward of this rank's micro-batches; their summed loss."""
        noise, x1, labels = coupled
        x0, eps = x1[idx], noise[idx]
        cond = None if labels is None else \
            Cond(labels=labels[idx]).drop(torch.rand(len(idx), generator=g) < tc.label_dropout)
        t = sample_t(path, len(idx), cfg.diffusion.t_sampling, g, logit_mean=cfg.diffusion.logit_mean,
                     logit_std=cfg.diffusion.logit_std)
        local = 0.0
        for k, rows in enumerate(shards.slices()):
            with ddp.no_sync(wrapped, last=k == shards.accumulate - 1):
                loss = diffusion_loss(wrapped, path, x0[rows], prediction=cfg.diffusion.prediction,
                                      weighting=cfg.diffusion.weighting, cond=None if cond is None else cond[rows],
                                      noise=(t[rows], eps[rows])).mean() / shards.accumulate
                loss.backward()
            local += loss.item()
        return local

    checkpoint()
    window, window_n = 0.0, 0
    while (max_steps is None or step < max_steps) and (max_seconds is None or elapsed < max_seconds):
        t0 = time.perf_counter()
        idx = batches.indices(step)
        optimizer.zero_grad(set_to_none=True)
        local = reflow_step(idx) if method == "reflow" else consistency_step(idx)
        step += 1
        value, elapsed = ddp.sync_scalars(local, elapsed + carry + time.perf_counter() - t0)
        t1 = time.perf_counter()
        if not math.isfinite(value):  # the same mean on every rank: every rank stops
            raise UserError(f"The distillation loss became {value} at step {step}; the last good checkpoint "
                            f"in {out} is intact. Lower train.lr (--set train.lr=5e-5).")
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), tc.grad_clip)
        optimizer.step()
        if method in ("cd", "lcm"):
            update_ema(target, student, mu)  # 3. the target network theta^- <- mu theta^- + (1 - mu) theta
        if ema is not None:
            update_ema(ema, student, min(tc.ema_decay, (1 + step) / (10 + step)) if tc.ema_warmup else tc.ema_decay)
        carry = time.perf_counter() - t1
        window, window_n = window + value, window_n + 1
        if step % tc.log_every == 0 or step == max_steps:
            log(step, window / window_n, elapsed)
            window, window_n = 0.0, 0
        if step % tc.checkpoint_every == 0:
            checkpoint()
    elapsed += carry
    if window_n:  # a minutes budget ends between log rows: the last one is logged too
        log(step, window / window_n, elapsed)
    checkpoint()
    summary = dict(steps=step, elapsed_s=elapsed, loss=value,
                   **{k: extra[k] for k in ("pairs", "pair_seconds") if k in extra})
    if not main:
        return summary
    net = (ema or student).eval()
    w = sum(guidance_range) / 2 if method == "lcm" else None  # the grid of an lcm run: the middle of its range
    x = generate(denoiser_for(net, path, cfg.diffusion.prediction, cfg.sample, guidance=w), cfg.sample, 64, shape,
                 generator=torch.Generator().manual_seed(cfg.seed),
                 cond=Cond(labels=torch.arange(64) % num_classes) if num_classes else None)
    save_grid(to_unit_range(to_pixels(meta, x)), out / "samples" / f"step_{step:07d}.png")
    return summary
