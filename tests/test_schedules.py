"""Noise schedules against their closed forms (Ho et al. 2020; Nichol & Dhariwal 2021)."""
import math

import pytest
import torch

from tinydiffusion.errors import UserError
from tinydiffusion.schedules import make_schedule


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


def test_unknown_schedule_is_a_user_error():
    with pytest.raises(UserError, match="Unknown schedule 'quadratic'"):
        make_schedule("quadratic")
    with pytest.raises(UserError):
        make_schedule("linear", 1)


