"""Classifier-free guidance (Ho & Salimans 2022, eq. 6) as a denoiser wrapper, with guidance rescale
(Lin et al. 2024, sec. 3.4). Samplers see a Denoiser-like object and never change.

Where the two predictions are combined. x0_hat and eps_hat are affine functions of the network output with
the same x_t (x0 = (x_t - sigma eps) / alpha; v = alpha eps - sigma x0), and an affine map preserves every
combination whose weights sum to one: (1 - w) u + w c. So eps_u + w (eps_c - eps_u) gives the same step
whether the net predicts eps, x0 or v, and whether we combine its raw outputs or the converted (x0_hat,
eps_hat). We combine (x0_hat, eps_hat) because the two steps that are NOT affine must come after the
combination and must not depend on the parameterisation:
  - clipping x0_hat to [-1, 1] (the Denoiser's clip_x0): clipping each branch first and extrapolating with
    w > 1 would leave the guided x0_hat outside the data range again;
  - guidance rescale: it matches the standard deviation of the guided x0_hat to the conditional one, which is
    the quantity whose blow-up Lin et al. name as over-exposure; rescaling the raw output instead would mean
    something different for eps, x0 and v models.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from .conditioning.cond import Cond
from .denoiser import Denoiser
from .errors import UserError
from .denoiser import times
from .paths import coefficients
from .process import eps_from_x0


def rescale_x0(x0_cfg: torch.Tensor, x0_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Lin et al. 2024, eqs. 15-17: x_rescaled = x_cfg * std(x_cond) / std(x_cfg), blended with weight phi."""
    dims = tuple(range(1, x0_cfg.ndim))
    ratio = x0_cond.std(dim=dims, keepdim=True) / x0_cfg.std(dim=dims, keepdim=True).clamp(min=1e-8)
    return phi * (x0_cfg * ratio) + (1 - phi) * x0_cfg


class ClassifierFreeGuidance:
    """guided(x_t, t, cond) -> (x0_hat, eps_hat) with eps = eps_u + w (eps_c - eps_u).

    One batched call of the net on [x_t, x_t] with [cond, cond.null()]; w = 1 is the conditional prediction and
    w = 0 the unconditional one (each then needs one branch only, so they skip the other; rescale does not
    apply to them). cond=None is unconditional at any w. rescale = phi in [0, 1] (0 = off; Lin et al. use 0.7).
    A ControlNet's control map stays in both branches (guidance on the labels or prompt) unless drop_control, which
    makes the unconditional branch the base network without the map (guidance on the map itself).
    """

    def __init__(self, denoiser: Denoiser, w: float, *, rescale: float = 0.0, drop_control: bool = False):
        if not 0.0 <= rescale <= 1.0:
            raise UserError(f"Guidance rescale must be between 0 and 1, got {rescale}.")
        self.w, self.rescale, self.clip_x0 = float(w), float(rescale), denoiser.clip_x0
        self.drop_control = drop_control
        self.base = copy.copy(denoiser)  # the same wrapper, any kind, but clipping waits until after step 2
        self.base.clip_x0 = False
        self.net, self.path, self.prediction = denoiser.net, denoiser.path, denoiser.prediction

    def __call__(self, x_t: torch.Tensor, t, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        B = x_t.shape[0]
        t = times(t, B)  # a float, () or (B,) -> (B,) float64
        if cond is None or self.w == 0.0:  # w = 0 is exactly the unconditional prediction
            x0, eps = self.base(x_t, t, None if cond is None else cond.null(self.drop_control))
        elif self.w == 1.0:  # plain conditional sampling: one branch (rescale is the identity at w = 1)
            x0, eps = self.base(x_t, t, cond)
        else:
            # 1. both branches in one call: (2B, C, H, W) with conditions [cond, null]
            x0_both, eps_both = self.base(torch.cat([x_t, x_t]), torch.cat([t, t]), Cond.cat(cond, cond.null(self.drop_control)))
            (x0_c, x0_u), (eps_c, eps_u) = x0_both.chunk(2), eps_both.chunk(2)  # (2B, ...) -> 2 x (B, ...)
            # 2. extrapolate from the unconditional towards the conditional prediction
            x0, eps = x0_u + self.w * (x0_c - x0_u), eps_u + self.w * (eps_c - eps_u)
            # 3. optional rescale of x0_hat, with eps_hat recomputed so the pair stays consistent with x_t
            if self.rescale:
                x0 = rescale_x0(x0, x0_c, self.rescale)
                eps = eps_from_x0(x_t, x0, *coefficients(self.path, t, x_t))
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = eps_from_x0(x_t, x0, *coefficients(self.path, t, x_t))
        return x0, eps


def reads_guidance(net) -> bool:
    """True for a network that takes the guidance scale w as an input (an LCM student; models/condition.py)."""
    net = getattr(net, "module", net)  # DDP
    return getattr(net, "guidance_mlp", None) is not None


class EmbeddedGuidance:
    """guided(x_t, t, cond) -> (x0_hat, eps_hat) of a network that has guidance at scale w baked in (LCM, Luo et al.
    2023): one call on (B, ...) with w in the condition, no unconditional branch, so no second pass. cond=None (no
    label to guide towards) is passed on as it is."""

    def __init__(self, denoiser: Denoiser, w: float):
        self.w, self.base = float(w), denoiser
        self.net, self.path, self.prediction, self.clip_x0 = denoiser.net, denoiser.path, denoiser.prediction, \
            denoiser.clip_x0

    def __call__(self, x_t: torch.Tensor, t, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        if cond is not None:
            cond = replace(cond, guidance=torch.full((x_t.shape[0],), self.w, device=x_t.device))
        return self.base(x_t, t, cond)


def guided(denoiser: Denoiser, w: float | None, *, rescale: float = 0.0, drop_control: bool = False):
    """The denoiser itself when w is None (no guidance requested); for a network that reads w, the denoiser with w
    in its condition (rescale and drop_control do not apply: one sentence); else classifier-free guidance."""
    if w is None:
        return denoiser
    if reads_guidance(denoiser.net):
        if rescale or drop_control:
            raise UserError("This run has guidance distilled in (LCM): it takes --guidance W as an input, without "
                            "an unconditional branch, so --guidance-rescale and --drop-control do not apply.")
        return EmbeddedGuidance(denoiser, w)
    return ClassifierFreeGuidance(denoiser, w, rescale=rescale, drop_control=drop_control)
