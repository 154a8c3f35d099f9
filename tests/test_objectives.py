"""The training objective: min-SNR weights, the same effective x0 weighting for every prediction type, and the time samplers (importance, log-normal) against their formulas."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.errors import UserError
from tinydiffusion.objectives import diffusion_loss, knots, loss_weight, sample_t
from tinydiffusion.paths import make_path

LINEAR = make_path("ddpm-linear", 1000)
FLOW = make_path("flow")
SCHED = LINEAR.schedule


def test_min_snr_weights_match_their_formulas():
    t = knots(LINEAR)
    snr = SCHED.alpha_bar / (1 - SCHED.alpha_bar)
    gamma = 5.0
    expected = {"eps": snr.clamp(max=gamma) / snr, "x0": snr.clamp(max=gamma), "v": snr.clamp(max=gamma) / (snr + 1)}
    for prediction, w in expected.items():
        torch.testing.assert_close(loss_weight(LINEAR, t, prediction, "min-snr", gamma), w)
        torch.testing.assert_close(loss_weight(LINEAR, t, prediction, "none"), torch.ones_like(snr))
    tf = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)  # flow: SNR = ((1 - t) / t)^2, u's weight 1 / t^2
    snr_f = ((1 - tf) / tf) ** 2
    torch.testing.assert_close(loss_weight(FLOW, tf, "u", "min-snr"), snr_f.clamp(max=gamma) * tf**2)
    torch.testing.assert_close(loss_weight(FLOW, tf, "v", "min-snr"),
                               snr_f.clamp(max=gamma) * tf**2 / ((1 - tf) ** 2 + tf**2) ** 2)
    with pytest.raises(UserError, match="weighting"):
        loss_weight(LINEAR, t, "eps", "max-snr")


@pytest.mark.parametrize("path", [LINEAR, FLOW])
def test_min_snr_weights_the_x0_error_the_same_for_every_prediction_type(path):
    """Hang et al. 2023: the weighted loss is min(SNR, gamma) ||x0_hat - x0||^2 whatever the net predicts, on
    any path."""
    B = 64
    x0 = torch.randn(B, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    delta = 0.1 * torch.randn(B, 1, 2, 2, generator=torch.Generator().manual_seed(3))  # the net's x0 error

    def net_for(prediction):
        def net(x_t, t, cond=None):
            t = t.double()
            if path.T:
                t = (t * path.T).round() / path.T  # float32 time back to the knot
            (alpha, sigma), (da, ds) = path.alpha_sigma(t), path.derivatives(t)
            alpha, sigma, da, ds = (c.view(-1, 1, 1, 1) for c in (alpha, sigma, da, ds))  # (B,) -> (B, 1, 1, 1)
            x0_hat = x0 + delta
            eps_hat = (x_t - alpha * x0_hat) / sigma
            out = {"eps": eps_hat, "x0": x0_hat, "v": alpha * eps_hat - sigma * x0_hat, "u": da * x0_hat + ds * eps_hat}
            return out[prediction].float()
        return net

    t = sample_t(path, B, "uniform", torch.Generator().manual_seed(4))  # what diffusion_loss draws first
    a2, s2 = path.squares(t)
    expected = (a2 / s2).clamp(max=5.0) * delta.double().pow(2).flatten(1).mean(1)
    for prediction in ("eps", "x0", "v", "u"):
        loss = diffusion_loss(net_for(prediction), path, x0, prediction=prediction, weighting="min-snr",
                              generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(loss.double(), expected, rtol=3e-3, atol=1e-6)


def test_lognormal_time_sampling_draws_edm_log_snr_and_snaps_to_the_nearest_step():
    g = torch.Generator().manual_seed(0)
    t = (sample_t(LINEAR, 20_000, "lognormal", g) * 1000).round().long() - 1  # the knots back to their steps
    logsnr = (SCHED.alpha_bar / (1 - SCHED.alpha_bar)).log()  # (T,), from 9.2 at t = 0 to -10.1 at t = T-1
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
    u = (sample_t(LINEAR, 20_000, "uniform", torch.Generator().manual_seed(1)) * 1000).round().long() - 1
    assert int(u.min()) == 0 and int(u.max()) == LINEAR.T - 1 and abs(u.double().mean().item() - 499.5) < 10
    with pytest.raises(UserError, match="time sampling"):
        sample_t(LINEAR, 4, "beta")


def test_importance_time_sampling_keeps_the_weighted_objective_in_expectation():
    """E_{t ~ w/sum w}[mean(w) mse_t] = E_{t ~ U}[w_t mse_t]: with a net whose error depends only on t, the
    two estimates agree to Monte-Carlo error."""
    schedule = SCHED
    x0 = torch.zeros(4096, 1, 2, 2)

    def net(x_t, t, cond=None):  # v-prediction error grows with t: target v plus (t / T) everywhere
        alpha, sigma = schedule.sqrt_alpha_bar, schedule.sqrt_one_minus_alpha_bar
        k = (t.double() * 1000 - 1).round().long()  # continuous time back to the integer step
        eps = x_t.double() / sigma[k].view(-1, 1, 1, 1)  # x0 = 0, so x_t = sigma eps
        return (alpha[k].view(-1, 1, 1, 1) * eps + t.double().view(-1, 1, 1, 1)).float()

    losses = {kind: diffusion_loss(net, LINEAR, x0, prediction="v", weighting="min-snr", t_sampling=kind,
                                   generator=torch.Generator().manual_seed(0)).mean().item()
              for kind in ("uniform", "importance")}
    assert losses["importance"] == pytest.approx(losses["uniform"], rel=0.05), losses


def test_logit_normal_time_sampling_matches_its_density():
    """t = sigmoid(m + s n): logit(t) ~ N(m, s) exactly; a histogram of t follows the logit-normal density
    P(a < t < b) = Phi((logit b - m) / s) - Phi((logit a - m) / s) (Esser et al. 2024, eq. 19)."""
    m, s = 0.5, 0.8
    t = sample_t(FLOW, 200_000, "logit-normal", torch.Generator().manual_seed(5), logit_mean=m, logit_std=s)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - m) < 0.01 and abs(logit.std().item() - s) < 0.01
    edges = torch.linspace(0.05, 0.95, 10, dtype=torch.float64)
    counts = torch.histc(t, bins=9, min=0.05, max=0.95) / len(t)  # empirical probability per bin
    cdf = 0.5 * (1 + torch.erf((torch.log(edges / (1 - edges)) - m) / (s * 2**0.5)))  # P(t <= edge)
    torch.testing.assert_close(counts, cdf.diff(), rtol=0.02, atol=5e-4)  # ~5 standard errors of the rarest bin


def test_continuous_paths_draw_continuous_times_and_refuse_importance():
    t = sample_t(FLOW, 10_000, "uniform", torch.Generator().manual_seed(6))
    assert 0 < t.min() and t.max() <= 1 and len(t.unique()) == 10_000 and abs(t.mean().item() - 0.5) < 0.01
    with pytest.raises(UserError, match="importance.*needs a DDPM path"):
        sample_t(FLOW, 4, "importance")
