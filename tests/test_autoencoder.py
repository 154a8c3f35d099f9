"""The latent-diffusion autoencoder (models/autoencoder.py), its loss (train/autoencoder.py) and the KL formula."""
import math

import pytest
import torch

from tinydiffusion.errors import UserError
from tinydiffusion.models import build_model, is_autoencoder
from tinydiffusion.objectives import gaussian_kl
from tinydiffusion.train.autoencoder import autoencoder_loss


@pytest.mark.parametrize("name, latent", [("ae-f4c4", (4, 7, 7)), ("ae-f2c2", (2, 14, 14))])
def test_the_registered_autoencoders_map_28px_digits_to_their_latent_grids(name, latent):
    ae = build_model(name, 1, 28, 0)
    assert is_autoencoder(name) and not is_autoencoder("unet-patch")
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    mean, log_var = ae.encode(x)
    assert mean.shape == log_var.shape == (3, *latent)
    assert ae.decode(mean).shape == (3, 1, 28, 28)
    recon, m, lv = ae(x, torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and torch.equal(m, mean)


def test_an_autoencoder_refuses_sizes_it_cannot_halve_and_labels():
    with pytest.raises(UserError, match="divisible by 4"):
        build_model("ae-f4c4", 1, 30, 0)
    with pytest.raises(UserError, match="not conditioned"):
        build_model("ae-f4c4", 1, 28, 10)


def test_the_kl_term_matches_torch_distributions_and_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mean, log_var = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64), \
        torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    closed = gaussian_kl(mean, log_var)  # (2,)
    assert torch.allclose(closed, torch.distributions.kl_divergence(q, p).flatten(1).sum(1))
    z = q.sample((200_000,))  # E_q[log q(z) - log p(z)]
    mc = (q.log_prob(z) - p.log_prob(z)).flatten(2).sum(2).mean(0)
    assert torch.allclose(mc, closed, rtol=0.02)
    assert torch.equal(gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4)), torch.zeros(1))  # q = p


def test_the_loss_is_the_l1_sum_plus_the_weighted_kl_per_image():
    torch.manual_seed(0)
    ae = build_model("ae-f4c4", 1, 28, 0, channels=4)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    loss, l1, kl = autoencoder_loss(ae, x, 0.5, torch.Generator().manual_seed(1))
    recon, mean, log_var = ae(x, torch.Generator().manual_seed(1))
    want_l1 = (recon - x).abs().flatten(1).sum(1)
    want = (want_l1 + 0.5 * gaussian_kl(mean, log_var)).mean()
    assert torch.allclose(loss, want) and math.isclose(float(l1.detach()), float(want_l1.detach().mean()) / 784, rel_tol=1e-5)
    assert math.isclose(float(kl.detach()), float(gaussian_kl(mean, log_var).detach().mean()) / (4 * 7 * 7), rel_tol=1e-5)
