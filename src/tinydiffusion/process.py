"""The forward process x_t = alpha_t x0 + sigma_t eps on any path, and the exact conversions between the four
things a network can predict: eps, x0, v = alpha eps - sigma x0, and the velocity u = alpha' x0 + sigma' eps.

For DDPM, alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t) (Ho et al. 2020, eq. 4); for rectified
flow alpha = 1 - t, sigma = t and u = eps - x0 (paths.py).
"""
from __future__ import annotations

import torch

from .paths import Path, broadcast, coefficients


def q_sample(path: Path, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    """Sample q(x_t | x0) in closed form: x_t = alpha(t) x0 + sigma(t) eps; t a float or (B,) times."""
    alpha, sigma = coefficients(path, t, x0)
    return alpha * x0 + sigma * noise


def x0_from_eps(x_t, eps, alpha, sigma):
    """x0 = (x_t - sigma eps) / alpha."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    """eps = (x_t - alpha x0) / sigma."""
    return (x_t - alpha * x0) / sigma


def v_from_x0_eps(x0, eps, alpha, sigma):
    """v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4)."""
    return alpha * eps - sigma * x0


def x0_eps_from_v(x_t, v, alpha, sigma):
    """Invert v: x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2), eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2);
    on a variance-preserving path the denominator is 1. Pass float64 alpha, sigma: the coefficients are formed in
    float64 and cast to x_t's dtype once."""
    norm = alpha**2 + sigma**2
    a, s = (broadcast(c, x_t) for c in (alpha / norm, sigma / norm))
    return a * x_t - s * v, s * x_t + a * v


def u_from_x0_eps(x0, eps, d_alpha, d_sigma):
    """The velocity u = dx_t/dt = alpha'(t) x0 + sigma'(t) eps (rectified flow: eps - x0)."""
    return d_alpha * x0 + d_sigma * eps


def x0_eps_from_u(x_t, u, alpha, sigma, d_alpha, d_sigma):
    """Invert u: solve [alpha sigma; alpha' sigma'] [x0; eps] = [x_t; u] (float64 coefficients, cast once).
    Rectified flow: x0 = x_t - t u, eps = x_t + (1 - t) u."""
    det = alpha * d_sigma - sigma * d_alpha
    c = [broadcast(v, x_t) for v in (d_sigma / det, sigma / det, d_alpha / det, alpha / det)]
    return c[0] * x_t - c[1] * u, c[3] * u - c[2] * x_t


def transition(path: Path, t: float, s: float) -> tuple[float, float]:
    """(alpha_{t|s}, sigma_{t|s}^2) of q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I) for s < t (Kingma et al.
    2021, eq. 24). On a VP path sigma_{t|s}^2 = beta = 1 - alpha_bar_t / alpha_bar_s, computed that way so DDPM
    runs sample bit-identically to the tables."""
    (a2_t, s2_t), (a2_s, s2_s) = (tuple(float(v) for v in path.squares(u)) for u in (t, s))
    ratio = a2_t / a2_s  # alpha_{t|s}^2
    if path.variance_preserving:
        beta = 1 - ratio
        return (1 - beta) ** 0.5, beta
    return ratio**0.5, s2_t - ratio * s2_s


def q_posterior(path: Path, t: float, s: float, x0: torch.Tensor, x_t: torch.Tensor):
    """Mean and variance of q(x_s | x_t, x0) for any s < t (Ho et al. 2020 eqs. 6-7 between any two times; Kingma
    et al. 2021 eq. 27): mean = alpha_s sigma_{t|s}^2 / sigma_t^2 x0 + alpha_{t|s} sigma_s^2 / sigma_t^2 x_t,
    variance = sigma_{t|s}^2 sigma_s^2 / sigma_t^2. At s = 0 (clean data) the mean is x0 and the variance 0, so the
    last step of a sampler adds no noise."""
    (a2_s, s2_s), (_, s2_t) = (tuple(float(v) for v in path.squares(u)) for u in (s, t))
    alpha_ts, var_ts = transition(path, t, s)
    coef_x0 = a2_s**0.5 * var_ts / s2_t
    coef_xt = alpha_ts * s2_s / s2_t
    return coef_x0 * x0 + coef_xt * x_t, var_ts * s2_s / s2_t
