"""Time grids: which times a sampler visits, descending, ending at 0 (clean data); `time_grid` is the entry point.

On a DDPM path the grid is `steps` of the T integer steps, chosen by the spacing (table below), as times
t_k = (k + 1) / T, then 0. On a continuous path (vp-cosine, flow) it is steps + 1 floats from 1 (pure noise,
where x_T ~ N(0, I) is exact) to 0; see `continuous_grid`.

DDPM paths: every spacing returns distinct integers in {0..T-1}, strictly descending; the sampler then takes one
more step from the last of them to clean data (alpha_bar = 1). First and last steps, for 2 <= steps <= T:

| spacing   | first | last              | density                                                        |
|-----------|-------|-------------------|----------------------------------------------------------------|
| uniform   | T-1   | 0                 | even in t                                                      |
| trailing  | T-1   | round(T/steps)-1  | even in t, T/steps apart, the grid anchored at T (Lin et al. 2024, table 2) |
| quadratic | T-1   | 0                 | t = (T-1) u^2, u even in [0, 1]: dense near the data (Song et al. 2021, D.2) |
| karras    | T-1   | 0                 | sigma^(1/7) even between sigma(T-1) and sigma(0) (Karras et al. 2022, eq. 5) |
| logsnr    | T-1   | 0                 | lambda = log(alpha/sigma) even (Lu et al. 2022, sec. 3.3 "logSNR") |
| shifted   | T-1   | T t'(1/steps) - 1 | t' = s t / (1 + (s - 1) t), t even: SD3's shift s = `shift` (Esser et al. 2024, eq. 23) |

With steps = 1 every spacing gives [T-1]; with steps = T every spacing gives T-1, ..., 0. "leading" spacing
(0, T/steps, ...) is left out on purpose: its first step is below T-1, so it starts from a noise level
lower than the one x_T was drawn at (Lin et al. 2024, sec. 3.3).
Here sigma = sqrt((1 - alpha_bar) / alpha_bar) is the noise level of x / alpha (Karras et al. 2022, eq. 4).
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import UserError
from .registry import Registry
from .schedules import Schedule

SPACINGS = Registry("time-step spacing")
SPACINGS.add("uniform", text="even in t, from T-1 to 0")
SPACINGS.add("trailing", text="even in t, T/steps apart, anchored at T (Lin et al. 2024, table 2)")
SPACINGS.add("quadratic", text="t = (T-1) u^2: dense near the data (Song et al. 2021, D.2)")
SPACINGS.add("karras", text="sigma^(1/7) even (Karras et al. 2022, eq. 5)")
SPACINGS.add("logsnr", text="log-SNR even (Lu et al. 2022, sec. 3.3)")
SPACINGS.add("shifted", text="t' = s t / (1 + (s - 1) t) on even t, s = sample.shift (Esser et al. 2024, SD3)")
KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5 and table 1


def distinct_descending(ts: np.ndarray, T: int) -> list[int]:
    """Round descending real steps to the nearest integers, then push collisions apart so the result is
    strictly descending inside {0..T-1} (needed where many steps crowd one end, e.g. quadratic near 0)."""
    r = np.clip(np.rint(ts), 0, T - 1).astype(np.int64)
    for i in range(len(r) - 2, -1, -1):  # from the data end up: each step at least one above the next
        r[i] = max(r[i], r[i + 1] + 1)
    for i in range(len(r)):  # from the noise end down: stay below T, keeping room for the steps after
        r[i] = min(r[i], T - 1 - i)
    return r.tolist()


def _sigma_t(alpha_bar: torch.Tensor) -> np.ndarray:
    """sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t) for every t, increasing in t."""
    return ((1 - alpha_bar) / alpha_bar).sqrt().numpy()


def _steps_at(log_sigma: np.ndarray, alpha_bar: torch.Tensor) -> np.ndarray:
    """Real-valued t at which log sigma(t) equals the given values (linear interpolation in log sigma)."""
    table = np.log(_sigma_t(alpha_bar))  # (T,), increasing
    return np.interp(log_sigma, table, np.arange(len(table), dtype=np.float64))


def make_timesteps(schedule: Schedule | int, steps: int, spacing: str = "uniform", shift: float = 3.0) -> list[int]:
    """`steps` strictly descending integer steps in {0..T-1}; the table in the module docstring gives the
    first and last step of each spacing. `karras` and `logsnr` depend on the noise levels, so they need the
    Schedule; the others accept T alone."""
    T = schedule if isinstance(schedule, int) else schedule.T
    if not 1 <= steps <= T:
        raise UserError(f"--steps must be between 1 and T={T}, got {steps}.")
    SPACINGS.check(spacing)
    u = np.linspace(1.0, 0.0, steps)  # (steps,) from the noise end (1) to the data end (0)
    if spacing == "uniform":
        ts = (T - 1) * u
    elif spacing == "trailing":
        ts = np.rint(T - np.arange(steps) * (T / steps)) - 1  # as Lin et al.: round, then shift
    elif spacing == "quadratic":
        ts = (T - 1) * u**2
    elif spacing == "shifted":
        ts = T * shift_times(np.linspace(1.0, 0.0, steps + 1)[:-1], shift) - 1
    else:
        if isinstance(schedule, int):
            raise TypeError(f"The '{spacing}' spacing depends on the noise levels: pass the Schedule, not T.")
        sigma = _sigma_t(schedule.alpha_bar)
        s_max, s_min = sigma[-1], sigma[0]
        if spacing == "karras":
            lo, hi = s_min ** (1 / KARRAS_RHO), s_max ** (1 / KARRAS_RHO)
            log_sigma = KARRAS_RHO * np.log(lo + u * (hi - lo))
        else:  # lambda = -log sigma, so even in lambda is even in log sigma
            log_sigma = np.log(s_min) + u * (np.log(s_max) - np.log(s_min))
        ts = _steps_at(log_sigma, schedule.alpha_bar)
    return distinct_descending(ts, T)


def shift_times(t: np.ndarray, shift: float) -> np.ndarray:
    """SD3's time shift (Esser et al. 2024, eq. 23): t' = s t / (1 + (s - 1) t); s > 1 spends more steps at high
    noise, s < 1 near the data, s = 1 is the identity. Endpoints stay: 0 -> 0, 1 -> 1."""
    return shift * t / (1 + (shift - 1) * t)


EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0  # Karras et al. 2022, table 1: the range of sigma~ = sigma / alpha


def continuous_grid(path, steps: int, spacing: str, shift: float = 3.0) -> list[float]:
    """steps + 1 descending times from 1 to 0 on a continuous path.
    uniform and trailing: t even (the same grid here: it starts at 1 and every step is 1/steps long);
    quadratic: t = u^2; shifted: SD3's shift of the even grid; karras and logsnr: the points after the first of
    a steps-point grid in sigma~ (rho = 7) or in lambda over EDM's sigma~ range [0.002, 80], mapped to t by the
    path, with the first point at t = 1 (where x_T ~ N(0, I) is exact) instead of sigma~ = 80."""
    u = np.linspace(1.0, 0.0, steps + 1)
    if spacing in ("uniform", "trailing"):
        t = u
    elif spacing == "quadratic":
        t = u**2
    elif spacing == "shifted":
        t = shift_times(u, shift)
    else:
        v = np.linspace(1.0, 0.0, steps)  # steps points, noise end first
        lo, hi = np.log(EDM_SIGMA_MIN), np.log(EDM_SIGMA_MAX)
        if spacing == "karras":
            r = 1 / KARRAS_RHO
            log_sigma = KARRAS_RHO * np.log(EDM_SIGMA_MIN**r + v * (EDM_SIGMA_MAX**r - EDM_SIGMA_MIN**r))
        else:
            log_sigma = lo + v * (hi - lo)
        inner = path.t_of_lambda(torch.from_numpy(-log_sigma[1:])).numpy()  # lambda = -log sigma~
        t = np.concatenate([[1.0], inner, [0.0]])
    return [float(x) for x in t]


def time_grid(path, steps: int, spacing: str = "uniform", shift: float = 3.0) -> list[float]:
    """The times a sampler visits, strictly descending, ending at 0: steps + 1 of them, so `steps` steps."""
    if path.T is not None:
        return [(k + 1) / path.T for k in make_timesteps(path.schedule, steps, spacing, shift)] + [0.0]
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}.")
    SPACINGS.check(spacing)
    if spacing == "shifted" and not shift > 0:
        raise UserError(f"sample.shift must be positive, got {shift}.")
    return continuous_grid(path, steps, spacing, shift)


def check_grid(grid) -> list[float]:
    """A user-given grid: strictly descending floats in [0, 1] that end at 0."""
    grid = [float(t) for t in grid]
    if len(grid) < 2 or grid[-1] != 0.0 or any(not 0 <= t <= 1 for t in grid) or \
            any(a <= b for a, b in zip(grid, grid[1:])):
        raise UserError("A time grid must be strictly descending times in [0, 1] that end at 0, like 1, 0.5, 0.")
    return grid
