"""Samplers: stateless functions sample_xxx(denoiser, x_T, timesteps, *, cond, generator, callback) -> x_0.

`timesteps` is a strictly descending list of integer steps (see `timesteps.make_timesteps`), e.g. [999, ..., 0];
each sampler moves from timesteps[i] to timesteps[i + 1] and from the last one to clean data (alpha_bar = 1,
written t = -1 below). The callback, if given, receives dict(i, t, x, x0_hat) after every step, where x is the
state at the next step (x_0 after the last), so pictures hook in without editing samplers.

Notation: alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t)
(half the log-SNR, Lu et al. 2022), and the Karras noise level sigma~_t = sigma_t / alpha_t of x / alpha.
One network evaluation per step, except heun: 2 per step and 1 on the last, 2K - 1 in all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import UserError
from .process import q_posterior_skip
from .registry import Registry


def _alpha_bar(schedule, t: int) -> float:
    """alpha_bar_t as a Python float, with alpha_bar_{-1} = 1: the clean data every sampler ends on."""
    return 1.0 if t < 0 else float(schedule.alpha_bar[t])


def _pairs(timesteps) -> list[tuple[int, int]]:
    """[(t, s)] for each step t -> s, the last one going to s = -1 (clean data)."""
    timesteps = [int(t) for t in timesteps]
    return list(zip(timesteps, timesteps[1:] + [-1]))


def _report(callback, i, t, x, x0_hat):
    if callback is not None:
        callback(dict(i=i, t=t, x=x, x0_hat=x0_hat))


@torch.no_grad()
def sample_ddpm(denoiser, x_T, timesteps, *, cond=None, generator=None, callback=None, variance="small"):
    """Ancestral sampling, Ho et al. 2020 Algorithm 2: x_s ~ q(x_s | x_t, x0_hat), sigma^2 = beta_tilde ("small")
    or beta ("large"); skipped steps use the posterior between any two steps (Nichol & Dhariwal 2021, sec. 4)."""
    if variance not in ("small", "large"):
        raise UserError(f"DDPM variance must be 'small' or 'large', got '{variance}'.")
    x = x_T
    for i, (t, s) in enumerate(_pairs(timesteps)):
        x0_hat, _ = denoiser(x, t, cond)
        ab_t, ab_s = _alpha_bar(denoiser.schedule, t), _alpha_bar(denoiser.schedule, s)
        mean, var = q_posterior_skip(ab_t, ab_s, x0_hat, x)
        if variance == "large" and s >= 0:
            var = 1 - ab_t / ab_s  # beta between the two steps
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = mean + var**0.5 * noise
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_ddim(denoiser, x_T, timesteps, *, cond=None, generator=None, callback=None, eta=0.0):
    """DDIM, Song et al. 2021 eq. 12 with sigma_t(eta) of eq. 16: eta = 0 is deterministic, eta = 1 is DDPM."""
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"DDIM eta must be between 0 (deterministic) and 1 (ancestral), got {eta}.")
    x = x_T
    for i, (t, s) in enumerate(_pairs(timesteps)):
        x0_hat, eps_hat = denoiser(x, t, cond)
        ab_t, ab_s = _alpha_bar(denoiser.schedule, t), _alpha_bar(denoiser.schedule, s)
        # eq. 16: std of the fresh noise; 0 on the last step (ab_s = 1), so it lands on x0_hat
        sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        # eq. 12: predicted x0, then the direction pointing to x_t with what is left of the noise budget
        x = ab_s**0.5 * x0_hat + max(1 - ab_s - sigma**2, 0.0) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def ddim_invert(denoiser, x_0, timesteps, *, cond=None, iters=20, tol=1e-6):
    """Inverse of deterministic DDIM (Song et al. 2021 eq. 13, sec. 4.3 "encoding"): x_0 -> x_T along the
    same steps. Each step solves the implicit DDIM step exactly, x~_t = x~_s + (sigma~_t - sigma~_s) eps_hat(x_t, t),
    by fixed-point iteration (at most `iters` network calls), so sample_ddim(ddim_invert(x)) == x to `tol`."""
    x_tilde = x_0  # x~ = x / alpha; alpha = 1 on clean data
    for t, s in reversed(_pairs(timesteps)):
        ab_t, ab_s = _alpha_bar(denoiser.schedule, t), _alpha_bar(denoiser.schedule, s)
        st_t, st_s = ((1 - ab_t) / ab_t) ** 0.5, ((1 - ab_s) / ab_s) ** 0.5  # sigma~ at both ends
        guess = x_tilde  # the naive inversion starts from "x_t = x_s" and evaluates eps_hat there
        for _ in range(iters):
            _, eps_hat = denoiser(ab_t**0.5 * guess, t, cond)
            new = x_tilde + (st_t - st_s) * eps_hat
            done = (new - guess).abs().max() <= tol * (1 + new.abs().max())
            guess = new
            if done:
                break
        x_tilde = guess
    return _alpha_bar(denoiser.schedule, int(timesteps[0])) ** 0.5 * x_tilde


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x_T, timesteps, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(2M), Lu et al. 2022 (arXiv:2211.01095) Algorithm 2: data prediction, multistep, in lambda."""
    als = lambda t: _alpha_sigma_lambda(denoiser.schedule, t)  # noqa: E731
    x, x0_prev, h_prev = x_T, None, None
    for i, (t, s) in enumerate(_pairs(timesteps)):
        x0_hat, _ = denoiser(x, t, cond)
        if s < 0:
            x = x0_hat  # lambda_s = +inf: the exponential integrator lands exactly on the data estimate
        else:
            (_, sigma_t, lambda_t), (alpha_s, sigma_s, lambda_s) = als(t), als(s)
            h = lambda_s - lambda_t
            D = x0_hat  # first step: DPM-Solver++(1) = DDIM
            if x0_prev is not None:  # linear extrapolation of x0_hat in lambda from the previous step
                r = h_prev / h
                D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev
            x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * D
            h_prev = h
        x0_prev = x0_hat
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(denoiser, x_T, timesteps, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(2M) SDE, Lu et al. 2022 (arXiv:2211.01095) sec. 5: the data-prediction SDE solved exactly
    with x0_hat held fixed over the step (the DDPM posterior step), plus 2M's multistep correction of x0_hat.
    Fresh noise each step corrects the network's errors as DDPM does, at DPM-Solver's step counts."""
    als = lambda t: _alpha_sigma_lambda(denoiser.schedule, t)  # noqa: E731
    x, x0_prev, h_prev = x_T, None, None
    for i, (t, s) in enumerate(_pairs(timesteps)):
        x0_hat, _ = denoiser(x, t, cond)
        if s < 0:
            x = x0_hat  # the last step adds no noise
        else:
            (_, sigma_t, lambda_t), (alpha_s, sigma_s, lambda_s) = als(t), als(s)
            h = lambda_s - lambda_t
            D = x0_hat
            if x0_prev is not None:  # as in 2M: x0_hat extrapolated linearly in lambda
                D = x0_hat + (x0_hat - x0_prev) * h / (2 * h_prev)
            keep = -math.expm1(-2 * h)  # 1 - e^(-2h): the share of x_s's variance that is fresh
            noise = torch.randn(x.shape, generator=generator).to(x.device)
            x = (sigma_s / sigma_t) * math.exp(-h) * x + alpha_s * keep * D + sigma_s * keep**0.5 * noise
            h_prev = h
        x0_prev = x0_hat
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_dpmpp_3m(denoiser, x_T, timesteps, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(3M), Lu et al. 2022 (arXiv:2211.01095): multistep, third order in lambda, data prediction.

    The exact solution in lambda with x0_hat Taylor-expanded to second order from the last three steps;
    1st and 2nd order for the first two steps.

    Their reference code weights D2 by phi_3; the exact integral for D2 ~ h^2/2 x0'' is 2 phi_3, which
    tests/test_samplers.py checks (third-order convergence on Gaussian data)."""
    als = lambda t: _alpha_sigma_lambda(denoiser.schedule, t)  # noqa: E731
    x, history = x_T, []  # (lambda, x0_hat) of the last two steps, most recent last
    for i, (t, s) in enumerate(_pairs(timesteps)):
        x0_hat, _ = denoiser(x, t, cond)
        if s < 0:
            x = x0_hat  # lambda_s = +inf: land on the data estimate
        else:
            (_, sigma_t, lambda_t), (alpha_s, sigma_s, lambda_s) = als(t), als(s)
            h = lambda_s - lambda_t
            phi_1 = math.expm1(-h)  # phi_k: integrals of e^(lambda - lambda_s) times the k-th Taylor term, over h^k
            phi_2 = phi_1 / h + 1
            phi_3 = phi_2 / h - 0.5
            x = (sigma_s / sigma_t) * x - alpha_s * phi_1 * x0_hat  # 1. x0_hat held constant: DDIM
            if history:  # 2. D1 ~ h dx0/dlambda, from divided differences of the previous x0_hat
                lambda_1, m_1 = history[-1]
                r_0 = (lambda_t - lambda_1) / h
                D1_0 = (x0_hat - m_1) / r_0
                D1, D2 = D1_0, 0.0
                if len(history) == 2:  # 3. D2 ~ h^2/2 d2x0/dlambda2, and D1 corrected to second order
                    lambda_2, m_2 = history[0]
                    r_1 = (lambda_1 - lambda_2) / h
                    D1_1 = (m_1 - m_2) / r_1
                    D1 = D1_0 + r_0 / (r_0 + r_1) * (D1_0 - D1_1)
                    D2 = (D1_0 - D1_1) / (r_0 + r_1)
                x = x + alpha_s * phi_2 * D1 - 2 * alpha_s * phi_3 * D2
            history = (history + [(lambda_t, x0_hat)])[-2:]
        _report(callback, i, t, x, x0_hat)
    return x


def _alpha_sigma_lambda(schedule, t: int) -> tuple[float, float, float]:
    """(alpha_t, sigma_t, lambda_t) for an integer step t >= 0, from the float64 tables."""
    ab = _alpha_bar(schedule, t)
    return ab**0.5, (1 - ab) ** 0.5, 0.5 * (math.log(ab) - math.log1p(-ab))


@torch.no_grad()
def sample_heun(denoiser, x_T, timesteps, *, cond=None, generator=None, callback=None):
    """Heun's 2nd-order method on the probability-flow ODE, Karras et al. 2022 Algorithm 1 (deterministic).

    The ODE dx~/dsigma~ = eps_hat runs on x~ = x / alpha over the given integer steps; the last step is Euler
    to sigma~ = 0, so K steps cost 2K - 1 network evaluations."""
    sched = denoiser.schedule
    alpha = lambda t: _alpha_bar(sched, t) ** 0.5  # noqa: E731
    sigma_tilde = lambda t: ((1 - _alpha_bar(sched, t)) / _alpha_bar(sched, t)) ** 0.5  # noqa: E731
    x_tilde = x_T / alpha(timesteps[0])  # the ODE runs on x~ = x0 + sigma~ eps; the net sees x = alpha x~
    for i, (t, s) in enumerate(_pairs(timesteps)):
        x0_hat, d = denoiser(alpha(t) * x_tilde, t, cond)  # d = (x~ - x0_hat) / sigma~ = eps_hat (eqs. 1, 3)
        dsigma = sigma_tilde(s) - sigma_tilde(t)
        x_next = x_tilde + dsigma * d  # 1. Euler step (Alg. 1 line 5)
        if s >= 0:  # 2. trapezoidal correction with the slope at the far end (lines 6-8)
            _, d_s = denoiser(alpha(s) * x_next, s, cond)
            x_next = x_tilde + dsigma * (d + d_s) / 2
        x_tilde = x_next
        _report(callback, i, t, alpha(s) * x_tilde, x0_hat)
    return x_tilde


@dataclass(frozen=True)
class SamplerEntry:
    """A registered sampler: the function, the SampleConfig fields it takes as options, and its network
    evaluations for a given number of time steps."""

    fn: Callable
    options: tuple[str, ...] = ()
    evaluations: Callable[[int], int] = lambda steps: steps


SAMPLERS = Registry("sampler", " (see `tinydiffusion list samplers`)")
SAMPLERS.add("ddpm", SamplerEntry(sample_ddpm, ("variance",)), "ancestral sampling, Ho et al. 2020 Algorithm 2")
SAMPLERS.add("ddim", SamplerEntry(sample_ddim, ("eta",)), "DDIM, Song et al. 2021: deterministic at eta = 0")
SAMPLERS.add("dpm++2m", SamplerEntry(sample_dpmpp_2m), "DPM-Solver++(2M), Lu et al. 2022: 2nd-order multistep ODE")
SAMPLERS.add("dpm++2m-sde", SamplerEntry(sample_dpmpp_2m_sde), "DPM-Solver++(2M) SDE: fresh noise every step")
SAMPLERS.add("dpm++3m", SamplerEntry(sample_dpmpp_3m), "DPM-Solver++(3M): 3rd-order multistep ODE")
SAMPLERS.add("heun", SamplerEntry(sample_heun, evaluations=lambda steps: 2 * steps - 1),
             "Heun's 2nd-order ODE method, Karras et al. 2022 Algorithm 1 (2 evaluations per step)")


def get_sampler(name: str):
    """The sampler function of a registered name."""
    return SAMPLERS.get(name).fn


def sampler_options(name: str, sample_cfg) -> dict:
    """The options a sampler declares, read from a SampleConfig (e.g. {"eta": 0.0} for ddim)."""
    return {k: getattr(sample_cfg, k) for k in SAMPLERS.get(name).options}


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations of `sampler` over `steps` time steps (heun: 2 per step, 1 on the last)."""
    return SAMPLERS.get(sampler).evaluations(steps)
