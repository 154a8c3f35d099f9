"""Time-step spacings: first and last steps as documented, the densities they promise, bad names."""
from __future__ import annotations

import numpy as np
import pytest

from tinydiffusion.errors import UserError
from tinydiffusion.schedules import make_schedule
from tinydiffusion.paths import make_path
from tinydiffusion.timesteps import SPACINGS, check_grid, make_timesteps, time_grid

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
    elif spacing == "shifted":  # SD3's shift s = 3 of the even grid's last point 1/steps, as a step
        assert ts[-1] == max(0, min(T - steps, int(np.rint(T * 3 / steps / (1 + 2 / steps) - 1))))
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


@pytest.mark.parametrize("spacing", list(SPACINGS))
@pytest.mark.parametrize("path", ["ddpm-linear", "vp-cosine", "flow"])
def test_time_grids_descend_from_noise_to_zero_on_every_path(spacing, path):
    p = make_path(path)
    for steps in (1, 4, 25):
        grid = time_grid(p, steps, spacing)
        assert len(grid) == steps + 1 and grid[-1] == 0.0 and grid[0] == 1.0  # starts where x_T ~ N(0, I)
        assert all(a > b for a, b in zip(grid, grid[1:]))
        assert check_grid(grid) == grid
    if path == "ddpm-linear":  # the integer steps, as times (k + 1) / T
        assert time_grid(p, 5, spacing)[:-1] == [(k + 1) / 1000 for k in make_timesteps(p.schedule, 5, spacing)]


def test_shifted_grid_is_sd3s_shift_and_shift_one_is_uniform():
    flow = make_path("flow")
    u = np.linspace(1, 0, 11)
    np.testing.assert_allclose(time_grid(flow, 10, "shifted", shift=3.0), 3 * u / (1 + 2 * u), rtol=1e-12)
    np.testing.assert_allclose(time_grid(flow, 10, "shifted", shift=1.0), time_grid(flow, 10, "uniform"))
    assert time_grid(flow, 10, "shifted", 3.0)[5] > 0.5 > time_grid(flow, 10, "shifted", 0.3)[5]  # s > 1: noisier


def test_bad_grids_and_step_counts_are_one_sentence():
    flow = make_path("flow")
    for bad in ([1.0, 0.5], [1.0, 0.5, 0.7, 0.0], [2.0, 0.0], [0.0]):
        with pytest.raises(UserError, match="end at 0"):
            check_grid(bad)
    with pytest.raises(UserError, match="at least 1"):
        time_grid(flow, 0)
    with pytest.raises(UserError, match="between 1 and T"):
        time_grid(make_path("ddpm-linear"), 0)
    with pytest.raises(UserError, match="shift must be positive"):
        time_grid(flow, 4, "shifted", shift=0.0)
