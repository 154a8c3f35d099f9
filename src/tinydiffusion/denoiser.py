"""The one wrapper between a network and the samplers: any prediction type on any path -> (x0_hat, eps_hat)."""
from __future__ import annotations

import torch

from .paths import Path, broadcast
from .process import eps_from_x0, x0_eps_from_u, x0_eps_from_v, x0_from_eps
from .registry import Registry

PREDICTIONS = Registry("prediction type")
PREDICTIONS.add("eps", text="the noise eps (Ho et al. 2020)")
PREDICTIONS.add("x0", text="the clean image x0")
PREDICTIONS.add("v", text="v = alpha eps - sigma x0 (Salimans & Ho 2022): no 1/alpha blow-up of x0_hat at high noise")
PREDICTIONS.add("u", text="the velocity u = dx_t/dt = alpha' x0 + sigma' eps (flow matching; rectified flow: eps - x0)")
for _base in ("eps", "x0", "v", "u"):
    PREDICTIONS.add(f"cm-{_base}", text=f"a consistency model f = c_skip x + c_out x0_hat({_base}) with f(x, t_min) = x "
                    "(Song et al. 2023; consistency.py)")
check_prediction = PREDICTIONS.check


def times(t, B: int) -> torch.Tensor:
    """A float or () / (B,) tensor of times -> (B,) float64."""
    return torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(B)


def estimates(path: Path, prediction: str, x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor):
    """(x0_hat, eps_hat) implied by a network output `out` at times t (B,) float64 on `path`."""
    if prediction.startswith("cm-"):  # consistency: the base prediction's x0_hat behind the boundary condition
        from .consistency import consistency_x0
        x0 = consistency_x0(path, x_t, estimates(path, prediction[3:], x_t, out, t)[0], t)
        return x0, eps_from_x0(x_t, x0, *(broadcast(c, x_t) for c in path.alpha_sigma(t)))
    alpha, sigma = path.alpha_sigma(t)  # (B,) float64
    if prediction == "v":
        return x0_eps_from_v(x_t, out, alpha, sigma)
    if prediction == "u":
        return x0_eps_from_u(x_t, out, alpha, sigma, *path.derivatives(t))
    a, s = broadcast(alpha, x_t), broadcast(sigma, x_t)  # (B, 1, 1, 1) in x_t's dtype
    if prediction == "eps":
        return x0_from_eps(x_t, out, a, s), out
    return out, eps_from_x0(x_t, out, a, s)


class Denoiser:
    """denoiser(x_t, t, cond) -> (x0_hat, eps_hat) for a net predicting eps, x0, v or u on `path`.

    t is continuous time in [0, 1] (a float or a (B,) tensor, float64 preferred: the path's coefficients are
    formed in float64); the net sees it as float32. cond is passed to the net as it is (a Cond, or None).
    With clip_x0, x0_hat is clamped to the data range [-1, 1] and eps_hat recomputed to match it.
    """

    def __init__(self, net, path: Path, prediction: str = "eps", clip_x0: bool = False):
        self.net, self.path = net, path
        self.prediction, self.clip_x0 = check_prediction(prediction), clip_x0

    def __call__(self, x_t: torch.Tensor, t, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        t = times(t, x_t.shape[0])  # (B,) float64
        out = self.net(x_t, t.to(x_t.device, torch.float32), cond).float()
        x0, eps = estimates(self.path, self.prediction, x_t, out, t)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = eps_from_x0(x_t, x0, *(broadcast(c, x_t) for c in self.path.alpha_sigma(t)))
        return x0, eps
