"""The forward process x_t = alpha_t x0 + sigma_t eps and the exact conversions between x0, eps and v.

For DDPM, alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t) (Ho et al. 2020, eq. 4).
"""
from __future__ import annotations

import torch

from .schedules import Schedule, gather


def alpha_sigma(schedule: Schedule, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) for integer steps t of shape (B,), broadcastable to like: (B, 1, 1, 1)."""
    return gather(schedule.sqrt_alpha_bar, t, like), gather(schedule.sqrt_one_minus_alpha_bar, t, like)


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Sample q(x_t | x0) in closed form: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
    alpha, sigma = alpha_sigma(schedule, t, x0)
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
    """Invert v for a variance-preserving path (alpha^2 + sigma^2 = 1): x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v."""
    return alpha * x_t - sigma * v, sigma * x_t + alpha * v


def q_posterior(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean and variance of q(x_{t-1} | x_t, x0), Ho et al. 2020 eqs. 6-7, from the schedule's tables."""
    mean = gather(schedule.posterior_mean_coef1, t, x_t) * x0 + gather(schedule.posterior_mean_coef2, t, x_t) * x_t
    return mean, gather(schedule.posterior_variance, t, x_t)


def q_posterior_skip(alpha_bar_t: float, alpha_bar_s: float, x0: torch.Tensor, x_t: torch.Tensor):
    """Mean and variance of q(x_s | x_t, x0) for any s < t (eq. 7 with beta = 1 - alpha_bar_t / alpha_bar_s).

    With s = t - 1 this is `q_posterior`; with alpha_bar_s = 1 (s = -1, clean data) the mean is x0 and the
    variance 0, so the last step of a sampler adds no noise.
    """
    beta = 1 - alpha_bar_t / alpha_bar_s
    coef_x0 = alpha_bar_s**0.5 * beta / (1 - alpha_bar_t)
    coef_xt = (1 - beta) ** 0.5 * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    return coef_x0 * x0 + coef_xt * x_t, beta * (1 - alpha_bar_s) / (1 - alpha_bar_t)
