"""The forward process against its closed forms: endpoints, the iterated chain, the posterior, the x0/eps/v conversions (Ho et al. 2020; Salimans & Ho 2022)."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.process import (
    eps_from_x0,
    q_posterior,
    q_posterior_skip,
    q_sample,
    v_from_x0_eps,
    x0_eps_from_v,
    x0_from_eps,
)
from tinydiffusion.schedules import make_schedule


def test_q_sample_endpoints():
    s = make_schedule("linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4096, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    x_first = q_sample(s, x0, torch.zeros(len(x0), dtype=torch.long), noise)
    assert (x_first - x0).pow(2).mean().sqrt() < 0.015  # sqrt(1 - 0.9999) = 0.01 times unit noise
    x_last = q_sample(s, x0, torch.full((len(x0),), 999), noise)
    assert abs(x_last.mean().item()) < 0.01 and abs(x_last.var().item() - 1) < 0.02


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_closed_form_equals_the_iterated_chain_in_distribution(name):
    """x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps has the law of t+1 steps x_k = sqrt(1-beta_k) x_{k-1} + sqrt(beta_k) z."""
    s = make_schedule(name, 100)
    g = torch.Generator().manual_seed(1)
    n, t = 200_000, 60
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for k in range(t + 1):
        x = (1 - s.betas[k]).sqrt() * x + s.betas[k].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    closed = q_sample(s, x0[:, None, None, None], torch.full((n,), t), torch.randn(n, 1, 1, 1, generator=g,
                                                                                   dtype=torch.float64)).flatten()
    assert x.mean().item() == pytest.approx(closed.mean().item(), abs=0.01)
    assert x.var().item() == pytest.approx(closed.var().item(), rel=0.02)
    assert closed.mean().item() == pytest.approx(0.7 * s.alpha_bar[t].sqrt().item(), abs=0.01)


def test_posterior_matches_bayes_rule_for_a_gaussian_prior():
    """q(x_{t-1} | x_t, x0) from the tables equals the product of q(x_t | x_{t-1}) and q(x_{t-1} | x0)."""
    s = make_schedule("cosine", 50)
    for t in (1, 10, 49):
        ab_prev, beta = s.alpha_bar[t - 1].item(), s.betas[t].item()
        x0, xt = torch.tensor([[[[0.3]]]], dtype=torch.float64), torch.tensor([[[[-0.8]]]], dtype=torch.float64)
        # Gaussian product: prior N(sqrt(ab_prev) x0, 1-ab_prev), likelihood in x_{t-1}: N(xt / sqrt(1-beta), beta/(1-beta))
        prec = 1 / (1 - ab_prev) + (1 - beta) / beta
        mean = (ab_prev**0.5 * x0 / (1 - ab_prev) + (1 - beta) ** 0.5 * xt / beta) / prec
        m, v = q_posterior(s, x0, xt, torch.tensor([t]))
        assert m.item() == pytest.approx(mean.item(), rel=1e-9) and v.item() == pytest.approx(1 / prec, rel=1e-9)
        m2, v2 = q_posterior_skip(s.alpha_bar[t].item(), ab_prev, x0, xt)  # the skip form agrees for s = t-1
        assert m2.item() == pytest.approx(m.item(), rel=1e-9) and v2 == pytest.approx(v.item(), rel=1e-9)
    m, v = q_posterior_skip(s.alpha_bar[3].item(), 1.0, x0, xt)  # jumping to clean data returns x0, no noise
    assert m.item() == pytest.approx(0.3) and v == 0


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
