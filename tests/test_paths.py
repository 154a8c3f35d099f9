"""Paths against their closed forms: endpoints, monotone log-SNR and its inverse, derivatives, the DDPM tables
exactly at their knots, the user-facing time conversion, bad names."""
from __future__ import annotations

import math

import pytest
import torch

from tinydiffusion.errors import UserError
from tinydiffusion.paths import PATHS, from_time, make_path, to_time
from tinydiffusion.schedules import make_schedule

F64 = torch.float64


@pytest.mark.parametrize("name", list(PATHS))
def test_endpoints_monotone_log_snr_and_its_inverse(name):
    p = make_path(name)
    alpha0, sigma0 = (float(v) for v in p.alpha_sigma(0.0))
    assert alpha0 == 1.0 and sigma0 == 0.0  # t = 0 is the data (a DDPM table's alpha_bar_{-1} = 1)
    alpha1, sigma1 = (float(v) for v in p.alpha_sigma(1.0))
    assert alpha1 < 0.01 and sigma1 > 0.99  # t = 1 is (nearly) pure noise
    t = torch.linspace(0.01, 0.99, 99, dtype=F64)
    lam = p.lam(t)
    assert (lam[1:] < lam[:-1]).all()  # log-SNR strictly decreasing in t
    torch.testing.assert_close(p.t_of_lambda(lam), t, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", list(PATHS))
def test_derivatives_match_finite_differences(name):
    p = make_path(name)
    t, h = torch.tensor([0.1234, 0.5003, 0.8765], dtype=F64), 1e-7  # off the DDPM knots: inside a segment
    (a_hi, s_hi), (a_lo, s_lo) = p.alpha_sigma(t + h), p.alpha_sigma(t - h)
    d_alpha, d_sigma = p.derivatives(t)
    torch.testing.assert_close(d_alpha, (a_hi - a_lo) / (2 * h), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d_sigma, (s_hi - s_lo) / (2 * h), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_paths_are_the_tables_exactly_at_their_training_grid(schedule):
    s, p = make_schedule(schedule, 1000), make_path(f"ddpm-{schedule}", 1000)
    t = (torch.arange(1000, dtype=F64) + 1) / 1000  # t_k = (k + 1) / T
    alpha, sigma = p.alpha_sigma(t)
    assert torch.equal(alpha, s.sqrt_alpha_bar) and torch.equal(sigma, s.sqrt_one_minus_alpha_bar)
    # between two knots log(alpha_bar) is linear in t
    mid = p.squares(torch.tensor(10.5 / 1000, dtype=F64))[0]
    assert mid.log().item() == pytest.approx(0.5 * (s.alpha_bar[9].log() + s.alpha_bar[10].log()).item(), rel=1e-12)


def test_closed_forms_of_the_continuous_paths():
    t = torch.tensor([0.2, 0.5, 0.7], dtype=F64)
    alpha, sigma = make_path("vp-cosine").alpha_sigma(t)
    torch.testing.assert_close(alpha, torch.cos(math.pi * t / 2))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(3, dtype=F64))
    flow = make_path("flow")
    alpha, sigma = flow.alpha_sigma(t)
    assert torch.equal(alpha, 1 - t) and torch.equal(sigma, t) and not flow.variance_preserving
    torch.testing.assert_close(flow.lam(t), torch.log((1 - t) / t))


def test_user_time_conversion_endpoints():
    p, flow = make_path("ddpm-linear", 1000), make_path("flow")
    assert to_time(p, 999) == 1.0 and to_time(p, 0) == pytest.approx(1 / 1000)  # the last step is pure noise
    assert from_time(p, 1.0) == 999 and from_time(p, 0.0) == -1  # t = 0 is clean data, "step -1"
    assert to_time(flow, 0.25) == 0.25 and from_time(flow, 0.25) == 0.25


def test_unknown_path_is_one_sentence():
    with pytest.raises(UserError, match="Unknown path 'rectified'; choose one of: ddpm-linear"):
        make_path("rectified")
