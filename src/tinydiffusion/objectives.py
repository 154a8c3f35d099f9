"""The training objective: sample t, corrupt x0, predict, weight; a per-example loss of shape (B,)."""
from __future__ import annotations

import torch

from .denoiser import check_prediction
from .errors import UserError
from .paths import Path, broadcast
from .process import q_sample, u_from_x0_eps, v_from_x0_eps
from .registry import Registry

WEIGHTINGS = Registry("loss weighting")
WEIGHTINGS.add("none", text="every t weighs the same in the chosen target's MSE (Ho et al. 2020)")
WEIGHTINGS.add("min-snr", text="min(SNR, 5) on the x0 error, for every prediction type and path (Hang et al. 2023)")
T_SAMPLINGS = Registry("time sampling")
T_SAMPLINGS.add("uniform", text="t ~ U{0..T-1} on a DDPM path (Ho et al. 2020, Algorithm 1), t ~ U(0, 1) on the others")
T_SAMPLINGS.add("importance", text="DDPM paths: t drawn in proportion to the loss weight, which the loss then "
                                   "replaces by its mean")
T_SAMPLINGS.add("lognormal", text="log-SNR ~ N(2.4, 2.4), EDM's noise levels (Karras et al. 2022); snapped to a "
                                  "step on a DDPM path")
T_SAMPLINGS.add("logit-normal", text="t = sigmoid(N(m, s)), m = logit_mean, s = logit_std (Esser et al. 2024, SD3)")


def sample_t(path: Path, B: int, kind: str = "uniform", generator: torch.Generator | None = None,
             weights: torch.Tensor | None = None, logsnr_mean: float = 2.4, logsnr_std: float = 2.4,
             logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
    """Training times (B,) float64 in (0, 1]; on a DDPM path they are knots t_k = (k + 1) / T of its table.
    - uniform: k ~ U{0..T-1} (Ho et al. 2020, Algorithm 1); t ~ U(0, 1) on a continuous path.
    - importance (DDPM paths): k drawn in proportion to `weights` (T,), the loss weight of each step, which the
      loss then replaces by its mean: the same objective in expectation, but no compute spent on examples whose
      weight is near 0 (min-SNR-5 with v gives 54 % of the linear schedule's steps under a tenth of its peak).
    - lognormal: 2 lambda = log-SNR ~ N(logsnr_mean, logsnr_std), snapped to the nearest step on a DDPM path.
      EDM's ln(sigma) ~ N(-1.2, 1.2) (Karras et al. 2022, sec. 5) is log-SNR = -2 ln(sigma) ~ N(2.4, 2.4).
    - logit-normal: t = sigmoid(logit_mean + logit_std n), n ~ N(0, 1) (Esser et al. 2024, eq. 19)."""
    T_SAMPLINGS.check(kind)
    if kind == "importance" and path.T is None:
        raise UserError(f"t_sampling 'importance' needs a DDPM path (a table of steps); path '{path.name}' is "
                        "continuous: use uniform, logit-normal or lognormal.")
    if path.T is not None and kind != "logit-normal":
        if kind == "uniform":
            k = torch.randint(0, path.T, (B,), generator=generator)
        elif kind == "importance":
            k = torch.multinomial(weights, B, replacement=True, generator=generator)
        else:
            lam = logsnr_mean + logsnr_std * torch.randn(B, generator=generator, dtype=torch.float64)  # (B,)
            logsnr = 2 * path.lam(knots(path))  # (T,), decreasing in t
            k = (logsnr[None, :] - lam[:, None]).abs().argmin(1)  # (B, T) -> (B,)
        return (k.to(torch.float64) + 1) / path.T
    if kind == "uniform":
        return 1 - torch.rand(B, generator=generator, dtype=torch.float64)  # (0, 1]: never exactly clean data
    if kind == "lognormal":
        lam = logsnr_mean + logsnr_std * torch.randn(B, generator=generator, dtype=torch.float64)
        return path.t_of_lambda(lam / 2)
    t = torch.sigmoid(logit_mean + logit_std * torch.randn(B, generator=generator, dtype=torch.float64))
    if path.T is not None:  # snap to the nearest knot of the table
        t = ((t * path.T).round().clamp(1, path.T)) / path.T
    return t


def knots(path: Path) -> torch.Tensor:
    """The training grid t_k = (k + 1) / T of a DDPM path, (T,) float64."""
    return torch.arange(1, path.T + 1, dtype=torch.float64) / path.T


def loss_weight(path: Path, t: torch.Tensor, prediction: str, weighting: str, gamma: float = 5.0) -> torch.Tensor:
    """Per-example weight (float64, t's shape). min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) on the x0
    error, divided by the implicit weight each target puts on it, so every prediction type on every path gets the
    same effective weighting of the x0 error. The target's error is a multiple of the x0 error at fixed x_t:
    eps: alpha/sigma (weight SNR); x0: 1; v: (alpha^2 + sigma^2)/sigma (VP: SNR + 1); u: (alpha' sigma -
    alpha sigma')/sigma (rectified flow: 1/t, weight 1/t^2)."""
    if WEIGHTINGS.check(weighting) == "none":
        return torch.ones_like(t)
    a2, s2 = path.squares(t)
    snr = a2 / s2
    if prediction == "eps":
        implicit = snr
    elif prediction == "x0":
        implicit = torch.ones_like(snr)
    elif prediction == "v":
        implicit = snr + 1 if path.variance_preserving else (a2 + s2) ** 2 / s2
    else:
        (alpha, sigma), (d_alpha, d_sigma) = path.alpha_sigma(t), path.derivatives(t)
        implicit = (d_alpha * sigma - alpha * d_sigma) ** 2 / s2
    return snr.clamp(max=gamma) / implicit


def diffusion_loss(net, path: Path, x0: torch.Tensor, *, prediction: str = "eps", weighting: str = "none",
                   t_sampling: str = "uniform", cond=None, generator: torch.Generator | None = None,
                   logit_mean: float = 0.0, logit_std: float = 1.0, noise: tuple | None = None) -> torch.Tensor:
    """Ho et al. 2020 Algorithm 1 (for eps; x0, v and the flow-matching velocity u likewise, Lipman et al. 2023):
    E_t,eps w_t ||target - net(x_t, t)||^2, per example (B,). noise: (t, eps) drawn beforehand by draw_noise
    (a distributed step draws them for the global batch and slices its shard), else drawn here from generator."""
    check_prediction(prediction)
    w_table = loss_weight(path, knots(path), prediction, weighting) if t_sampling == "importance" else None
    t, eps = noise if noise is not None else draw_noise(path, x0.shape, t_sampling=t_sampling, generator=generator,
                                                        prediction=prediction, weighting=weighting,
                                                        logit_mean=logit_mean, logit_std=logit_std)
    eps = eps.to(x0.device)
    x_t = q_sample(path, x0, t, eps)
    out = net(x_t, t.to(x0.device, torch.float32), cond).float()
    alpha, sigma = (broadcast(c, x0) for c in path.alpha_sigma(t))
    if prediction == "u":
        target = u_from_x0_eps(x0, eps, *(broadcast(c, x0) for c in path.derivatives(t)))
    else:
        target = {"eps": eps, "x0": x0, "v": v_from_x0_eps(x0, eps, alpha, sigma)}[prediction]
    mse = (out - target).pow(2).flatten(1).mean(1)  # (B,)
    if t_sampling == "importance":  # t was drawn with probability w_t / sum(w): each example weighs mean(w)
        return w_table.mean().to(mse.dtype) * mse
    return loss_weight(path, t, prediction, weighting).to(mse.device, mse.dtype) * mse


def draw_noise(path: Path, shape: tuple, *, t_sampling: str = "uniform", generator: torch.Generator | None = None,
               prediction: str = "eps", weighting: str = "none", logit_mean: float = 0.0,
               logit_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(t (B,), eps (B, ...)) for a batch of `shape` (B, ...), t first, in diffusion_loss's order and distribution."""
    w_table = loss_weight(path, knots(path), prediction, weighting) if t_sampling == "importance" else None
    t = sample_t(path, shape[0], t_sampling, generator, weights=w_table, logit_mean=logit_mean, logit_std=logit_std)
    return t, torch.randn(shape, generator=generator)


def objective_options(cfg) -> dict:
    """The keyword arguments of diffusion_loss that a run's DiffusionConfig sets."""
    d = cfg.diffusion
    return dict(prediction=d.prediction, weighting=d.weighting, t_sampling=d.t_sampling, logit_mean=d.logit_mean,
                logit_std=d.logit_std)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per example, summed over every other axis (Kingma & Welling 2014,
    appendix B): 1/2 sum(mean^2 + exp(log_var) - 1 - log_var). (B, ...) -> (B,)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).flatten(1).sum(1)
