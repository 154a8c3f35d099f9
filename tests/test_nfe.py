"""The NFE sweep runs end to end on a tiny run and writes its report; the plotting helper draws what it is given.
The project metric is replaced by a cheap stand-in (the real one trains a classifier on first use)."""
import json

import pytest
from PIL import Image

from tinydiffusion.cli import main
from tinydiffusion.errors import UserError
from tinydiffusion.experiments import nfe
from tinydiffusion.viz.plot import line_plot

FDS: list[float] = []  # the stand-in metric's answers, in the order the settings are sampled


def fake_evaluate_samples(images01, labels=None, dataset="mnist", metrics=None):
    assert images01.ndim == 4 and 0 <= float(images01.min()) and float(images01.max()) <= 1  # the contract
    fd = FDS.pop(0) if FDS else float(images01.mean())
    return dict(fd_classifier=fd, precision=0.5, recall=0.5, class_entropy=0.9)


@pytest.fixture(autouse=True)
def stand_in_metric(monkeypatch):
    monkeypatch.setattr("tinydiffusion.eval.evaluate.evaluate_samples", fake_evaluate_samples)


def test_nfe_sweep_writes_table_plots_grids_and_the_closing_note(tiny_run, tmp_path, capsys):
    # Settings in order: ddim 2, 4; dpm++2m 2, 4; dpm++2m-sde 2, 4; heun 1 (1 NFE), 2 (3 NFE) steps; ddpm over
    # all T = 20 steps.
    FDS[:] = [9.0, 5.0, 6.0, 1.05, 3.0, 1.2, 4.0, 7.0, 1.0]
    out = tmp_path / "nfe"
    assert main(["experiment", "nfe", "--run", str(tiny_run), "--n", "4", "--samplers", "ddim,dpm++2m,dpm++2m-sde,heun",
                 "--steps", "2,4", "--out", str(out), "--batch-size", "3"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {(r["sampler"], r["steps"]): r for r in results["rows"]}
    assert set(rows) == {("ddim", 2), ("ddim", 4), ("dpm++2m", 2), ("dpm++2m", 4), ("dpm++2m-sde", 2),
                         ("dpm++2m-sde", 4), ("heun", 1), ("heun", 2), ("ddpm (20 steps)", 20)}
    # NFE is counted: one net call per step (heun 2K - 1), whatever the batching (n = 4 in batches of 3)
    assert [rows[k]["nfe"] for k in [("ddim", 4), ("heun", 1), ("heun", 2), ("ddpm (20 steps)", 20)]] == [4, 1, 3, 20]
    assert results["dpmpp2m_within_10pct_nfe"] == 4 and results["dpmpp2m_seconds_64"] > 0  # 1.05 <= 1.1 * 1.0
    assert results["dpmpp2m_sde_within_10pct_nfe"] is None and results["dpmpp2m_sde_best_fd"] == 1.2  # 1.2 > 1.1
    report = (out / "report.md").read_text()
    assert "dpm++2m comes within 10% of the 20-step DDPM quality at **4 NFE**" in report
    assert "dpm++2m-sde does not come within 10%" in report
    assert "More steps did not always help: heun 1 -> 3 NFE" in report
    for png in ["quality_vs_nfe.png", "quality_vs_seconds.png", "grids/ddim_2.png", "grids/ddpm_20.png"]:
        assert Image.open(out / png).size[0] > 50


def test_nfe_sweep_rejects_bad_settings(tiny_run, tmp_path):
    for flags, match in [(["--samplers", "euler"], "sampler"), (["--steps", "5,ten"], "--steps"),
                         (["--steps", "0"], "--steps"), (["--n", "1"], "--n")]:
        with pytest.raises(UserError, match=match):
            nfe.run(build_args(tiny_run, tmp_path, flags))


def build_args(run, tmp_path, flags):
    import argparse
    p = argparse.ArgumentParser()
    nfe.add_arguments(p)
    return p.parse_args(["--run", str(run), "--out", str(tmp_path / "x"), *flags])


def test_steps_for_budget_never_exceeds_the_budget():
    for budget in range(1, 30):
        assert nfe.steps_for_budget("ddim", budget) == budget
        assert 2 * nfe.steps_for_budget("heun", budget) - 1 <= budget


def test_line_plot_draws_series_and_survives_empty_and_log_invalid_data(tmp_path):
    series = {"a": [(1, 3.0), (10, 2.0), (100, 1.5)], "b": [(5, 0.0), (50, 1.0)], "one point": [(1000, 1.2)]}
    path = line_plot(series, "NFE", "FD", tmp_path / "p.png", logx=True, logy=True, title="t")
    img = Image.open(path).convert("RGB")
    assert img.size == (720, 440)
    colours = {c for _, c in img.getcolors(1 << 20)}
    assert (0, 114, 178) in colours and (230, 159, 0) in colours  # the first two series' colours are drawn
    line_plot({}, "x", "y", tmp_path / "empty.png")
    line_plot({"flat": [(0, 1.0), (1, 1.0)]}, "x", "y", tmp_path / "flat.png")  # zero range on y
