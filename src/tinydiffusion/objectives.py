"""The training objective: sample t, corrupt x0, predict, weight; a per-example loss of shape (B,)."""
from __future__ import annotations

import torch

from .denoiser import check_prediction
from .errors import UserError
from .process import q_sample, v_from_x0_eps, alpha_sigma
from .schedules import Schedule, continuous_time, gather

WEIGHTINGS = ("none", "min-snr")


def loss_weight(snr: torch.Tensor, prediction: str, weighting: str, gamma: float = 5.0) -> torch.Tensor:
    """Per-example weight. min-SNR-gamma (Hang et al. 2023, eq. 13-ish): min(SNR, gamma) divided by the
    implicit weight of the target (eps: SNR, x0: 1, v: SNR + 1), so every prediction type gets the same
    effective weighting of the x0 error."""
    if weighting == "none":
        return torch.ones_like(snr)
    if weighting != "min-snr":
        raise UserError(f"Unknown loss weighting '{weighting}'; choose one of: {', '.join(WEIGHTINGS)}.")
    clipped = snr.clamp(max=gamma)
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]


def diffusion_loss(net, schedule: Schedule, x0: torch.Tensor, *, prediction: str = "eps",
                   weighting: str = "none", cond=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ho et al. 2020 Algorithm 1 (for eps; x0 and v targets likewise): E_t,eps ||target - net(x_t, t)||^2."""
    check_prediction(prediction)
    B = x0.shape[0]
    t = torch.randint(0, schedule.T, (B,), generator=generator).to(x0.device)  # t ~ U{0..T-1}
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = q_sample(schedule, x0, t, eps)
    out = net(x_t, continuous_time(t, schedule.T), cond).float()
    alpha, sigma = alpha_sigma(schedule, t, x0)
    target = {"eps": eps, "x0": x0, "v": v_from_x0_eps(x0, eps, alpha, sigma)}[prediction]
    mse = (out - target).pow(2).flatten(1).mean(1)  # (B,)
    snr = gather(schedule.alpha_bar / (1 - schedule.alpha_bar), t, mse)  # (B,)
    return loss_weight(snr, prediction, weighting) * mse
