"""Samplers, proved on Gaussian data with its exact denoiser: target moments, convergence orders on the DDPM and the
flow path, DDIM inversion, Euler = DDIM on flow, the callback and NFE, any prediction type on any path."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinydiffusion.config import SampleConfig
from tinydiffusion.errors import UserError
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.paths import make_path
from tinydiffusion.samplers import SAMPLERS, ddim_invert, get_sampler, nfe
from tinydiffusion.timesteps import time_grid

from gaussian_oracle import FLOW, LINEAR, MU, STD, GaussianOracle, denoiser, noise, ode_solution

DETERMINISTIC = ["ddim", "dpm++2m", "dpm++3m", "heun"]


def test_bad_names_and_values_raise_user_errors():
    with pytest.raises(UserError, match="sampler"):
        get_sampler("euler-a")
    with pytest.raises(UserError, match="sampler"):
        cfg = SampleConfig(sampler="nope")
        generate(denoiser_for(GaussianOracle(LINEAR, MU, STD), LINEAR, "eps", cfg), cfg, 2, (1, 2, 2))
    with pytest.raises(UserError, match="eta"):
        get_sampler("ddim")(denoiser(), noise(2), [1.0, 0.0], eta=1.5)


# ----------------------------------------------------------------------------------- samplers: distribution
def affine_moments(sample, x_T_shape=(1, 2, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and variance of sample(x_T) for x_T ~ N(0, I) when sample is affine per dimension, as
    every deterministic sampler is with the exact Gaussian denoiser: x0 = a x_T + b, so mean b, variance a^2."""
    out = sample(torch.stack([torch.zeros(x_T_shape), torch.ones(x_T_shape)])).double()  # (2, C, H, W)
    return out[0], (out[1] - out[0]) ** 2


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_deterministic_samplers_reach_the_target_mean_and_variance(name, prediction):
    ab_T = float(LINEAR.alpha_bar[-1])
    # The exact ODE from N(0, I) at t = 1: the target up to the prior mismatch (x_T is not quite N(alpha mu, ...)).
    exact_mean, exact_var = affine_moments(lambda x: ode_solution(LINEAR, MU, STD, x, 1.0, 0.0))
    assert ((exact_mean - MU).abs() <= 1.01 * ab_T**0.5 * MU.abs()).all()  # mean off by alpha_{T-1} mu at most
    torch.testing.assert_close(exact_var, STD.double() ** 2, rtol=1e-4, atol=0)
    errors = []
    for K in (5, 20, 100, 500):
        ts = time_grid(LINEAR, K, "uniform")
        mean, var = affine_moments(lambda x: get_sampler(name)(denoiser(prediction), x, ts))
        errors.append(max(((mean - exact_mean) / STD).abs().max().item(), (var / exact_var - 1).abs().max().item()))
    assert all(a > b for a, b in zip(errors, errors[1:])), f"{name}: error did not shrink with steps: {errors}"
    # First-order DDIM is still 1.2 % off at 500 steps (halving with each doubling); the others are below 0.1 %.
    assert errors[-1] < (0.02 if name == "ddim" else 0.002), f"{name} at 500 steps: relative error {errors[-1]:.4f}"


N = 20_000  # samples per dimension for the stochastic samplers: standard errors 0.7 % of std, 1 % of variance


@pytest.mark.parametrize("variance, steps, path", [("small", (10, 1000), LINEAR), ("large", (10, 250), LINEAR),
                                                   ("small", (10, 1000), FLOW)])
def test_ddpm_reaches_the_target_mean_and_variance(variance, steps, path):
    """On any path: the ancestral step is the Gaussian posterior q(x_s | x_t, x0_hat) between two times."""
    x_T = noise(N, seed=5)
    z = []
    for K in steps:
        x0 = get_sampler("ddpm")(denoiser("v", path), x_T, time_grid(path, K, "uniform"), variance=variance,
                              generator=torch.Generator().manual_seed(6)).double()
        # Tolerance: 5 standard errors, plus DDPM's own first-order bias. With the exact denoiser the ancestral
        # chain's variance is off by 1.6 % ("small", K = 1000) and 1.3 % ("large", K = 250) at std 0.5, found by
        # propagating the Gaussian moments through Algorithm 2; we allow 2 %. The mean has no such bias.
        z_mean = (x0.mean(0) - MU).abs() / (STD / N**0.5)
        z_var = ((x0.var(0) / STD**2 - 1).abs() - 0.02).clamp(min=0) / (2 / N) ** 0.5
        z.append(max(z_mean.max().item(), z_var.max().item()))
    assert z[-1] < 5, f"ddpm at {steps[-1]} steps is {z[-1]:.1f} standard errors from the target"
    assert z[0] > 20, f"ddpm at {steps[0]} steps should be far from the target (it is {z[0]:.1f} SE)"


def test_dpmpp_2m_sde_reaches_the_target_in_far_fewer_steps_than_ddpm():
    """Both samplers add fresh noise each step; 2M SDE's multistep correction removes most of DDPM's
    first-order variance bias (on log-SNR spacing, the one it is built for): measured 7.8 % at 10 steps and
    1.4 % at 100, against DDPM's 59 % and 11 %."""
    x_T = noise(N, seed=5)

    def var_error(name, K):
        x0 = get_sampler(name)(denoiser(), x_T, time_grid(LINEAR, K, "logsnr"),
                            generator=torch.Generator().manual_seed(6)).double()
        z_mean = ((x0.mean(0) - MU).abs() / (STD / N**0.5)).max().item()
        return (x0.var(0) / STD**2 - 1).abs().max().item(), z_mean

    for K in (10, 20):
        (sde, _), (ddpm, _) = var_error("dpm++2m-sde", K), var_error("ddpm", K)
        assert sde < 0.25 * ddpm, (K, sde, ddpm)
    sde, z_mean = var_error("dpm++2m-sde", 100)
    assert sde < 0.02 + 5 * (2 / N) ** 0.5 and z_mean < 5, (sde, z_mean)


def test_dpmpp_2m_sde_first_step_is_the_ddpm_posterior_step():
    x_T, ts = noise(256, seed=8), time_grid(LINEAR, 2, "logsnr")  # [1, 0.001, 0]: one step before the last
    first = {}
    for name in ("dpm++2m-sde", "ddpm"):
        get_sampler(name)(denoiser(), x_T, ts, generator=torch.Generator().manual_seed(9),
                       callback=lambda d, name=name: first.setdefault(name, d["x"]))
    torch.testing.assert_close(first["dpm++2m-sde"], first["ddpm"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ DDIM
def test_ddim_eta0_is_deterministic_and_invertible():
    x_T, ts = noise(512, seed=7), time_grid(LINEAR, 50, "uniform")
    a = get_sampler("ddim")(denoiser(), x_T, ts, generator=torch.Generator().manual_seed(1))
    b = get_sampler("ddim")(denoiser(), x_T, ts, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)  # eta = 0 never touches the generator
    x_T_back = ddim_invert(denoiser(), a, ts)
    # Each inverse step is solved to 1e-6 by fixed-point iteration; float32 rounding over 50 steps gives ~1e-5.
    torch.testing.assert_close(x_T_back, x_T, rtol=0, atol=1e-4)
    torch.testing.assert_close(get_sampler("ddim")(denoiser(), x_T_back, ts), a, rtol=0, atol=1e-4)


def test_ddim_eta1_is_ddpm_with_posterior_variance():
    x_T, ts = noise(256, seed=8), time_grid(LINEAR, 20, "uniform")
    ddim = get_sampler("ddim")(denoiser(), x_T, ts, eta=1.0, generator=torch.Generator().manual_seed(9))
    ddpm = get_sampler("ddpm")(denoiser(), x_T, ts, variance="small", generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- ODE solver order
def ode_error(name: str, K: int, spacing: str, x_T: torch.Tensor, path=LINEAR) -> tuple[int, float]:
    """(NFE, RMS error at the last time before 0) against the closed-form ODE solution; the final jump to
    clean data is the same x0_hat for every solver, so it is left out of the comparison."""
    d = denoiser("eps" if path.T else "u", path)
    ts = time_grid(path, K, spacing)
    states = {}
    get_sampler(name)(d, x_T, ts, callback=lambda info: states.__setitem__(info["i"], info["x"]))
    exact = ode_solution(path, MU, STD, x_T, ts[0], ts[-2])
    return d.net.calls, (states[K - 2].double() - exact).pow(2).mean().sqrt().item()


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares order p in error ~ NFE^-p."""
    log_n, log_e = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return -np.polyfit(log_n, log_e, 1)[0]


def test_dpmpp_2m_beats_ddim_at_equal_nfe_and_is_second_order():
    """On the logSNR spacing Lu et al. 2022 use: DDIM (DPM-Solver++ 1) is first order, 2M second."""
    x_T = noise(2000, seed=10)
    ddim = [ode_error("ddim", K, "logsnr", x_T) for K in (5, 10, 20, 40, 80, 160)]
    dpm = [ode_error("dpm++2m", K, "logsnr", x_T) for K in (5, 10, 20, 40, 80, 160)]
    for (n_a, e_ddim), (n_b, e_dpm) in zip(ddim, dpm):
        assert n_a == n_b and e_dpm < 0.5 * e_ddim, (n_a, e_ddim, e_dpm)
    assert 0.9 < slope(ddim[2:]) < 1.1, ddim
    assert 1.8 < slope(dpm[2:]) < 2.3, dpm


def test_heun_is_second_order_and_dpmpp_3m_third():
    x_T = noise(2000, seed=11)
    heun = [ode_error("heun", K, "uniform", x_T) for K in (10, 20, 40, 80)]
    assert [n for n, _ in heun] == [19, 39, 79, 159]  # 2 evaluations per step, 1 on the last
    assert 1.9 < slope(heun) < 2.3, heun
    dpm3 = [ode_error("dpm++3m", K, "logsnr", x_T) for K in (10, 20, 40)]
    assert slope(dpm3) > 2.8, dpm3  # Gaussian data: the lower-order start costs little, so often higher


# ------------------------------------------------------------------------------------------- contracts
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_nfe_and_the_final_step_lands_on_x0_hat(name):
    # Euler in t lands on x0_hat only where the path is straight (flow); on a curved VP path its last step misses it
    path = FLOW if name == "euler" else LINEAR
    d, x_T, ts, seen = denoiser("v", path), noise(16), time_grid(path, 6, "trailing"), []
    out = get_sampler(name)(d, x_T, ts, generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert [info["i"] for info in seen] == list(range(6)) and [info["t"] for info in seen] == ts[:-1]
    assert all(info["x"].shape == info["x0_hat"].shape == x_T.shape for info in seen)
    assert torch.equal(seen[-1]["x"], out)
    torch.testing.assert_close(out, seen[-1]["x0_hat"], rtol=0, atol=1e-5)  # no noise on clean data
    assert d.net.calls == nfe(name, len(ts) - 1)


@pytest.mark.parametrize("path", ["ddpm-linear", "vp-cosine", "flow"])
@pytest.mark.parametrize("name", DETERMINISTIC + ["euler"])
def test_any_sampler_works_with_any_prediction_type_on_any_path(name, path):
    path = make_path(path)
    x_T, ts = noise(256, seed=12), time_grid(path, 10, "logsnr")
    # eps cannot give x0_hat where alpha = 0 (flow at t = 1; vp-cosine's alpha(1) is 6e-17): not on those paths
    predictions = ("eps", "x0", "v", "u") if path.T else ("x0", "v", "u")
    outs = [get_sampler(name)(denoiser(p, path), x_T, ts) for p in predictions]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-3, atol=1e-3)


def test_nfe_counts():
    assert nfe("ddim", 10) == 10 and nfe("dpm++2m", 10) == 10 and nfe("heun", 10) == 19
    assert math.isclose(nfe("heun", 1), 1)


# ------------------------------------------------------------------------------------------- flow path
def test_euler_on_the_flow_path_is_ddim_on_the_same_grid():
    """The teaching point: rectified flow's paths are straight lines, so Euler on the velocity u = eps - x0 and
    DDIM's x_s = alpha_s x0_hat + sigma_s eps_hat are the same step; on a curved VP path they differ."""
    x_T = noise(64, seed=13)
    for spacing in ("uniform", "shifted", "karras"):
        ts = time_grid(FLOW, 8, spacing)
        torch.testing.assert_close(get_sampler("euler")(denoiser("u", FLOW), x_T, ts),
                                   get_sampler("ddim")(denoiser("u", FLOW), x_T, ts), rtol=1e-5, atol=1e-5)
    vp = make_path("vp-cosine")
    ts = time_grid(vp, 8, "uniform")
    gap = (get_sampler("euler")(denoiser("eps", vp), x_T, ts) - get_sampler("ddim")(denoiser("eps", vp), x_T, ts))
    assert gap.abs().max() > 1e-2


def flow_lambda_grid(K: int) -> list[float]:
    """K steps even in lambda on the flow path between t = 0.9 and t = 0.02, then 0: DPM-Solver's own grid."""
    lam = torch.linspace(float(FLOW.lam(0.9)), float(FLOW.lam(0.02)), K, dtype=torch.float64)
    return FLOW.t_of_lambda(lam).tolist() + [0.0]


def test_ode_samplers_converge_at_their_order_on_the_flow_path():
    """From t = 1 (pure noise) on the even grid: Euler/DDIM first order, Heun second. DPM-Solver++ on its lambda
    grid (from t = 0.9, where lambda is finite): 2M second order, 3M above second (its first step is DDIM, whose
    O(h^2) local error weighs alpha = 0.1 here against 0.006 at the start of the DDPM table, so the measured
    order over K = 10..80 is 2.3 rather than DDPM's 2.8)."""
    x_T = noise(2000, seed=14)
    orders = {name: slope([ode_error(name, K, "uniform", x_T, FLOW) for K in (10, 20, 40, 80)])
              for name in ("euler", "ddim", "heun")}
    for name in ("dpm++2m", "dpm++3m"):
        errs = []
        for K in (10, 20, 40, 80):
            d, ts, states = denoiser("u", FLOW), flow_lambda_grid(K), {}
            get_sampler(name)(d, x_T, ts, callback=lambda info: states.__setitem__(info["i"], info["x"]))
            exact = ode_solution(FLOW, MU, STD, x_T, ts[0], ts[-2])
            errs.append((K, (states[K - 2].double() - exact).pow(2).mean().sqrt().item()))
        orders[name] = slope(errs)
    assert 0.9 < orders["euler"] < 1.15 and 0.9 < orders["ddim"] < 1.15, orders
    assert 1.8 < orders["heun"] < 2.3 and 1.8 < orders["dpm++2m"] < 2.4, orders
    assert orders["dpm++3m"] > 2.2, orders


def test_dpmpp_2m_from_pure_noise_on_the_even_flow_grid_is_better_than_ddim_but_loses_its_order():
    """Measured, and why: from t = 1 the lambda steps near the noise end stay O(1) however fine the t grid is
    (lambda_1 = log(h / (1 - h))), and the first two steps are first order (no history at lambda = -inf), so 2M
    converges at about order 1.2 there. Use the shifted or karras grid, or Heun, for flow."""
    x_T = noise(2000, seed=14)
    ddim = [ode_error("ddim", K, "uniform", x_T, FLOW) for K in (10, 20, 40, 80)]
    dpm = [ode_error("dpm++2m", K, "uniform", x_T, FLOW) for K in (10, 20, 40, 80)]
    assert all(b[1] < a[1] for a, b in zip(ddim, dpm)) and 1.1 < slope(dpm) < 1.5, (ddim, dpm)


def test_deterministic_samplers_reach_the_target_on_the_flow_path():
    """On flow x_T ~ N(0, I) at t = 1 is exactly the prior, so the exact ODE lands on N(mu, std^2) itself."""
    exact_mean, exact_var = affine_moments(lambda x: ode_solution(FLOW, MU, STD, x, 1.0, 0.0))
    torch.testing.assert_close(exact_mean, MU.double(), rtol=0, atol=1e-12)
    torch.testing.assert_close(exact_var, STD.double() ** 2, rtol=1e-12, atol=0)
    for name, tol in (("euler", 0.08), ("heun", 0.002), ("dpm++2m", 0.01), ("dpm++3m", 0.01)):  # Euler: 1st order
        mean, var = affine_moments(lambda x: get_sampler(name)(denoiser("u", FLOW), x, time_grid(FLOW, 50, "uniform")))
        assert ((mean - MU) / STD).abs().max() < 0.02 and (var / exact_var - 1).abs().max() < tol, name
