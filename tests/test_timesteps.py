"""Time-step spacings: first and last steps as documented, the densities they promise, bad names."""
from __future__ import annotations

import numpy as np
import pytest

from tinydiffusion.errors import UserError
from tinydiffusion.schedules import make_schedule
from tinydiffusion.timesteps import SPACINGS, make_timesteps

LINEAR = make_schedule("linear", 1000)


@pytest.mark.parametrize("spacing", list(SPACINGS))
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 7, 10, 50, 999, 1000])
def test_spacing_first_and_last_steps_are_as_documented(spacing, schedule, steps):
    T = 1000
    ts = make_timesteps(make_schedule(schedule, T), steps, spacing)
    assert len(ts) == steps and all(isinstance(t, int) for t in ts)
    assert all(a > b for a, b in zip(ts, ts[1:])) and 0 <= ts[-1] and ts[0] <= T - 1  # distinct, descending
    assert ts[0] == T - 1  # every spacing starts where x_T was drawn
    if steps == 1:
        assert ts == [T - 1]
    elif spacing == "trailing":
        assert ts[-1] == int(np.rint(T / steps)) - 1
    else:
        assert ts[-1] == 0
    if steps == T:
        assert ts == list(range(T - 1, -1, -1))


def test_spacings_follow_their_densities():
    """logsnr: even in lambda; karras: even in sigma^(1/7); quadratic: gaps grow towards the noise end."""
    sigma = ((1 - LINEAR.alpha_bar) / LINEAR.alpha_bar).sqrt()
    for spacing, f in [("logsnr", lambda s: s.log()), ("karras", lambda s: s ** (1 / 7))]:
        gaps = f(sigma[make_timesteps(LINEAR, 8, spacing)]).diff().abs()
        assert gaps.max() / gaps.min() < 1.2, (spacing, gaps)  # rounding to integer steps only
    gaps = -np.diff(make_timesteps(1000, 10, "quadratic"))
    assert (np.diff(gaps) < 0).all()  # descending list: the first gaps (near T-1) are the widest


def test_bad_spacings_and_step_counts_raise_user_errors():
    with pytest.raises(UserError, match="spacing"):
        make_timesteps(1000, 10, "leading")
    for steps in (0, 1001):
        with pytest.raises(UserError, match="--steps"):
            make_timesteps(1000, steps)
    with pytest.raises(TypeError):  # a programming error: karras needs the noise levels
        make_timesteps(1000, 10, "karras")
