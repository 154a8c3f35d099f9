"""The training objective: min-SNR weights, the same effective x0 weighting for every prediction type, and the time samplers (importance, log-normal) against their formulas."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.errors import UserError
from tinydiffusion.objectives import diffusion_loss, loss_weight
from tinydiffusion.schedules import make_schedule

LINEAR = make_schedule("linear", 1000)


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


def test_importance_time_sampling_keeps_the_weighted_objective_in_expectation():
    """E_{t ~ w/sum w}[mean(w) mse_t] = E_{t ~ U}[w_t mse_t]: with a net whose error depends only on t, the
    two estimates agree to Monte-Carlo error."""
    schedule = make_schedule("linear", 1000)
    x0 = torch.zeros(4096, 1, 2, 2)

    def net(x_t, t, cond=None):  # v-prediction error grows with t: target v plus (t / T) everywhere
        alpha, sigma = schedule.sqrt_alpha_bar, schedule.sqrt_one_minus_alpha_bar
        k = (t.double() * 1000 - 1).round().long()  # continuous time back to the integer step
        eps = x_t.double() / sigma[k].view(-1, 1, 1, 1)  # x0 = 0, so x_t = sigma eps
        return (alpha[k].view(-1, 1, 1, 1) * eps + t.double().view(-1, 1, 1, 1)).float()

    losses = {kind: diffusion_loss(net, schedule, x0, prediction="v", weighting="min-snr", t_sampling=kind,
                                   generator=torch.Generator().manual_seed(0)).mean().item()
              for kind in ("uniform", "importance")}
    assert losses["importance"] == pytest.approx(losses["uniform"], rel=0.05), losses
