"""The Denoiser: every prediction type gives the same (x0_hat, eps_hat) for the exact denoiser of Gaussian data,
on every path."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.errors import UserError
from tinydiffusion.paths import make_path

from gaussian_oracle import denoiser, noise


@pytest.mark.parametrize("path", ["ddpm-linear", "vp-cosine", "flow"])
@pytest.mark.parametrize("t", [0.001, 0.002, 0.251, 0.9, 1.0])
def test_denoiser_gives_the_same_estimates_for_every_prediction_type(path, t):
    path, x_t = make_path(path), noise(256)
    reference = "eps" if path.T else "x0"  # eps cannot give x0 where alpha = 0 (flow at t = 1)
    x0_ref, eps_ref = denoiser(reference, path)(x_t, t)
    for prediction in ("eps", "x0", "v", "u"):
        if prediction == "eps" and not path.T and t == 1.0:
            continue
        x0_hat, eps_hat = denoiser(prediction, path)(x_t, t)
        # float32 net outputs; x0 from eps divides by alpha(1) = 0.0064 on DDPM, hence the absolute tolerance
        torch.testing.assert_close(x0_hat, x0_ref, rtol=1e-4, atol=3e-4)
        torch.testing.assert_close(eps_hat, eps_ref, rtol=1e-4, atol=3e-4)


def test_unknown_prediction_is_one_sentence():
    with pytest.raises(UserError, match="Unknown prediction type 'velocity'"):
        denoiser("velocity")
