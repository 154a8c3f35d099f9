"""`tinydiffusion viz ...`: every figure is written at a sensible size from a tiny run; the GIF has one frame per
kept step; the helpers behind the figures do the right bookkeeping (lesson times, nearest steps, loss per bin)."""
import json

import pytest
import torch
from PIL import Image

from tinydiffusion.cli import main
from tinydiffusion.config import load_config
from tinydiffusion.paths import make_path
from tinydiffusion.schedules import make_schedule
from tinydiffusion.viz.curves import crossing, loss_by_t
from tinydiffusion.viz.figures import LESSON_TRAJECTORY_T, lesson_times, nearest_visited
from tinydiffusion.viz.plot import line_plot


def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_schedule_png_has_three_panels(tmp_path):
    out = tmp_path / "schedule.png"
    assert main(["viz", "schedule", "--T", "200", "--out", str(out)]) == 0
    w, h = png_size(out)
    assert w == 3 * 560 + 2 * 10 + 2 * 12  # three 560-px plots side by side, 10-px gaps, 12-px margins
    assert 380 < h < 700  # one plot high, plus title and a few caption lines


def test_forward_png_upscales_each_digit(tmp_path):
    out = tmp_path / "forward.png"
    assert main(["viz", "forward", "--out", str(out)]) == 0
    w, h = png_size(out)
    assert w >= 6 * 28 * 4 and h >= 2 * 28 * 4  # 6 steps x 2 schedules, every digit at least 4x


def test_diagnostic_png(tiny_run, tmp_path):
    out = tmp_path / "diagnostic.png"
    assert main(["viz", "diagnostic", "--run", str(tiny_run), "--device", "cpu", "--out", str(out)]) == 0
    w, h = png_size(out)
    assert w >= 4 * 28 * 4 and h >= 3 * 28 * 4  # 4 steps x 3 rows


def test_diagnostic_rejects_steps_outside_the_chain(tiny_run, tmp_path, capsys):
    T = load_config(tiny_run / "config.json").diffusion.T
    code = main(["viz", "diagnostic", "--run", str(tiny_run), "--t", str(T), "--out", str(tmp_path / "d.png")])
    assert code == 2 and f"0..{T - 1}" in capsys.readouterr().err


@pytest.mark.parametrize("steps, frames, expected", [(None, 100, None), (6, 4, 4)])
def test_trajectory_png_and_gif_frames(tiny_run, tmp_path, steps, frames, expected):
    out = tmp_path / "trajectory.png"
    args = ["viz", "trajectory", "--run", str(tiny_run), "--n", "2", "--device", "cpu", "--out", str(out),
            "--gif-frames", str(frames)] + (["--steps", str(steps)] if steps else [])
    assert main(args) == 0
    run_steps = load_config(tiny_run / "config.json").sample.steps
    w, h = png_size(out)
    assert h >= 2 * 28 * 3 and w >= 3 * 28 * 3  # two rows (x, x0_hat), at least 3 distinct steps
    with Image.open(out.with_suffix(".gif")) as gif:
        # one frame per sampler step, or --gif-frames evenly spaced ones
        assert gif.n_frames == (expected or min(frames, run_steps))


def test_loss_pngs(tiny_run, tmp_path):
    out = tmp_path / "loss.png"
    assert main(["viz", "loss", "--run", str(tiny_run), "--n-test", "16", "--bins", "4", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert png_size(out)[0] == 760 + 2 * 12
    assert png_size(tmp_path / "loss_by_t.png")[0] == 760 + 2 * 12


def test_loss_curve_skips_evaluation_rows(tiny_run, tmp_path):
    """`eval --run` appends {"step", "eval"} rows to metrics.jsonl; the loss figure must read past them."""
    import shutil

    from tinydiffusion.viz.curves import read_metrics

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "eval": {"fd_classifier": 9.0}}) + "\n")
    assert [r["step"] for r in read_metrics(run)] == [2, 4] and all("loss" in r for r in read_metrics(run))


def test_lesson_times_are_exact_for_T_1000_and_scaled_otherwise():
    assert lesson_times(LESSON_TRAJECTORY_T, 1000) == [999, 750, 500, 250, 100, 50, 0]
    assert lesson_times(LESSON_TRAJECTORY_T, 20) == [19, 15, 10, 5, 2, 1, 0]


def test_nearest_visited_steps_for_a_few_step_sampler():
    visited = [999, 749, 500, 250, 0]  # a 5-step sampler
    idx = nearest_visited([999, 750, 500, 250, 100, 50, 0], visited)
    assert [visited[k] for k in idx] == [999, 749, 500, 250, 0]  # 100 and 50 both map to 0: shown once


def test_half_signal_crossing_of_the_linear_schedule():
    ab = make_schedule("linear", 1000).alpha_bar
    t = crossing(ab)
    assert ab[t] <= 0.5 < ab[t - 1]


def test_loss_by_t_of_a_net_that_predicts_zero_noise():
    """eps_hat = 0: the eps-MSE is E[eps^2] = 1 in every bin, and x0_hat = x_t / sqrt(alpha_bar) has
    x0-MSE = (1 - alpha_bar) / alpha_bar, which grows with t."""
    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, cond=None):
            return torch.zeros_like(x) * self.p

    schedule = make_path("ddpm-linear", 100)
    x0 = torch.rand(400, 1, 8, 8) * 2 - 1
    rows = loss_by_t(Zero(), schedule, "eps", x0, bins=4, generator=torch.Generator().manual_seed(0))
    assert [r["t_lo"] for r in rows] == [0, 25, 50, 75] and rows[-1]["t_hi"] == 99
    for r in rows:
        assert r["loss"] == pytest.approx(1.0, abs=0.03)
    assert all(a["x0_mse"] < b["x0_mse"] for a, b in zip(rows, rows[1:]))


def test_line_plot_draws_series_and_survives_empty_and_log_invalid_data(tmp_path):
    series = {"a": [(1, 3.0), (10, 2.0), (100, 1.5)], "b": [(5, 0.0), (50, 1.0)], "one point": [(1000, 1.2)]}
    path = line_plot(series, "NFE", "FD", tmp_path / "p.png", logx=True, logy=True, title="t")
    img = Image.open(path).convert("RGB")
    assert img.size == (720, 440)
    colours = {c for _, c in img.getcolors(1 << 20)}
    assert (0, 114, 178) in colours and (230, 159, 0) in colours  # the first two series' colours are drawn
    line_plot({}, "x", "y", tmp_path / "empty.png")
    line_plot({"flat": [(0, 1.0), (1, 1.0)]}, "x", "y", tmp_path / "flat.png")  # zero range on y
