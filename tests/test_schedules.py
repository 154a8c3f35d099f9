"""Schedules and the forward process against their closed forms (Ho et al. 2020; Nichol & Dhariwal 2021)."""
import math

import pytest
import torch

from tinydiffusion.errors import UserError
from tinydiffusion.process import q_posterior, q_posterior_skip, q_sample
from tinydiffusion.schedules import continuous_time, make_schedule


def test_linear_schedule_matches_the_ddpm_paper():
    s = make_schedule("linear", 1000)
    assert s.betas.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alpha_bar[0].item() == pytest.approx(0.9999, abs=1e-12)  # alpha_bar[0] = 1 - beta[0]
    assert s.alpha_bar[999].item() == pytest.approx(4.04e-5, rel=0.01)
    # alpha_bar is the running product of alphas, and concave in t for the linear schedule (course fact)
    assert torch.allclose(s.alpha_bar, torch.cumprod(1 - s.betas, 0))
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()


def test_cosine_schedule_is_monotone_in_unit_interval_and_follows_its_formula():
    T, s_off = 1000, 0.008
    s = make_schedule("cosine", T)
    assert ((s.alpha_bar > 0) & (s.alpha_bar < 1)).all()
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    f = lambda t: math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):  # away from the clip at the very end, alpha_bar_t = f(t+1)/f(0)
        assert s.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() <= 0.999


def test_cosine_destroys_information_more_evenly_than_linear():
    lin, cos = make_schedule("linear"), make_schedule("cosine")
    # at mid-chain the linear schedule has already removed far more signal
    assert lin.alpha_bar[500] < 0.1 < 0.4 < cos.alpha_bar[500]


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [10, 200, 1000])
def test_tables_agree_with_their_definitions(name, T):
    s = make_schedule(name, T)
    assert s.T == T and s.alpha_bar_prev[0] == 1.0
    assert torch.allclose(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    assert torch.allclose(s.sqrt_alpha_bar**2 + s.sqrt_one_minus_alpha_bar**2, torch.ones(T, dtype=torch.float64))
    assert s.posterior_variance[0] == 0  # the last reverse step adds no noise
    assert (s.posterior_variance[1:] <= s.betas[1:]).all()


def test_continuous_time_endpoints():
    T = 1000
    assert continuous_time(torch.tensor([T - 1]), T).item() == 1.0  # last step is pure noise
    assert continuous_time(torch.tensor([0]), T).item() == pytest.approx(1 / T)


def test_unknown_schedule_is_a_user_error():
    with pytest.raises(UserError, match="Unknown schedule 'quadratic'"):
        make_schedule("quadratic")
    with pytest.raises(UserError):
        make_schedule("linear", 1)


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
