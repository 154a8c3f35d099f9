"""Time-step spacings: which `steps` of the T integer steps a sampler visits, in descending order.

Every spacing returns distinct integers in {0..T-1}, strictly descending; the sampler then takes one more
step from the last of them to clean data (alpha_bar = 1). First and last steps, for 2 <= steps <= T:

| spacing   | first | last              | density                                                        |
|-----------|-------|-------------------|----------------------------------------------------------------|
| uniform   | T-1   | 0                 | even in t                                                      |
| trailing  | T-1   | round(T/steps)-1  | even in t, T/steps apart, the grid anchored at T (Lin et al. 2024, table 2) |
| quadratic | T-1   | 0                 | t = (T-1) u^2, u even in [0, 1]: dense near the data (Song et al. 2021, D.2) |
| karras    | T-1   | 0                 | sigma^(1/7) even between sigma(T-1) and sigma(0) (Karras et al. 2022, eq. 5) |
| logsnr    | T-1   | 0                 | lambda = log(alpha/sigma) even (Lu et al. 2022, sec. 3.3 "logSNR") |

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


def make_timesteps(schedule: Schedule | int, steps: int, spacing: str = "uniform") -> list[int]:
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
