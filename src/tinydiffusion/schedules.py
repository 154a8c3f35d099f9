"""Noise schedules: beta_t and every table derived from it, in float64.

Discrete time t is an integer in {0..T-1}; t = 0 is the least noisy step, alpha_bar[0] = 1 - beta[0].
paths.DiscretePath puts these tables on continuous time t in [0, 1] (0 = data, 1 = noise) at (t + 1) / T.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from .errors import UserError
from .registry import Registry


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear schedule, Ho et al. 2020 sec. 4: beta from 1e-4 to 0.02 for T = 1000, scaled by 1000/T for other T
    so the chain still ends near pure noise (Nichol & Dhariwal 2021, sec. 3.2); clipped at 0.999 for tiny T."""
    scale = 1000.0 / T
    return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(T: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule, Nichol & Dhariwal 2021 eq. 17: alpha_bar(t) = f(t)/f(0), f = cos^2((t/T + o)/(1 + o) * pi/2),
    with the paper's offset o = s = 0.008 so that beta near t = 0 is not too small."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    alpha_bar = f / f[0]  # (T+1,), alpha_bar at the boundaries 0, 1/T, ..., 1
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


SCHEDULES = Registry("schedule")
SCHEDULES.add("linear", linear_betas)
SCHEDULES.add("cosine", cosine_betas)


@dataclass(frozen=True, eq=False)
class Schedule:
    """All DDPM tables (Ho et al. 2020, eqs. 4, 6, 7), float64, each of shape (T,)."""

    betas: torch.Tensor

    def __post_init__(self):
        b = self.betas.to(torch.float64)
        if b.ndim != 1 or not bool(((b > 0) & (b < 1)).all()):
            raise UserError("A noise schedule needs 1-D betas strictly between 0 and 1.")
        object.__setattr__(self, "betas", b)

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    @cached_property
    def alphas(self) -> torch.Tensor:
        return 1 - self.betas

    @cached_property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, dim=0)

    @cached_property
    def alpha_bar_prev(self) -> torch.Tensor:
        """alpha_bar_{t-1}, with alpha_bar_{-1} = 1."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])

    @cached_property
    def sqrt_alpha_bar(self) -> torch.Tensor:
        return self.alpha_bar.sqrt()

    @cached_property
    def sqrt_one_minus_alpha_bar(self) -> torch.Tensor:
        return (1 - self.alpha_bar).sqrt()

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), eq. 7."""
        return self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @cached_property
    def posterior_mean_coef1(self) -> torch.Tensor:
        """Coefficient of x0 in mu_tilde_t(x_t, x0), eq. 7."""
        return self.alpha_bar_prev.sqrt() * self.betas / (1 - self.alpha_bar)

    @cached_property
    def posterior_mean_coef2(self) -> torch.Tensor:
        """Coefficient of x_t in mu_tilde_t(x_t, x0), eq. 7."""
        return self.alphas.sqrt() * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @cached_property
    def log_snr(self) -> torch.Tensor:
        """lambda_t = log(alpha_bar_t / (1 - alpha_bar_t))."""
        return torch.log(self.alpha_bar) - torch.log1p(-self.alpha_bar)


def make_schedule(name: str, T: int = 1000) -> Schedule:
    """The named schedule with T steps."""
    betas = SCHEDULES.get(name)
    if T < 2:
        raise UserError(f"A schedule needs at least 2 steps, got T={T}.")
    return Schedule(betas(T))


def gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[t] cast to like's dtype/device and shaped to broadcast: (B,) -> (B, 1, 1, 1)."""
    out = table.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))
