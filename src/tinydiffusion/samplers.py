"""Samplers: stateless functions sample_xxx(denoiser, x_T, timesteps, *, cond, generator, callback) -> x_0.

`timesteps` is a descending list of integer steps, e.g. [999, 998, ..., 0]; each sampler moves from
timesteps[i] to timesteps[i + 1] and from the last one to clean data (alpha_bar = 1). The callback, if given,
receives dict(i, t, x, x0_hat) after every step, so pictures hook in without editing samplers.
"""
from __future__ import annotations

import torch

from .errors import UserError
from .process import q_posterior_skip


def make_timesteps(T: int, steps: int, spacing: str = "uniform") -> list[int]:
    """`steps` descending integer steps in {0..T-1}. uniform: evenly from T-1 down to 0 (steps = T gives
    every step); trailing: T-1, T-1-T/steps, ... (Lin et al. 2024, table 2), the last one above 0."""
    if not 1 <= steps <= T:
        raise UserError(f"--steps must be between 1 and T={T}, got {steps}.")
    if spacing == "uniform":
        ts = torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long()
    elif spacing == "trailing":
        ts = (T - torch.arange(steps, dtype=torch.float64) * (T / steps)).round().long() - 1
    else:
        raise UserError(f"Unknown time-step spacing '{spacing}'; choose one of: {', '.join(SPACINGS)}.")
    return ts.tolist()


SPACINGS = ("uniform", "trailing")


@torch.no_grad()
def sample_ddpm(denoiser, x_T, timesteps, *, cond=None, generator=None, callback=None, variance="small"):
    """Ancestral sampling, Ho et al. 2020 Algorithm 2: x_s ~ q(x_s | x_t, x0_hat), sigma^2 = beta_tilde ("small")
    or beta ("large"); skipped steps use the posterior between any two steps (Nichol & Dhariwal 2021, sec. 4)."""
    if variance not in ("small", "large"):
        raise UserError(f"DDPM variance must be 'small' or 'large', got '{variance}'.")
    alpha_bar = denoiser.schedule.alpha_bar.tolist()
    x = x_T
    for i, t in enumerate(timesteps):
        x0_hat, _ = denoiser(x, t, cond)
        ab_s = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
        mean, var = q_posterior_skip(alpha_bar[t], ab_s, x0_hat, x)
        if variance == "large" and ab_s < 1.0:
            var = 1 - alpha_bar[t] / ab_s  # beta between the two steps
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = mean + var**0.5 * noise
        if callback is not None:
            callback(dict(i=i, t=t, x=x, x0_hat=x0_hat))
    return x


SAMPLERS = {"ddpm": sample_ddpm}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise UserError(f"Unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]
