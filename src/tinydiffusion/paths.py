"""Continuous-time paths x_t = alpha(t) x0 + sigma(t) eps, t in [0, 1] with **0 = data, 1 = noise**.

A path is everything the samplers and the loss need to know about the forward process: alpha(t), sigma(t), their
time derivatives (the velocity u = dx_t/dt = alpha'(t) x0 + sigma'(t) eps), and the half log-SNR
lambda(t) = log(alpha / sigma) with its inverse (DPM-Solver steps in lambda). All in float64; cast at the point
of use.

| path         | alpha(t)                        | sigma(t)            | variance preserving |
|--------------|---------------------------------|---------------------|---------------------|
| ddpm-linear  | sqrt(alpha_bar) of the table    | sqrt(1 - alpha_bar) | yes                 |
| ddpm-cosine  | the same, cosine betas          |                     | yes                 |
| vp-cosine    | cos(pi t / 2)                   | sin(pi t / 2)       | yes                 |
| flow         | 1 - t                           | t                   | no (rectified flow) |

The DDPM paths are the discrete tables (schedules.py) at their training grid t_k = (k + 1) / T, with t = 0 the
clean data (alpha_bar_{-1} = 1), exactly the numbers the package used before paths existed, so old runs sample
to the same images; between the knots log(alpha_bar) is interpolated linearly in t.

The other convention. facebookresearch/flow_matching and torchcfm put NOISE at t = 0 and DATA at t = 1
(x_t = t x1 + (1 - t) x0 with x0 the noise) and regress the velocity x1 - x0 = data - noise. Here t_here =
1 - t_theirs, so their velocity is minus ours: u_theirs(x, t) = -u_here(x, 1 - t). A borrowed formula needs that
one conversion.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .registry import Registry
from .schedules import Schedule, make_schedule

F64 = torch.float64


def _t(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=F64)


class Path:
    """alpha(t), sigma(t) for t in [0, 1]; subclasses define `squares` (alpha^2, sigma^2) or `alpha_sigma`."""

    name = "path"
    variance_preserving = True
    T: int | None = None  # discrete paths: the training grid t_k = (k + 1) / T
    ode_variable = "t"  # the variable Heun integrates in (see samplers.sample_heun)

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        a2, s2 = self.squares(t)
        return a2.sqrt(), s2.sqrt()

    def squares(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, sigma = self.alpha_sigma(t)
        return alpha**2, sigma**2

    def derivatives(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha'(t), sigma'(t))."""
        raise NotImplementedError

    def lam(self, t) -> torch.Tensor:
        """lambda(t) = log(alpha / sigma): +inf at t = 0, decreasing; -inf where alpha = 0."""
        a2, s2 = self.squares(t)
        return 0.5 * (torch.log(a2) - torch.log(s2))

    def t_of_lambda(self, lam) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self):
        return f"Path({self.name})"


class DiscretePath(Path):
    """A DDPM table as a path: alpha_bar at the knots t_j = j / T (j = 0 is clean data, alpha_bar = 1) and
    log(alpha_bar) linear in t between them (so alpha'(t), sigma'(t) are piecewise smooth)."""

    ode_variable = "sigma_tilde"  # a finite range of sigma / alpha, as in Karras et al. 2022

    def __init__(self, schedule: Schedule, name: str):
        self.schedule, self.name, self.T = schedule, name, schedule.T
        self.alpha_bar = torch.cat([torch.ones(1, dtype=F64), schedule.alpha_bar])  # (T+1,) at t = j / T
        self.log_alpha_bar = self.alpha_bar.log()

    def _locate(self, t):
        """(t, j = t T, on_knot, segment index): the knot when t is one, else the segment [j0, j0 + 1] holding t."""
        t = _t(t)
        j = t * self.T
        knot = j.round()
        on_knot = (j - knot).abs() < 1e-6
        seg = torch.clamp(torch.ceil(j - 1e-6) - 1, 0, self.T - 1).long()  # the segment that ends at or after t
        return t, j, on_knot, knot.clamp(0, self.T).long(), seg

    def squares(self, t):
        t, j, on_knot, knot, seg = self._locate(t)
        la = self.log_alpha_bar[seg] + (j - seg) * (self.log_alpha_bar[seg + 1] - self.log_alpha_bar[seg])
        a2 = torch.where(on_knot, self.alpha_bar[knot], la.exp())  # the table itself at the knots: bit-exact
        return a2, 1 - a2

    def derivatives(self, t):
        t, j, _, _, seg = self._locate(t)
        slope = (self.log_alpha_bar[seg + 1] - self.log_alpha_bar[seg]) * self.T  # d log(alpha_bar) / dt
        a2, s2 = self.squares(t)
        alpha, sigma = a2.sqrt(), s2.sqrt()
        return 0.5 * slope * alpha, -0.5 * slope * a2 / sigma

    def t_of_lambda(self, lam):
        la = -torch.nn.functional.softplus(-2 * _t(lam))  # log alpha_bar = log sigmoid(2 lambda)
        grid = np.arange(self.T + 1) / self.T
        return torch.from_numpy(np.interp(-la.numpy(), -self.log_alpha_bar.numpy(), grid))  # -la increases in t


class VPCosinePath(Path):
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2): the continuous cosine VP path (Nichol & Dhariwal 2021
    without the offset; Salimans & Ho 2022, Kingma et al. 2023). lambda = -log tan(pi t / 2)."""

    name = "vp-cosine"

    def alpha_sigma(self, t):
        t = _t(t)
        return torch.cos(math.pi / 2 * t), torch.sin(math.pi / 2 * t)

    def derivatives(self, t):
        alpha, sigma = self.alpha_sigma(t)
        return -math.pi / 2 * sigma, math.pi / 2 * alpha

    def lam(self, t):
        return -torch.log(torch.tan(math.pi / 2 * _t(t)))

    def t_of_lambda(self, lam):
        return 2 / math.pi * torch.atan(torch.exp(-_t(lam)))


class FlowPath(Path):
    """Rectified flow (Liu et al. 2023; Lipman et al. 2023 with sigma_min = 0): alpha = 1 - t, sigma = t, so
    x_t moves on a straight line from x0 to eps and the velocity is u = eps - x0. Not variance preserving:
    alpha^2 + sigma^2 dips to 1/2 at t = 1/2. lambda = log((1 - t) / t), t = sigmoid(-lambda)."""

    name = "flow"
    variance_preserving = False

    def alpha_sigma(self, t):
        t = _t(t)
        return 1 - t, t

    def derivatives(self, t):
        t = _t(t)
        return -torch.ones_like(t), torch.ones_like(t)

    def lam(self, t):
        t = _t(t)
        return torch.log1p(-t) - torch.log(t)

    def t_of_lambda(self, lam):
        return torch.sigmoid(-_t(lam))


PATHS = Registry("path", " (see `tinydiffusion list paths`)")
PATHS.add("ddpm-linear", lambda T: DiscretePath(make_schedule("linear", T), "ddpm-linear"),
          "the DDPM table, linear betas 1e-4..0.02 (Ho et al. 2020) at t_k = (k + 1) / T")
PATHS.add("ddpm-cosine", lambda T: DiscretePath(make_schedule("cosine", T), "ddpm-cosine"),
          "the DDPM table, cosine alpha_bar (Nichol & Dhariwal 2021) at t_k = (k + 1) / T")
PATHS.add("vp-cosine", lambda T: VPCosinePath(), "continuous VP: alpha = cos(pi t / 2), sigma = sin(pi t / 2)")
PATHS.add("flow", lambda T: FlowPath(), "rectified flow: alpha = 1 - t, sigma = t, velocity u = eps - x0")


def make_path(name: str, T: int = 1000) -> Path:
    """The named path; T sizes the DDPM tables and is ignored by the continuous paths."""
    return PATHS.get(name)(T)


def coefficients(path: Path, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) at t (a float or (B,)) in like's dtype/device, shaped to broadcast: (B, 1, 1, 1)."""
    return tuple(broadcast(v, like) for v in path.alpha_sigma(t))


def broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A float64 (B,) or () tensor cast to like's dtype/device and shaped (B, 1, ..., 1)."""
    v = v.to(like.device, like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v


# Users name times as the course does: an integer step k in {0..T-1} on a DDPM path (k = T-1 is the noisiest),
# and a float in [0, 1] on a continuous path. These two functions are the one place that converts.
def to_time(path: Path, k) -> float:
    """A user-facing time -> continuous t: step k -> (k + 1) / T on a DDPM path, t itself on the others."""
    return (int(k) + 1) / path.T if path.T is not None else float(k)


def from_time(path: Path, t: float):
    """Continuous t -> the user-facing time: the step k on a DDPM path (t = 0, clean data, is -1), else t."""
    return round(t * path.T) - 1 if path.T is not None else round(float(t), 4)


def signal_label(path: Path, t: float) -> str:
    """What a picture says about the signal left at t: alpha_bar on a VP path, alpha and sigma otherwise."""
    a2, s2 = (float(v) for v in path.squares(t))
    fmt = lambda v: f"{v:.3f}" if v >= 0.01 or v == 0 else f"{v:.1e}"  # noqa: E731
    return f"alpha_bar = {fmt(a2)}" if path.variance_preserving else f"alpha = {fmt(a2**0.5)}, sigma = {fmt(s2**0.5)}"
