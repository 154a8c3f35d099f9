"""The forward process against its closed forms on every path: endpoints, the iterated chain, the posterior, and the
eps/x0/v/u conversions (Ho et al. 2020; Salimans & Ho 2022; Lipman et al. 2023)."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.paths import PATHS, make_path
from tinydiffusion.process import (
    eps_from_x0,
    q_posterior,
    q_sample,
    u_from_x0_eps,
    v_from_x0_eps,
    x0_eps_from_u,
    x0_eps_from_v,
    x0_from_eps,
)
from tinydiffusion.schedules import make_schedule


def test_q_sample_endpoints():
    p = make_path("ddpm-linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4096, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    x_first = q_sample(p, x0, 1 / 1000, noise)  # the table's first step
    assert (x_first - x0).pow(2).mean().sqrt() < 0.015  # sqrt(1 - 0.9999) = 0.01 times unit noise
    x_last = q_sample(p, x0, torch.full((len(x0),), 1.0, dtype=torch.float64), noise)
    assert abs(x_last.mean().item()) < 0.01 and abs(x_last.var().item() - 1) < 0.02
    flow = make_path("flow")
    assert torch.equal(q_sample(flow, x0, 0.0, noise), x0) and torch.equal(q_sample(flow, x0, 1.0, noise), noise)
    torch.testing.assert_close(q_sample(flow, x0, 0.25, noise), 0.75 * x0 + 0.25 * noise)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_closed_form_equals_the_iterated_chain_in_distribution(name):
    """x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps has the law of t+1 steps x_k = sqrt(1-beta_k) x_{k-1} + sqrt(beta_k) z."""
    s, p = make_schedule(name, 100), make_path(f"ddpm-{name}", 100)
    g = torch.Generator().manual_seed(1)
    n, t = 200_000, 60
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for k in range(t + 1):
        x = (1 - s.betas[k]).sqrt() * x + s.betas[k].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    closed = q_sample(p, x0[:, None, None, None], (t + 1) / 100,
                      torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)).flatten()
    assert x.mean().item() == pytest.approx(closed.mean().item(), abs=0.01)
    assert x.var().item() == pytest.approx(closed.var().item(), rel=0.02)
    assert closed.mean().item() == pytest.approx(0.7 * s.alpha_bar[t].sqrt().item(), abs=0.01)


def test_posterior_matches_bayes_rule_for_a_gaussian_prior():
    """q(x_{t-1} | x_t, x0) on a DDPM table equals the product of q(x_t | x_{t-1}) and q(x_{t-1} | x0)."""
    s, p = make_schedule("cosine", 50), make_path("ddpm-cosine", 50)
    x0, xt = torch.tensor([[[[0.3]]]], dtype=torch.float64), torch.tensor([[[[-0.8]]]], dtype=torch.float64)
    for t in (1, 10, 49):
        ab_prev, beta = s.alpha_bar[t - 1].item(), s.betas[t].item()
        # Gaussian product: prior N(sqrt(ab_prev) x0, 1-ab_prev), likelihood in x_{t-1}: N(xt / sqrt(1-beta), beta/(1-beta))
        prec = 1 / (1 - ab_prev) + (1 - beta) / beta
        mean = (ab_prev**0.5 * x0 / (1 - ab_prev) + (1 - beta) ** 0.5 * xt / beta) / prec
        m, v = q_posterior(p, (t + 1) / 50, t / 50, x0, xt)
        assert m.item() == pytest.approx(mean.item(), rel=1e-9) and v == pytest.approx(1 / prec, rel=1e-9)
        assert s.posterior_variance[t].item() == pytest.approx(v, rel=1e-9)  # the table's beta_tilde agrees
    m, v = q_posterior(p, 4 / 50, 0.0, x0, xt)  # jumping to clean data returns x0, no noise
    assert m.item() == pytest.approx(0.3) and v == 0


def test_posterior_on_the_flow_path_matches_bayes_rule():
    """Not variance preserving: q(x_s | x_t, x0) from q(x_t | x_s) = N(a x_s, c^2) with a = alpha_t / alpha_s,
    c^2 = sigma_t^2 - a^2 sigma_s^2, and q(x_s | x0) = N(alpha_s x0, sigma_s^2)."""
    p = make_path("flow")
    x0, xt = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.8], dtype=torch.float64)
    for t, s in ((0.9, 0.5), (0.5, 0.4), (1.0, 0.3)):
        a = (1 - t) / (1 - s)
        c2 = t**2 - a**2 * s**2
        prec = 1 / s**2 + a**2 / c2
        mean = ((1 - s) * x0 / s**2 + a * xt / c2) / prec
        m, v = q_posterior(p, t, s, x0, xt)
        assert m.item() == pytest.approx(mean.item(), rel=1e-9) and v == pytest.approx(1 / prec, rel=1e-9)


@pytest.mark.parametrize("name", list(PATHS))
def test_eps_x0_v_u_conversions_round_trip_on_every_path(name):
    p = make_path(name)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)  # (64,)
    (alpha, sigma), (d_alpha, d_sigma) = p.alpha_sigma(t), p.derivatives(t)
    a, s, da, ds = (c[:, None] for c in (alpha, sigma, d_alpha, d_sigma))  # (64, 1)
    x_t = a * x0 + s * eps
    torch.testing.assert_close(x0_from_eps(x_t, eps, a, s), x0)
    torch.testing.assert_close(eps_from_x0(x_t, x0, a, s), eps)
    for back in (x0_eps_from_v(x_t, v_from_x0_eps(x0, eps, a, s), alpha, sigma),
                 x0_eps_from_u(x_t, u_from_x0_eps(x0, eps, da, ds), alpha, sigma, d_alpha, d_sigma)):
        torch.testing.assert_close(back[0], x0)
        torch.testing.assert_close(back[1], eps)
    if name == "flow":  # rectified flow: u = eps - x0
        torch.testing.assert_close(u_from_x0_eps(x0, eps, da, ds), eps - x0)
