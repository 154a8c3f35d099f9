"""The training objective: sample t, corrupt x0, predict, weight; a per-example loss of shape (B,)."""
from __future__ import annotations

import torch

from .denoiser import check_prediction
from .registry import Registry
from .process import q_sample, v_from_x0_eps, alpha_sigma
from .schedules import Schedule, continuous_time, gather

WEIGHTINGS = Registry("loss weighting")
WEIGHTINGS.add("none", text="every t weighs the same in the chosen target's MSE (Ho et al. 2020)")
WEIGHTINGS.add("min-snr", text="min(SNR, 5) on the x0 error, for every prediction type (Hang et al. 2023)")
T_SAMPLINGS = Registry("time sampling")
T_SAMPLINGS.add("uniform", text="t ~ U{0..T-1} (Ho et al. 2020, Algorithm 1)")
T_SAMPLINGS.add("importance", text="t drawn in proportion to the loss weight, which the loss then replaces by its mean")
T_SAMPLINGS.add("lognormal", text="log-SNR ~ N(2.4, 2.4), EDM's noise levels (Karras et al. 2022), snapped to a step")


def sample_t(schedule: Schedule, B: int, kind: str = "uniform", generator: torch.Generator | None = None,
             weights: torch.Tensor | None = None, logsnr_mean: float = 2.4, logsnr_std: float = 2.4) -> torch.Tensor:
    """Training steps (B,).
    - uniform: t ~ U{0..T-1} (Ho et al. 2020, Algorithm 1).
    - importance: t drawn in proportion to `weights` (T,), the loss weight of each step, which the loss then
      replaces by its mean: the same objective in expectation, but no compute spent on examples whose weight
      is near 0 (min-SNR-5 with v gives 54 % of the linear schedule's steps under a tenth of its peak weight).
    - lognormal: log-SNR ~ N(logsnr_mean, logsnr_std) snapped to the nearest step. EDM's ln(sigma) ~ N(-1.2, 1.2)
      (Karras et al. 2022, sec. 5) is log-SNR = -2 ln(sigma) ~ N(2.4, 2.4)."""
    T_SAMPLINGS.check(kind)
    if kind == "uniform":
        return torch.randint(0, schedule.T, (B,), generator=generator)
    if kind == "importance":
        return torch.multinomial(weights, B, replacement=True, generator=generator)
    lam = logsnr_mean + logsnr_std * torch.randn(B, generator=generator, dtype=torch.float64)  # (B,)
    logsnr = (schedule.alpha_bar / (1 - schedule.alpha_bar)).log()  # (T,), decreasing in t
    return (logsnr[None, :] - lam[:, None]).abs().argmin(1)  # (B, T) -> (B,)


def loss_weight(snr: torch.Tensor, prediction: str, weighting: str, gamma: float = 5.0) -> torch.Tensor:
    """Per-example weight. min-SNR-gamma (Hang et al. 2023, eq. 13-ish): min(SNR, gamma) divided by the
    implicit weight of the target (eps: SNR, x0: 1, v: SNR + 1), so every prediction type gets the same
    effective weighting of the x0 error."""
    if WEIGHTINGS.check(weighting) == "none":
        return torch.ones_like(snr)
    clipped = snr.clamp(max=gamma)
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]


def diffusion_loss(net, schedule: Schedule, x0: torch.Tensor, *, prediction: str = "eps",
                   weighting: str = "none", t_sampling: str = "uniform", cond=None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Ho et al. 2020 Algorithm 1 (for eps; x0 and v targets likewise): E_t,eps w_t ||target - net(x_t, t)||^2."""
    check_prediction(prediction)
    B = x0.shape[0]
    snr = schedule.alpha_bar / (1 - schedule.alpha_bar)  # (T,)
    w = loss_weight(snr, prediction, weighting)  # (T,) float64
    t = sample_t(schedule, B, t_sampling, generator, weights=w).to(x0.device)  # (B,), t ~ U{0..T-1} by default
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = q_sample(schedule, x0, t, eps)
    out = net(x_t, continuous_time(t, schedule.T), cond).float()
    alpha, sigma = alpha_sigma(schedule, t, x0)
    target = {"eps": eps, "x0": x0, "v": v_from_x0_eps(x0, eps, alpha, sigma)}[prediction]
    mse = (out - target).pow(2).flatten(1).mean(1)  # (B,)
    if t_sampling == "importance":  # t was drawn with probability w_t / sum(w): each example weighs mean(w)
        return w.mean().to(mse.dtype) * mse
    return gather(w, t, mse) * mse
