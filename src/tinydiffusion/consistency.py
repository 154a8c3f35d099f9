"""Consistency models (Song et al. 2023, arXiv:2303.01469; improved: Song & Dhariwal 2023, arXiv:2310.14189).

A consistency function f(x_t, t) maps every point of one probability-flow ODE trajectory to its start x_0. It is
parameterised so that the boundary condition f(x, t_min) = x holds exactly, whatever the network does:
    f(x, t) = c_skip(t) x + c_out(t) x0_base(x, t)
with x0_base the data estimate of any base prediction (eps, x0, v, u; denoiser.py) and, in the Karras noise level
sigma~ = sigma / alpha with d = sigma~ - sigma~_min and sigma_data = 0.5 (Song et al. 2023 appendix C, in LCM's
form for a network that already estimates x0, Luo et al. 2023):
    c_skip = sigma_data^2 / (d^2 + sigma_data^2),   c_out = d / sqrt(d^2 + sigma_data^2)
(Song's c_out carries a factor sigma_data because his F is EDM's raw output; ours is an x0 estimate, so c_out -> 1
at high noise and a student initialised from the teacher starts as the teacher's one-step x0_hat).

Known failure modes (see the README, "Few-step generation"):
- consistency training (no teacher) stalls at small batch: the one-sample estimate of the ODE step is noisy;
- the log-normal noise levels use P_mean = -1.1 (negative: most mass at small sigma~); a positive mean
  trains on noise and the samples stay blobs.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .paths import Path, broadcast
from .samplers import ddim_step, dpmpp_2m_step, euler_step, heun_step, ode_coordinates, ode_slope

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002  # sigma~ of t_min on a continuous path (Karras et al. 2022)
SIGMA_MAX = 80.0
RHO = 7.0
P_MEAN, P_STD = -1.1, 2.0  # iCT's log-normal noise levels, ln sigma~ ~ N(P_mean, P_std^2); note the sign


def t_min(path: Path) -> float:
    """The smallest time a consistency model sees: the first knot 1/T of a DDPM table, else sigma~ = 0.002."""
    return 1.0 / path.T if path.T is not None else float(t_of_sigma(path, torch.tensor(SIGMA_MIN)))


def sigma_tilde(path: Path, t) -> torch.Tensor:
    """sigma~ = sigma / alpha, float64, capped at 1e8 where alpha = 0 (t = 1 on the flow and vp-cosine paths)."""
    a2, s2 = path.squares(t)
    return (s2 / a2.clamp_min(1e-16)).sqrt().clamp_max(1e8)


def t_of_sigma(path: Path, sigma) -> torch.Tensor:
    """The time of noise level sigma~ on path (lambda = -log sigma~)."""
    return path.t_of_lambda(-torch.log(torch.as_tensor(sigma, dtype=torch.float64)))


def boundary(path: Path, t) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) at times t (float64), with c_skip(t_min) = 1 and c_out(t_min) = 0 exactly."""
    s = sigma_tilde(path, t)
    s_min = sigma_tilde(path, t_min(path))
    d = s - s_min
    c_skip = SIGMA_DATA**2 / (d**2 + SIGMA_DATA**2)
    c_out = d / (d**2 + SIGMA_DATA**2).sqrt()
    return c_skip, c_out


def consistency_x0(path: Path, x: torch.Tensor, x0_base: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """f(x, t) = c_skip(t) x + c_out(t) x0_base for times t (B,) float64."""
    c_skip, c_out = boundary(path, t)
    return broadcast(c_skip, x) * x + broadcast(c_out, x) * x0_base


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per example, shape (B,), with c = 0.00054 sqrt(d) (Song & Dhariwal 2023, sec.
    3.3): ~ ||a - b||^2 / (2c) for small differences (L2), ~ ||a - b|| for large ones (L1-like)."""
    d = a[0].numel()
    c = 0.00054 * math.sqrt(d) if c is None else c
    sq = (a - b).flatten(1).pow(2).sum(1)  # (B,)
    return (sq + c**2).sqrt() - c


def karras_sigmas(N: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> np.ndarray:
    """N ascending noise levels sigma~_i = (s_min^(1/rho) + i/(N-1) (s_max^(1/rho) - s_min^(1/rho)))^rho
    (Karras et al. 2022 eq. 5; Song et al. 2023 sec. 5)."""
    r = 1 / RHO
    i = np.arange(N) / (N - 1)
    return (sigma_min**r + i * (sigma_max**r - sigma_min**r)) ** RHO


def discretisation(path: Path, N: int) -> torch.Tensor:
    """N ascending times on the path: the Karras levels between sigma~(t_min) and sigma~(1) (EDM's 80 where the
    path reaches pure noise), mapped to t; the first is exactly t_min."""
    s_lo = float(sigma_tilde(path, t_min(path)))
    s_hi = min(float(sigma_tilde(path, 1.0)), SIGMA_MAX)
    t = t_of_sigma(path, torch.from_numpy(karras_sigmas(N, s_lo, s_hi)))
    t[0] = t_min(path)
    return t


def curriculum(k: int, K: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT's discretisation curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2(s1/s0)
    + 1)) (Song & Dhariwal 2023, eq. 8): doubling the steps K' training steps at a time."""
    K_prime = max(1, math.floor(K / (math.log2(s1 // s0) + 1)))
    return min(s0 * 2 ** (k // K_prime), s1) + 1


def lognormal_weights(sigmas: np.ndarray, p_mean: float = P_MEAN, p_std: float = P_STD) -> np.ndarray:
    """p(i) ∝ erf((ln s_{i+1} - P_mean) / (sqrt2 P_std)) - erf((ln s_i - P_mean) / (sqrt2 P_std)) for the N - 1
    adjacent pairs of ascending sigmas (Song & Dhariwal 2023, eq. 10: the log-normal mass of each interval)."""
    z = (np.log(sigmas) - p_mean) / (math.sqrt(2) * p_std)
    erf = np.vectorize(math.erf)(z)
    p = np.diff(erf)
    return p / p.sum()


def teacher_step(solver: str, teacher, x: torch.Tensor, t: float, s: float, cond=None) -> torch.Tensor:
    """One probability-flow ODE step of the teacher denoiser from t to s < t with a sampler's one-step update:
    ddim (1st order), euler (1st order in t), heun (2nd order), dpm-solver (DPM-Solver++(2S), the midpoint in
    lambda, 2nd order). Returns x_s."""
    path = teacher.path
    x0, eps = teacher(x, t, cond)
    if solver == "ddim":
        return ddim_step(path, x, x0, eps, t, s)
    if solver == "euler":
        return euler_step(path, x, x0, eps, t, s)
    if solver == "heun":
        (sc_t, tau_t), (sc_s, tau_s) = ode_coordinates(path, t), ode_coordinates(path, s)
        x_e = sc_s * (x / sc_t + (tau_s - tau_t) * ode_slope(path, x0, eps, t))  # 1. the Euler prediction at s
        return heun_step(path, x, (x0, eps), teacher(x_e, s, cond), t, s)  # 2. the trapezoidal correction
    if solver == "dpm-solver":
        lam_t, lam_s = float(path.lam(t)), float(path.lam(s))
        m = float(path.t_of_lambda(torch.tensor([(lam_t + lam_s) / 2], dtype=torch.float64))[0])
        x_m = dpmpp_2m_step(path, x, x0, t, m)  # 1. DDIM to the midpoint in lambda
        x0_m, _ = teacher(x_m, m, cond)
        return dpmpp_2m_step(path, x, x0, t, s, prev=((lam_t + lam_s) / 2, x0_m))  # 2. D = x0_hat(mid), r = 1/2
    raise ValueError(solver)


SOLVERS = ("ddim", "euler", "heun", "dpm-solver")
