"""Samplers: stateless functions sample_xxx(denoiser, x_T, grid, *, cond, generator, callback) -> x_0, on any path.

`grid` is a strictly descending list of times in [0, 1] ending at 0 (timesteps.time_grid), e.g. [1, 0.9, ..., 0]
or a DDPM table's [1.0, 0.999, ..., 0.001, 0]; each sampler moves from grid[i] to grid[i + 1]. The callback, if
given, receives dict(i, t, x, x0_hat) after every step, where x is the state at time grid[i + 1] (x_0 after the
last), so pictures hook in without editing samplers.

Each sampler is a loop around a pure one-step update `xxx_step(path, x, x0_hat, eps_hat, t, s, ...) -> x_s`
(multistep methods also take what they remember), which a distiller can call for one teacher step.

Notation: alpha_t, sigma_t of the path (paths.py), lambda_t = log(alpha_t / sigma_t) (half the log-SNR, Lu et al.
2022), and the Karras noise level sigma~_t = sigma_t / alpha_t of x / alpha. One network evaluation per step,
except heun: 2 per step and 1 on the last, 2K - 1 in all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import UserError
from .process import q_posterior, transition
from .registry import Registry


def _pairs(grid) -> list[tuple[float, float]]:
    """[(t, s)] for each step t -> s."""
    grid = [float(t) for t in grid]
    return list(zip(grid[:-1], grid[1:]))


def _ats(path, t: float) -> tuple[float, float]:
    """(alpha_t, sigma_t) as Python floats, from the path's float64."""
    alpha, sigma = path.alpha_sigma(t)
    return float(alpha), float(sigma)


def _lam(path, t: float) -> float:
    return float(path.lam(t))


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator).to(x.device)


def _report(callback, i, t, x, x0_hat):
    if callback is not None:
        callback(dict(i=i, t=t, x=x, x0_hat=x0_hat))


# ------------------------------------------------------------------------------------------ one-step updates
def ddpm_step(path, x, x0_hat, t, s, noise, variance="small"):
    """x_s ~ q(x_s | x_t, x0_hat) (Ho et al. 2020 Algorithm 2, between any two times as Nichol & Dhariwal 2021,
    sec. 4), variance sigma_tilde^2 ("small") or the forward step's sigma_{t|s}^2 ("large", DDPM's beta)."""
    mean, var = q_posterior(path, t, s, x0_hat, x)
    if variance == "large" and s > 0:
        var = transition(path, t, s)[1]
    return mean + var**0.5 * noise


def ddim_step(path, x, x0_hat, eps_hat, t, s, eta=0.0, noise=None):
    """DDIM, Song et al. 2021 eq. 12 on any path: x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z with
    c = eta sigma_tilde (eq. 16): eta = 0 is deterministic (Euler in sigma~ on x / alpha), eta = 1 is DDPM."""
    alpha_s, _ = _ats(path, s)
    s2_s = float(path.squares(s)[1])
    c = 0.0
    if eta > 0:
        c = eta * (s2_s / float(path.squares(t)[1]) * transition(path, t, s)[1]) ** 0.5
    x_s = alpha_s * x0_hat + max(s2_s - c**2, 0.0) ** 0.5 * eps_hat
    return x_s + c * noise if c > 0 else x_s


def velocity(path, x0_hat, eps_hat, t):
    """u_hat = alpha'(t) x0_hat + sigma'(t) eps_hat, the probability-flow ODE's dx/dt at t."""
    d_alpha, d_sigma = (float(v) for v in path.derivatives(t))
    return d_alpha * x0_hat + d_sigma * eps_hat


def euler_step(path, x, x0_hat, eps_hat, t, s):
    """One Euler step of the probability-flow ODE in t: x_s = x_t + (s - t) u_hat. On the flow path this is
    exactly the DDIM step (the path is a straight line)."""
    return x + (s - t) * velocity(path, x0_hat, eps_hat, t)


def ode_coordinates(path, t: float) -> tuple[float, float]:
    """(scale, tau) of the probability-flow ODE in the path's `ode_variable`, with state y = x / scale:
    sigma~ (DDPM tables, Karras et al. 2022 eq. 4): y = x / alpha, tau = sigma / alpha, dy/dtau = eps_hat;
    t (continuous paths, which start at pure noise where sigma~ is infinite): y = x, tau = t, dy/dtau = u_hat."""
    if path.ode_variable == "sigma_tilde":
        a2, s2 = (float(v) for v in path.squares(t))
        return a2**0.5, (s2 / a2) ** 0.5
    return 1.0, t


def ode_slope(path, x0_hat, eps_hat, t):
    """dy/dtau at t in the coordinates of `ode_coordinates`."""
    return eps_hat if path.ode_variable == "sigma_tilde" else velocity(path, x0_hat, eps_hat, t)


def heun_step(path, x, at_t, at_s, t, s):
    """Heun's correction (Karras et al. 2022 Algorithm 1, lines 6-8) as a pure update: x_t moved by the mean of the
    ODE slopes at t and at the Euler prediction at s, each given as (x0_hat, eps_hat)."""
    (scale_t, tau_t), (scale_s, tau_s) = ode_coordinates(path, t), ode_coordinates(path, s)
    d_t, d_s = ode_slope(path, *at_t, t), ode_slope(path, *at_s, s)
    return scale_s * (x / scale_t + (tau_s - tau_t) * (d_t + d_s) / 2)


def dpmpp_2m_step(path, x, x0_hat, t, s, prev=None):
    """DPM-Solver++(2M), Lu et al. 2022 (arXiv:2211.01095) Algorithm 2, one step in lambda: x_s = (sigma_s /
    sigma_t) x - alpha_s (e^-h - 1) D with D = x0_hat extrapolated linearly in lambda from prev = (lambda, x0_hat)
    of the previous step (none: DPM-Solver++(1) = DDIM)."""
    if s == 0:
        return x0_hat  # lambda_s = +inf: the exponential integrator lands exactly on the data estimate
    (_, sigma_t), (alpha_s, sigma_s) = _ats(path, t), _ats(path, s)
    lambda_t, lambda_s = _lam(path, t), _lam(path, s)
    h = lambda_s - lambda_t
    D = x0_hat
    if prev is not None:
        r = (lambda_t - prev[0]) / h
        D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * prev[1]
    return (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * D


def dpmpp_2m_sde_step(path, x, x0_hat, t, s, noise, prev=None):
    """DPM-Solver++(2M) SDE, Lu et al. 2022 sec. 5: the data-prediction SDE solved exactly with x0_hat held over
    the step (the DDPM posterior step), plus 2M's multistep correction of x0_hat."""
    if s == 0:
        return x0_hat  # the last step adds no noise
    (_, sigma_t), (alpha_s, sigma_s) = _ats(path, t), _ats(path, s)
    lambda_t, lambda_s = _lam(path, t), _lam(path, s)
    h = lambda_s - lambda_t
    D = x0_hat
    if prev is not None:  # as in 2M: x0_hat extrapolated linearly in lambda
        D = x0_hat + (x0_hat - prev[1]) * h / (2 * (lambda_t - prev[0]))
    keep = -math.expm1(-2 * h)  # 1 - e^(-2h): the share of x_s's variance that is fresh
    return (sigma_s / sigma_t) * math.exp(-h) * x + alpha_s * keep * D + sigma_s * keep**0.5 * noise


def dpmpp_3m_step(path, x, x0_hat, t, s, history=()):
    """DPM-Solver++(3M), Lu et al. 2022: the exact solution in lambda with x0_hat Taylor-expanded to second order
    from `history`, the (lambda, x0_hat) of up to two previous steps, most recent last (fewer: 1st/2nd order).

    Their reference code weights D2 by phi_3; the exact integral for D2 ~ h^2/2 x0'' is 2 phi_3, which
    tests/test_samplers.py checks (third-order convergence on Gaussian data)."""
    if s == 0:
        return x0_hat  # lambda_s = +inf: land on the data estimate
    (_, sigma_t), (alpha_s, sigma_s) = _ats(path, t), _ats(path, s)
    lambda_t, lambda_s = _lam(path, t), _lam(path, s)
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
    return x


# ------------------------------------------------------------------------------------------------ samplers
@torch.no_grad()
def sample_ddpm(denoiser, x_T, grid, *, cond=None, generator=None, callback=None, variance="small"):
    """Ancestral sampling, Ho et al. 2020 Algorithm 2, on any path (the Gaussian posterior between two times)."""
    if variance not in ("small", "large"):
        raise UserError(f"DDPM variance must be 'small' or 'large', got '{variance}'.")
    x = x_T
    for i, (t, s) in enumerate(_pairs(grid)):
        x0_hat, _ = denoiser(x, t, cond)
        x = ddpm_step(denoiser.path, x, x0_hat, t, s, _noise(x, generator), variance)
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_ddim(denoiser, x_T, grid, *, cond=None, generator=None, callback=None, eta=0.0):
    """DDIM, Song et al. 2021 eq. 12 with sigma_t(eta) of eq. 16: eta = 0 is deterministic, eta = 1 is DDPM."""
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"DDIM eta must be between 0 (deterministic) and 1 (ancestral), got {eta}.")
    x = x_T
    for i, (t, s) in enumerate(_pairs(grid)):
        x0_hat, eps_hat = denoiser(x, t, cond)
        x = ddim_step(denoiser.path, x, x0_hat, eps_hat, t, s, eta, _noise(x, generator) if eta > 0 else None)
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_euler(denoiser, x_T, grid, *, cond=None, generator=None, callback=None):
    """Euler on the velocity ODE dx/dt = u (Lipman et al. 2023; the sampler of rectified flow and SD3)."""
    x = x_T
    for i, (t, s) in enumerate(_pairs(grid)):
        x0_hat, eps_hat = denoiser(x, t, cond)
        x = euler_step(denoiser.path, x, x0_hat, eps_hat, t, s)
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def ddim_invert(denoiser, x_0, grid, *, cond=None, iters=20, tol=1e-6):
    """Inverse of deterministic DDIM (Song et al. 2021 eq. 13, sec. 4.3 "encoding"): x_0 -> x_T along the same
    grid. Each step solves the implicit DDIM step x_t = alpha_t x0 + sigma_t eps_hat(x_t, t), with x0 = (x_s -
    sigma_s eps_hat) / alpha_s, by fixed-point iteration (at most `iters` network calls per step), so
    sample_ddim(ddim_invert(x)) == x to `tol`."""
    path, x = denoiser.path, x_0
    for t, s in reversed(_pairs(grid)):
        (alpha_t, sigma_t), (alpha_s, sigma_s) = _ats(path, t), _ats(path, s)
        guess = x  # the naive inversion starts from "x_t = x_s" and evaluates eps_hat there
        for _ in range(iters):
            _, eps_hat = denoiser(guess, t, cond)
            new = alpha_t * (x - sigma_s * eps_hat) / alpha_s + sigma_t * eps_hat
            done = (new - guess).abs().max() <= tol * (1 + new.abs().max())
            guess = new
            if done:
                break
        x = guess
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x_T, grid, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2: data prediction, multistep, in lambda."""
    x, prev = x_T, None
    for i, (t, s) in enumerate(_pairs(grid)):
        x0_hat, _ = denoiser(x, t, cond)
        x = dpmpp_2m_step(denoiser.path, x, x0_hat, t, s, prev)
        prev = (_lam(denoiser.path, t), x0_hat)
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(denoiser, x_T, grid, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(2M) SDE: fresh noise each step corrects the network's errors as DDPM does, at DPM-Solver's
    step counts."""
    x, prev = x_T, None
    for i, (t, s) in enumerate(_pairs(grid)):
        x0_hat, _ = denoiser(x, t, cond)
        x = dpmpp_2m_sde_step(denoiser.path, x, x0_hat, t, s, _noise(x, generator) if s > 0 else None, prev)
        prev = (_lam(denoiser.path, t), x0_hat)
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_dpmpp_3m(denoiser, x_T, grid, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(3M), Lu et al. 2022: multistep, third order in lambda, data prediction."""
    x, history = x_T, []
    for i, (t, s) in enumerate(_pairs(grid)):
        x0_hat, _ = denoiser(x, t, cond)
        x = dpmpp_3m_step(denoiser.path, x, x0_hat, t, s, history)
        history = (history + [(_lam(denoiser.path, t), x0_hat)])[-2:]
        _report(callback, i, t, x, x0_hat)
    return x


@torch.no_grad()
def sample_heun(denoiser, x_T, grid, *, cond=None, generator=None, callback=None):
    """Heun's 2nd-order method on the probability-flow ODE, Karras et al. 2022 Algorithm 1 (deterministic): an
    Euler step, then the trapezoidal correction with the slope at the far end; the last step is Euler, so K steps
    cost 2K - 1 network evaluations. It runs in the path's ODE coordinates (`ode_coordinates`): sigma~ on x / alpha
    on DDPM tables, t on x on continuous paths; the state y stays in those coordinates between steps."""
    path = denoiser.path
    y = x_T / ode_coordinates(path, grid[0])[0]
    for i, (t, s) in enumerate(_pairs(grid)):
        (scale_t, tau_t), (scale_s, tau_s) = ode_coordinates(path, t), ode_coordinates(path, s)
        x0_hat, eps_hat = denoiser(scale_t * y, t, cond)
        d = ode_slope(path, x0_hat, eps_hat, t)
        y_next = y + (tau_s - tau_t) * d  # 1. Euler step (Alg. 1 line 5)
        if s > 0:  # 2. trapezoidal correction with the slope at the far end (lines 6-8)
            d_s = ode_slope(path, *denoiser(scale_s * y_next, s, cond), s)
            y_next = y + (tau_s - tau_t) * (d + d_s) / 2
        y = y_next
        _report(callback, i, t, scale_s * y, x0_hat)
    return ode_coordinates(path, 0.0)[0] * y  # scale 1 at clean data


@torch.no_grad()
def sample_consistency(denoiser, x_T, grid, *, cond=None, generator=None, callback=None):
    """Multistep consistency sampling, Song et al. 2023 Algorithm 1: x0 = f(x, t) at each grid time, then fresh
    noise back to the next time, x_s = alpha_s x0 + sigma_s z; the last step returns f. One network evaluation
    per step (1 step = 1 NFE). The denoiser's x0_hat is f for a consistency prediction (cm-*)."""
    x = x_T
    for i, (t, s) in enumerate(_pairs(grid)):
        x0_hat, _ = denoiser(x, t, cond)
        if s > 0:
            alpha_s, sigma_s = _ats(denoiser.path, s)
            x = alpha_s * x0_hat + sigma_s * _noise(x, generator)
        else:
            x = x0_hat
        _report(callback, i, t, x, x0_hat)
    return x


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
SAMPLERS.add("euler", SamplerEntry(sample_euler), "Euler on the velocity dx/dt = u (flow matching, SD3); = DDIM on flow")
SAMPLERS.add("dpm++2m", SamplerEntry(sample_dpmpp_2m), "DPM-Solver++(2M), Lu et al. 2022: 2nd-order multistep ODE")
SAMPLERS.add("dpm++2m-sde", SamplerEntry(sample_dpmpp_2m_sde), "DPM-Solver++(2M) SDE: fresh noise every step")
SAMPLERS.add("dpm++3m", SamplerEntry(sample_dpmpp_3m), "DPM-Solver++(3M): 3rd-order multistep ODE")
SAMPLERS.add("heun", SamplerEntry(sample_heun, evaluations=lambda steps: 2 * steps - 1),
             "Heun's 2nd-order ODE method, Karras et al. 2022 Algorithm 1 (2 evaluations per step)")

SAMPLERS.add("consistency", SamplerEntry(sample_consistency),
             "multistep consistency sampling, Song et al. 2023 Algorithm 1 (for distilled cm-* runs)")


def get_sampler(name: str):
    """The sampler function of a registered name."""
    return SAMPLERS.get(name).fn


def sampler_options(name: str, sample_cfg) -> dict:
    """The options a sampler declares, read from a SampleConfig (e.g. {"eta": 0.0} for ddim)."""
    return {k: getattr(sample_cfg, k) for k in SAMPLERS.get(name).options}


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations of `sampler` over `steps` time steps (heun: 2 per step, 1 on the last)."""
    return SAMPLERS.get(sampler).evaluations(steps)
