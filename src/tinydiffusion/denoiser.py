"""The one wrapper between a network and the samplers: any prediction type -> (x0_hat, eps_hat)."""
from __future__ import annotations

import torch

from .registry import Registry
from .process import alpha_sigma, eps_from_x0, x0_eps_from_v, x0_from_eps
from .schedules import Schedule, continuous_time

PREDICTIONS = Registry("prediction type")
PREDICTIONS.add("eps", text="the noise eps (Ho et al. 2020)")
PREDICTIONS.add("x0", text="the clean image x0")
PREDICTIONS.add("v", text="v = alpha eps - sigma x0 (Salimans & Ho 2022): no 1/alpha blow-up of x0_hat at high noise")
check_prediction = PREDICTIONS.check


class Denoiser:
    """denoiser(x_t, t, cond) -> (x0_hat, eps_hat) for a net predicting eps, x0 or v.

    t is an integer step in {0..T-1} (an int or a (B,) tensor); the net sees continuous time (t + 1) / T.
    cond is passed to the net as it is (a Cond, or None).
    With clip_x0, x0_hat is clamped to the data range [-1, 1] and eps_hat recomputed to match it.
    """

    def __init__(self, net, schedule: Schedule, prediction: str = "eps", clip_x0: bool = False):
        self.net, self.schedule = net, schedule
        self.prediction, self.clip_x0 = check_prediction(prediction), clip_x0

    def __call__(self, x_t: torch.Tensor, t, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])  # () or (B,) -> (B,)
        out = self.net(x_t, continuous_time(t, self.schedule.T), cond).float()
        alpha, sigma = alpha_sigma(self.schedule, t, x_t)
        if self.prediction == "eps":
            x0, eps = x0_from_eps(x_t, out, alpha, sigma), out
        elif self.prediction == "x0":
            x0, eps = out, eps_from_x0(x_t, out, alpha, sigma)
        else:
            x0, eps = x0_eps_from_v(x_t, out, alpha, sigma)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = eps_from_x0(x_t, x0, alpha, sigma)
        return x0, eps
