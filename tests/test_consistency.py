"""consistency.py against its formulas: the boundary condition, pseudo-Huber's limits, the curriculum and
log-normal levels (sign included), one teacher step against the exact ODE of Gaussian data at its order, and the
1-step consistency sampler's single network evaluation."""
import math

import numpy as np
import pytest
import torch

from gaussian_oracle import FLOW, LINEAR, MU, STD, GaussianOracle, denoiser, noise, ode_solution
from tinydiffusion.consistency import (P_MEAN, P_STD, boundary, curriculum, discretisation, karras_sigmas,
                                       lognormal_weights, pseudo_huber, sigma_tilde, t_min, teacher_step)
from tinydiffusion.denoiser import Denoiser
from tinydiffusion.paths import make_path
from tinydiffusion.samplers import get_sampler, nfe
from tinydiffusion.timesteps import time_grid

PATHS = [make_path(n) for n in ("ddpm-linear", "ddpm-cosine", "vp-cosine", "flow")]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("base", ["eps", "x0", "v", "u"])
def test_f_at_t_min_is_x_exactly_for_every_parameterisation(path, base):
    net = lambda x, t, cond=None: torch.randn_like(x) * 5  # noqa: E731 - any output at all
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    f, _ = Denoiser(net, path, f"cm-{base}")(x, t_min(path))
    assert torch.equal(f, x)
    c_skip, c_out = boundary(path, torch.tensor([t_min(path), 0.5, 1.0], dtype=torch.float64))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert c_skip[2] < 1e-3 and abs(c_out[2] - 1) < 1e-3  # at pure noise f is the base x0_hat


def test_pseudo_huber_is_l2_for_small_and_l1_for_large_differences():
    a = torch.zeros(2, 1, 28, 28)
    c = 0.00054 * math.sqrt(784)
    small, big = torch.full_like(a, 1e-6), torch.full_like(a, 10.0)
    sq_small, norm_big = (small.flatten(1) ** 2).sum(1), big.flatten(1).norm(dim=1)
    assert torch.allclose(pseudo_huber(a, small), sq_small / (2 * c), rtol=1e-3)  # ~ ||d||^2 / (2c)
    assert torch.allclose(pseudo_huber(a, big), norm_big - c, rtol=1e-6)  # ~ ||d|| - c
    assert pseudo_huber(a, a).abs().max() < 1e-8


def test_curriculum_doubles_from_10_to_1280_over_the_run():
    K = 700  # K' = floor(700 / (log2(128) + 1)) = 87
    assert [curriculum(k, K) for k in (0, 86, 87, 174, 2 * 87 + 1, 6 * 87, 10_000)] == [11, 11, 21, 41, 41, 641, 1281]


def test_lognormal_weights_are_the_interval_masses_with_a_negative_mean():
    assert P_MEAN == -1.1 and P_STD == 2.0  # iCT's values; the sign matters (mass near small sigma)
    sigmas = karras_sigmas(41, 0.002, 80.0)
    p = lognormal_weights(sigmas)
    cdf = lambda s: 0.5 * (1 + math.erf((math.log(s) - P_MEAN) / (math.sqrt(2) * P_STD)))  # noqa: E731
    want = np.array([cdf(b) - cdf(a) for a, b in zip(sigmas[:-1], sigmas[1:])])
    assert np.allclose(p, want / want.sum())
    mode = sigmas[np.argmax(p / np.diff(np.log(sigmas)))]  # density in ln sigma peaks at exp(P_mean)
    assert 0.2 < mode < 0.5
    assert p[sigmas[1:] < 1].sum() > 0.6


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_discretisation_is_ascending_karras_levels_from_t_min(path):
    ts = discretisation(path, 18)
    assert ts[0] == t_min(path) and (ts.diff() > 0).all() and float(ts[-1]) <= 1
    s = sigma_tilde(path, ts).numpy()
    assert np.allclose(s, karras_sigmas(18, s[0], s[-1]), rtol=1e-5)


@pytest.mark.parametrize("path,prediction", [(LINEAR, "v"), (FLOW, "u")], ids=["ddpm-linear", "flow"])
@pytest.mark.parametrize("solver,order", [("ddim", 1), ("euler", 1), ("heun", 2), ("dpm-solver", 2)])
def test_one_teacher_step_matches_the_exact_ode_step_at_its_order(path, prediction, solver, order):
    teacher = Denoiser(GaussianOracle(path, MU, STD, prediction).double(), path, prediction)
    x_T = noise(64).double()
    errors = []
    t = 0.6
    for h in (0.08, 0.04, 0.02):
        x_t = ode_solution(path, MU, STD, x_T, 1.0, t)
        got = teacher_step(solver, teacher, x_t, t, t - h)
        errors.append(float((got - ode_solution(path, MU, STD, x_t, t, t - h)).abs().max()))
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]  # local error ~ h^(order + 1)
    assert all(r > order + 0.6 for r in rates), (errors, rates)


def test_the_one_step_consistency_sampler_is_one_network_evaluation():
    d = denoiser("v")
    d = Denoiser(d.net, d.path, "cm-v")
    grid = time_grid(d.path, 1, "uniform")
    d.net.calls = 0
    x = get_sampler("consistency")(d, noise(8), grid)
    assert d.net.calls == 1 and nfe("consistency", 1) == 1 and x.shape == (8, 1, 2, 2)
    d.net.calls = 0
    get_sampler("consistency")(d, noise(8), time_grid(d.path, 4, "uniform"), generator=torch.Generator())
    assert d.net.calls == 4
