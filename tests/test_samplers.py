"""Samplers, spacings, parameterisations and loss weights, proved on Gaussian data with its exact denoiser."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gaussian_oracle import GaussianOracle, ode_solution
from tinydiffusion.config import SampleConfig
from tinydiffusion.denoiser import Denoiser
from tinydiffusion.errors import UserError
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.objectives import diffusion_loss, loss_weight
from tinydiffusion.process import eps_from_x0, v_from_x0_eps, x0_eps_from_v, x0_from_eps
from tinydiffusion.samplers import SAMPLERS, ddim_invert, get_sampler, nfe
from tinydiffusion.schedules import make_schedule
from tinydiffusion.timesteps import SPACINGS, make_timesteps

LINEAR = make_schedule("linear", 1000)
MU = torch.tensor([0.5, -0.3, 0.2, -0.6]).reshape(1, 2, 2)  # one example: (C, H, W) = (1, 2, 2)
STD = torch.tensor([0.5, 0.7, 1.0, 0.8]).reshape(1, 2, 2)
DETERMINISTIC = ["ddim", "dpm++2m", "dpm++3m", "heun"]


def denoiser(prediction="eps", schedule=LINEAR):
    return Denoiser(GaussianOracle(schedule, MU, STD, prediction), schedule, prediction, clip_x0=False)


def noise(n, seed=0):
    return torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ spacings
@pytest.mark.parametrize("spacing", list(SPACINGS))
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 7, 10, 50, 999, 1000])
def test_spacing_first_and_last_steps_are_as_documented(spacing, schedule, steps):
    T = 1000
    ts = make_timesteps(make_schedule(schedule, T), steps, spacing)
    assert len(ts) == steps and all(isinstance(t, int) for t in ts)
    assert all(a > b for a, b in zip(ts, ts[1:])) and 0 <= ts[-1] and ts[0] <= T - 1  # distinct, descending
    assert ts[0] == T - 1  # every spacing starts where x_T was drawn
    if steps == 1:
        assert ts == [T - 1]
    elif spacing == "trailing":
        assert ts[-1] == int(np.rint(T / steps)) - 1
    else:
        assert ts[-1] == 0
    if steps == T:
        assert ts == list(range(T - 1, -1, -1))


def test_spacings_follow_their_densities():
    """logsnr: even in lambda; karras: even in sigma^(1/7); quadratic: gaps grow towards the noise end."""
    sigma = ((1 - LINEAR.alpha_bar) / LINEAR.alpha_bar).sqrt()
    for spacing, f in [("logsnr", lambda s: s.log()), ("karras", lambda s: s ** (1 / 7))]:
        gaps = f(sigma[make_timesteps(LINEAR, 8, spacing)]).diff().abs()
        assert gaps.max() / gaps.min() < 1.2, (spacing, gaps)  # rounding to integer steps only
    gaps = -np.diff(make_timesteps(1000, 10, "quadratic"))
    assert (np.diff(gaps) < 0).all()  # descending list: the first gaps (near T-1) are the widest


def test_bad_names_and_values_raise_user_errors():
    with pytest.raises(UserError, match="spacing"):
        make_timesteps(1000, 10, "leading")
    for steps in (0, 1001):
        with pytest.raises(UserError, match="--steps"):
            make_timesteps(1000, steps)
    with pytest.raises(TypeError):  # a programming error: karras needs the noise levels
        make_timesteps(1000, 10, "karras")
    with pytest.raises(UserError, match="sampler"):
        get_sampler("euler-a")
    with pytest.raises(UserError, match="sampler"):
        cfg = SampleConfig(sampler="nope")
        generate(denoiser_for(GaussianOracle(LINEAR, MU, STD), LINEAR, "eps", cfg), cfg, 2, (1, 2, 2))
    with pytest.raises(UserError, match="eta"):
        get_sampler("ddim")(denoiser(), noise(2), [999, 0], eta=1.5)


# ---------------------------------------------------------------------------------------- parameterisations
def test_eps_x0_v_conversions_round_trip():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    alpha = torch.rand(64, 1, generator=g, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    sigma = (1 - alpha**2).sqrt()  # variance preserving
    x_t = alpha * x0 + sigma * eps
    torch.testing.assert_close(x0_from_eps(x_t, eps, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_x0(x_t, x0, alpha, sigma), eps)
    x0_back, eps_back = x0_eps_from_v(x_t, v_from_x0_eps(x0, eps, alpha, sigma), alpha, sigma)
    torch.testing.assert_close(x0_back, x0)
    torch.testing.assert_close(eps_back, eps)


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_denoiser_gives_the_same_estimates_for_every_prediction_type(t):
    x_t = noise(256)
    x0_eps, eps_eps = denoiser("eps")(x_t, t)
    for prediction in ("x0", "v"):
        x0_hat, eps_hat = denoiser(prediction)(x_t, t)
        # float32 net outputs; x0 from eps divides by alpha_999 = 0.0064, hence the absolute tolerance
        torch.testing.assert_close(x0_hat, x0_eps, rtol=1e-4, atol=2e-4)
        torch.testing.assert_close(eps_hat, eps_eps, rtol=1e-4, atol=2e-4)


# ------------------------------------------------------------------------------------------- loss weights
def test_min_snr_weights_match_their_formulas():
    snr = torch.logspace(-4, 4, 50, dtype=torch.float64)
    gamma = 5.0
    expected = {"eps": snr.clamp(max=gamma) / snr, "x0": snr.clamp(max=gamma), "v": snr.clamp(max=gamma) / (snr + 1)}
    for prediction, w in expected.items():
        torch.testing.assert_close(loss_weight(snr, prediction, "min-snr", gamma), w)
        torch.testing.assert_close(loss_weight(snr, prediction, "none"), torch.ones_like(snr))
    with pytest.raises(UserError, match="weighting"):
        loss_weight(snr, "eps", "max-snr")


def test_min_snr_weights_the_x0_error_the_same_for_every_prediction_type():
    """Hang et al. 2023: the weighted loss is min(SNR, gamma) ||x0_hat - x0||^2 whatever the net predicts."""
    B, T = 64, LINEAR.T
    x0 = torch.randn(B, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    delta = 0.1 * torch.randn(B, 1, 2, 2, generator=torch.Generator().manual_seed(3))  # the net's x0 error

    def net_for(prediction):
        def net(x_t, t, cond=None):
            k = (t.double() * T - 1).round().long()  # continuous time back to the integer step
            alpha = LINEAR.sqrt_alpha_bar[k].view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
            sigma = LINEAR.sqrt_one_minus_alpha_bar[k].view(-1, 1, 1, 1)
            x0_hat = x0 + delta
            eps_hat = (x_t - alpha * x0_hat) / sigma
            return {"eps": eps_hat, "x0": x0_hat, "v": alpha * eps_hat - sigma * x0_hat}[prediction].float()
        return net

    t = torch.randint(0, T, (B,), generator=torch.Generator().manual_seed(4))  # what diffusion_loss draws first
    snr = (LINEAR.alpha_bar / (1 - LINEAR.alpha_bar))[t]
    expected = snr.clamp(max=5.0) * delta.double().pow(2).flatten(1).mean(1)
    for prediction in ("eps", "x0", "v"):
        loss = diffusion_loss(net_for(prediction), LINEAR, x0, prediction=prediction, weighting="min-snr",
                              generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(loss.double(), expected, rtol=2e-3, atol=1e-7)


def test_lognormal_time_sampling_draws_edm_log_snr_and_snaps_to_the_nearest_step():
    from tinydiffusion.objectives import sample_t

    g = torch.Generator().manual_seed(0)
    t = sample_t(LINEAR, 20_000, "lognormal", g)
    logsnr = (LINEAR.alpha_bar / (1 - LINEAR.alpha_bar)).log()  # (T,), from 9.2 at t = 0 to -10.1 at t = T-1
    lam = logsnr[t]
    # Inside the table's range (|lambda| < 9) snapping moves a draw by under one step, so N(2.4, 2.4) survives.
    assert abs(lam.mean().item() - 2.4) < 0.1 and abs(lam.std().item() - 2.4) < 0.1
    assert 0 <= int(t.min()) and int(t.max()) < LINEAR.T
    # Snapping: the chosen step is the nearest in log-SNR to the drawn value.
    g2 = torch.Generator().manual_seed(0)
    drawn = 2.4 + 2.4 * torch.randn(20_000, generator=g2, dtype=torch.float64)
    gap = (logsnr[t] - drawn).abs()
    assert bool((gap <= (logsnr[(t + 1).clamp(max=LINEAR.T - 1)] - drawn).abs() + 1e-12).all())
    assert bool((gap <= (logsnr[(t - 1).clamp(min=0)] - drawn).abs() + 1e-12).all())
    # Uniform keeps Ho et al.'s t ~ U{0..T-1}.
    u = sample_t(LINEAR, 20_000, "uniform", torch.Generator().manual_seed(1))
    assert int(u.min()) == 0 and int(u.max()) == LINEAR.T - 1 and abs(u.double().mean().item() - 499.5) < 10
    with pytest.raises(UserError, match="time sampling"):
        sample_t(LINEAR, 4, "beta")


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
    # The exact ODE from N(0, I) at t = T-1: the target up to the prior mismatch (x_T is not quite N(alpha mu, ...)).
    exact_mean, exact_var = affine_moments(lambda x: ode_solution(LINEAR, MU, STD, x, LINEAR.T - 1, -1))
    assert ((exact_mean - MU).abs() <= 1.01 * ab_T**0.5 * MU.abs()).all()  # mean off by alpha_{T-1} mu at most
    torch.testing.assert_close(exact_var, STD.double() ** 2, rtol=1e-4, atol=0)
    errors = []
    for K in (5, 20, 100, 500):
        ts = make_timesteps(LINEAR, K, "uniform")
        mean, var = affine_moments(lambda x: get_sampler(name)(denoiser(prediction), x, ts))
        errors.append(max(((mean - exact_mean) / STD).abs().max().item(), (var / exact_var - 1).abs().max().item()))
    assert all(a > b for a, b in zip(errors, errors[1:])), f"{name}: error did not shrink with steps: {errors}"
    # First-order DDIM is still 1.2 % off at 500 steps (halving with each doubling); the others are below 0.1 %.
    assert errors[-1] < (0.02 if name == "ddim" else 0.002), f"{name} at 500 steps: relative error {errors[-1]:.4f}"


N = 20_000  # samples per dimension for the stochastic samplers: standard errors 0.7 % of std, 1 % of variance


@pytest.mark.parametrize("variance, steps", [("small", (10, 1000)), ("large", (10, 250))])
def test_ddpm_reaches_the_target_mean_and_variance(variance, steps):
    x_T = noise(N, seed=5)
    z = []
    for K in steps:
        x0 = get_sampler("ddpm")(denoiser(), x_T, make_timesteps(LINEAR, K, "uniform"), variance=variance,
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
        x0 = get_sampler(name)(denoiser(), x_T, make_timesteps(LINEAR, K, "logsnr"),
                            generator=torch.Generator().manual_seed(6)).double()
        z_mean = ((x0.mean(0) - MU).abs() / (STD / N**0.5)).max().item()
        return (x0.var(0) / STD**2 - 1).abs().max().item(), z_mean

    for K in (10, 20):
        (sde, _), (ddpm, _) = var_error("dpm++2m-sde", K), var_error("ddpm", K)
        assert sde < 0.25 * ddpm, (K, sde, ddpm)
    sde, z_mean = var_error("dpm++2m-sde", 100)
    assert sde < 0.02 + 5 * (2 / N) ** 0.5 and z_mean < 5, (sde, z_mean)


def test_dpmpp_2m_sde_first_step_is_the_ddpm_posterior_step():
    x_T, ts = noise(256, seed=8), make_timesteps(LINEAR, 2, "logsnr")  # [999, 0]: one step before the last
    first = {}
    for name in ("dpm++2m-sde", "ddpm"):
        get_sampler(name)(denoiser(), x_T, ts, generator=torch.Generator().manual_seed(9),
                       callback=lambda d, name=name: first.setdefault(name, d["x"]))
    torch.testing.assert_close(first["dpm++2m-sde"], first["ddpm"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ DDIM
def test_ddim_eta0_is_deterministic_and_invertible():
    x_T, ts = noise(512, seed=7), make_timesteps(LINEAR, 50, "uniform")
    a = get_sampler("ddim")(denoiser(), x_T, ts, generator=torch.Generator().manual_seed(1))
    b = get_sampler("ddim")(denoiser(), x_T, ts, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)  # eta = 0 never touches the generator
    x_T_back = ddim_invert(denoiser(), a, ts)
    # Each inverse step is solved to 1e-6 by fixed-point iteration; float32 rounding over 50 steps gives ~1e-5.
    torch.testing.assert_close(x_T_back, x_T, rtol=0, atol=1e-4)
    torch.testing.assert_close(get_sampler("ddim")(denoiser(), x_T_back, ts), a, rtol=0, atol=1e-4)


def test_ddim_eta1_is_ddpm_with_posterior_variance():
    x_T, ts = noise(256, seed=8), make_timesteps(LINEAR, 20, "uniform")
    ddim = get_sampler("ddim")(denoiser(), x_T, ts, eta=1.0, generator=torch.Generator().manual_seed(9))
    ddpm = get_sampler("ddpm")(denoiser(), x_T, ts, variance="small", generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- ODE solver order
def ode_error(name: str, K: int, spacing: str, x_T: torch.Tensor) -> tuple[int, float]:
    """(NFE, RMS error at the last integer step) against the closed-form ODE solution; the final jump to
    clean data is the same x0_hat for every solver, so it is left out of the comparison."""
    d = denoiser()
    ts = make_timesteps(LINEAR, K, spacing)
    states = {}
    get_sampler(name)(d, x_T, ts, callback=lambda info: states.__setitem__(info["i"], info["x"]))
    exact = ode_solution(LINEAR, MU, STD, x_T, ts[0], ts[-1])
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
    d, x_T, ts, seen = denoiser(), noise(16), make_timesteps(LINEAR, 6, "trailing"), []
    out = get_sampler(name)(d, x_T, ts, generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert [info["i"] for info in seen] == list(range(6)) and [info["t"] for info in seen] == ts
    assert all(info["x"].shape == info["x0_hat"].shape == x_T.shape for info in seen)
    assert torch.equal(seen[-1]["x"], out)
    torch.testing.assert_close(out, seen[-1]["x0_hat"], rtol=0, atol=1e-5)  # no noise on clean data
    assert d.net.calls == nfe(name, len(ts))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_any_sampler_works_with_any_prediction_type(name):
    x_T, ts = noise(256, seed=12), make_timesteps(LINEAR, 10, "logsnr")
    outs = [get_sampler(name)(denoiser(p), x_T, ts) for p in ("eps", "x0", "v")]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-3, atol=1e-3)


def test_generate_passes_eta_and_schedule_aware_spacings():
    def run(eta):
        cfg = SampleConfig(sampler="ddim", steps=10, spacing="karras", eta=eta, clip_x0=False)
        return generate(denoiser_for(GaussianOracle(LINEAR, MU, STD), LINEAR, "eps", cfg), cfg, 8, (1, 2, 2),
                        generator=torch.Generator().manual_seed(0))
    x_T = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))  # what generate draws first
    expected = get_sampler("ddim")(denoiser(), x_T, make_timesteps(LINEAR, 10, "karras"))  # generate never clamps
    torch.testing.assert_close(run(0.0), expected)
    assert not torch.allclose(run(1.0), run(0.0))  # eta reached the sampler


def test_nfe_counts():
    assert nfe("ddim", 10) == 10 and nfe("dpm++2m", 10) == 10 and nfe("heun", 10) == 19
    assert math.isclose(nfe("heun", 1), 1)
