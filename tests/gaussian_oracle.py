"""The exact denoiser of Gaussian data, as a network: samplers can be checked against closed forms, no training.

Data x0 ~ N(mu, diag(std^2)) and x_t = alpha x0 + sigma eps give (per dimension)
    E[x0 | x_t] = mu + alpha std^2 / (alpha^2 std^2 + sigma^2) (x_t - alpha mu),
and the probability-flow ODE keeps z = (x_t - alpha_t mu) / sqrt(alpha_t^2 std^2 + sigma_t^2) fixed, on any path:
    x(t) = alpha(t) mu + sqrt(alpha(t)^2 std^2 + sigma(t)^2) z.
(In x~ = x / alpha, sigma~ = sigma / alpha this is x~ - mu = (x~_T - mu) sqrt(std^2 + sigma~^2) / sqrt(std^2 + sigma~_T^2).)
"""
from __future__ import annotations

import torch

from tinydiffusion.denoiser import Denoiser
from tinydiffusion.paths import make_path


class GaussianOracle(torch.nn.Module):
    """net(x, t, cond) -> the eps, x0, v or u implied by E[x0 | x_t] for x0 ~ N(mu, diag(std^2)) on `path`.

    mu and std are shaped like one example (e.g. (1, 2, 2)); t is continuous time as the Denoiser passes it
    (float32; on a DDPM path snapped back to its knot j / T). The closed form is evaluated in float64 and returned
    in x's dtype.
    """

    def __init__(self, path, mu: torch.Tensor, std: torch.Tensor, prediction: str = "eps"):
        super().__init__()
        self.path, self.prediction = path, prediction
        self.mu, self.std = mu.to(torch.float64), std.to(torch.float64)
        self.calls = 0  # network evaluations, for NFE checks

    def times(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        return (t * self.path.T).round() / self.path.T if self.path.T else t

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        self.calls += 1
        t = self.times(t)
        alpha, sigma = (v.reshape(-1, 1, 1, 1) for v in self.path.alpha_sigma(t))  # (B,) -> (B, 1, 1, 1)
        x64 = x.to(torch.float64)
        var = self.std**2
        x0 = self.mu + alpha * var / (alpha**2 * var + sigma**2) * (x64 - alpha * self.mu)
        eps = (x64 - alpha * x0) / sigma
        if self.prediction == "u":
            d_alpha, d_sigma = (v.reshape(-1, 1, 1, 1) for v in self.path.derivatives(t))
            return (d_alpha * x0 + d_sigma * eps).to(x.dtype)
        out = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[self.prediction]
        return out.to(x.dtype)


def ode_solution(path, mu, std, x_from: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
    """The exact probability-flow ODE map from x at time t_from to x at time t_to (0: clean data), float64."""
    (a_f, s_f), (a_t, s_t) = (tuple(float(v) for v in path.alpha_sigma(u)) for u in (t_from, t_to))
    mu, var = mu.to(torch.float64), std.to(torch.float64) ** 2
    z = (x_from.to(torch.float64) - a_f * mu) / (a_f**2 * var + s_f**2).sqrt()
    return a_t * mu + (a_t**2 * var + s_t**2).sqrt() * z


# The Gaussian the sampler tests use: one example of shape (C, H, W) = (1, 2, 2), by default on the DDPM linear path.
LINEAR = make_path("ddpm-linear", 1000)
FLOW = make_path("flow")
MU = torch.tensor([0.5, -0.3, 0.2, -0.6]).reshape(1, 2, 2)
STD = torch.tensor([0.5, 0.7, 1.0, 0.8]).reshape(1, 2, 2)


def denoiser(prediction="eps", path=LINEAR):
    """The Denoiser of the exact Gaussian network, unclipped."""
    return Denoiser(GaussianOracle(path, MU, STD, prediction), path, prediction, clip_x0=False)


def noise(n, seed=0):
    """n draws of x_T ~ N(0, I) shaped like one example."""
    return torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
