"""The Denoiser: any prediction type gives the same (x0_hat, eps_hat) for the exact denoiser of Gaussian data."""
from __future__ import annotations

import pytest
import torch

from gaussian_oracle import denoiser, noise


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_denoiser_gives_the_same_estimates_for_every_prediction_type(t):
    x_t = noise(256)
    x0_eps, eps_eps = denoiser("eps")(x_t, t)
    for prediction in ("x0", "v"):
        x0_hat, eps_hat = denoiser(prediction)(x_t, t)
        # float32 net outputs; x0 from eps divides by alpha_999 = 0.0064, hence the absolute tolerance
        torch.testing.assert_close(x0_hat, x0_eps, rtol=1e-4, atol=2e-4)
        torch.testing.assert_close(eps_hat, eps_eps, rtol=1e-4, atol=2e-4)
