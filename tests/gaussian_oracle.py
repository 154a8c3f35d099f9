"""The exact denoiser of Gaussian data, as a network: samplers can be checked against closed forms, no training.

Data x0 ~ N(mu, diag(std^2)) and x_t = alpha x0 + sigma eps give (per dimension)
    E[x0 | x_t] = mu + alpha std^2 / (alpha^2 std^2 + sigma^2) (x_t - alpha mu),
and the probability-flow ODE in x~ = x / alpha, sigma~ = sigma / alpha has the closed-form solution
    x~(sigma~) - mu = (x~(sigma~_T) - mu) sqrt(std^2 + sigma~^2) / sqrt(std^2 + sigma~_T^2).
"""
from __future__ import annotations

import torch

from tinydiffusion.denoiser import Denoiser
from tinydiffusion.schedules import Schedule, make_schedule


class GaussianOracle(torch.nn.Module):
    """net(x, t, cond) -> the eps, x0 or v implied by E[x0 | x_t] for x0 ~ N(mu, diag(std^2)).

    mu and std are shaped like one example (e.g. (1, 2, 2)); t is continuous time (k + 1) / T for the integer
    step k, as the Denoiser passes it. The closed form is evaluated in float64 and returned in x's dtype.
    """

    def __init__(self, schedule: Schedule, mu: torch.Tensor, std: torch.Tensor, prediction: str = "eps"):
        super().__init__()
        self.schedule, self.prediction = schedule, prediction
        self.mu, self.std = mu.to(torch.float64), std.to(torch.float64)
        self.calls = 0  # network evaluations, for NFE checks

    def alpha_sigma(self, t: torch.Tensor):
        k = (t.to(torch.float64) * self.schedule.T - 1).round().long()  # invert t = (k + 1) / T
        alpha_bar = self.schedule.alpha_bar[k].reshape(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        self.calls += 1
        alpha, sigma = self.alpha_sigma(t)
        x64 = x.to(torch.float64)
        var = self.std**2
        x0 = self.mu + alpha * var / (alpha**2 * var + sigma**2) * (x64 - alpha * self.mu)
        eps = (x64 - alpha * x0) / sigma
        out = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[self.prediction]
        return out.to(x.dtype)


def sigma_tilde(schedule: Schedule, t: int) -> float:
    """sigma~_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), 0 for clean data (t = -1)."""
    if t < 0:
        return 0.0
    ab = float(schedule.alpha_bar[t])
    return ((1 - ab) / ab) ** 0.5


def ode_solution(schedule: Schedule, mu, std, x_T: torch.Tensor, t_from: int, t_to: int) -> torch.Tensor:
    """The exact probability-flow ODE map from x at step t_from to x at step t_to (t_to = -1: clean data)."""
    ab_from = float(schedule.alpha_bar[t_from])
    ab_to = 1.0 if t_to < 0 else float(schedule.alpha_bar[t_to])
    s_from, s_to = sigma_tilde(schedule, t_from), sigma_tilde(schedule, t_to)
    mu, var = mu.to(torch.float64), std.to(torch.float64) ** 2
    x_tilde = x_T.to(torch.float64) / ab_from**0.5
    x_tilde = mu + (x_tilde - mu) * ((var + s_to**2) / (var + s_from**2)).sqrt()
    return ab_to**0.5 * x_tilde


# The Gaussian the sampler tests use: one example of shape (C, H, W) = (1, 2, 2) under the linear schedule.
LINEAR = make_schedule("linear", 1000)
MU = torch.tensor([0.5, -0.3, 0.2, -0.6]).reshape(1, 2, 2)
STD = torch.tensor([0.5, 0.7, 1.0, 0.8]).reshape(1, 2, 2)


def denoiser(prediction="eps", schedule=LINEAR):
    """The Denoiser of the exact Gaussian network, unclipped."""
    return Denoiser(GaussianOracle(schedule, MU, STD, prediction), schedule, prediction, clip_x0=False)


def noise(n, seed=0):
    """n draws of x_T ~ N(0, I) shaped like one example."""
    return torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
