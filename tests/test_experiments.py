"""The lesson's experiments run end to end on a tiny budget and write report.md + results.json with the expected
keys; the checkpoint logic judges correct and broken inputs correctly. The project metric is replaced by a cheap
stand-in (the real one trains a classifier on first use)."""
import json

import pytest
import torch
from PIL import Image

from tinydiffusion.cli import main
from tinydiffusion.config import get_preset
from tinydiffusion.device import native_bf16
from tinydiffusion.errors import UserError
from tinydiffusion.experiments import EXPERIMENTS, common, nfe, seed_checkpoints
from tinydiffusion.experiments.seed_checkpoints import forward_check, loss_check
from tinydiffusion.paths import DiscretePath
from tinydiffusion.schedules import Schedule

# Every trained variant: a tiny U-Net, a short chain, a few steps (overrides on top of each experiment's preset).
TINY = ["model.channels=8", "diffusion.T=20", "train.batch_size=8", "train.precision=fp32", "train.log_every=1",
        "sample.steps=2"]
METRIC = {"fd_classifier", "precision", "recall", "class_entropy"}


FDS: list[float] = []  # the stand-in metric's answers, in the order the settings are sampled


def fake_evaluate_samples(images01, labels=None, dataset="mnist", metrics=None):
    assert images01.ndim == 4 and 0 <= float(images01.min()) and float(images01.max()) <= 1  # the contract
    fd = FDS.pop(0) if FDS else float(images01.mean())
    return dict(fd_classifier=fd, precision=0.5, recall=0.5, class_entropy=0.9)


@pytest.fixture(autouse=True)
def stand_in_metric(monkeypatch):
    monkeypatch.setattr("tinydiffusion.eval.evaluate.evaluate_samples", fake_evaluate_samples)


def tiny(overrides=TINY):
    out = []
    for item in overrides:
        out += ["--set", item]
    return out + ["--steps", "2", "--n", "4", "--sample-steps", "2", "--device", "cpu", "--quiet"]


def results(folder):
    assert (folder / "report.md").read_text().startswith("# ")
    return json.loads((folder / "results.json").read_text())


def test_every_experiment_is_registered():
    assert {"timing", "schedules", "timesteps", "vae-vs-ddpm", "seed-checkpoints"} <= set(EXPERIMENTS)


def test_timing(tiny_run, tmp_path):
    out = tmp_path / "timing"
    assert main(["experiment", "timing", "--run", str(tiny_run), "--n", "4", "--repeats", "1", "--device", "cpu",
                 "--out", str(out)]) == 0
    r = results(out)
    assert r["sampler_steps"] == 20 and r["forward_passes"] == 4 * 20  # the full chain of the tiny run (T = 20)
    assert r["ratio"] == pytest.approx(r["generate_s"] / r["train_step_s"])
    assert r["time_1000_images_s"] == pytest.approx(1000 * r["per_image_s"])
    assert r["pixel_ratio_512"] == pytest.approx(512**2 / 28**2)  # ~334x, as in the lesson
    assert r["extrapolated_per_image_512_860M_s"] > r["extrapolated_per_image_512_s"] > r["per_image_s"]
    assert "Extrapolation (not measured)" in (out / "report.md").read_text()
    units = "bf16 units" if r["machine"]["bf16_units"] else "no bf16 units"  # the report says which CPU kind it was
    assert f"({units})" in (out / "report.md").read_text() and r["machine"]["bf16_units"] == native_bf16("cpu")


@pytest.mark.parametrize("name, extra, variants", [
    ("schedules", [], ["linear", "cosine"]),
    ("timesteps", ["--T-values", "20,10"], ["T=20", "T=10"]),
])
def test_comparisons(tmp_path, name, extra, variants):
    out = tmp_path / name
    assert main(["experiment", name, "--out", str(out)] + tiny() + extra) == 0
    r = results(out)
    assert [row["variant"] for row in r["rows"]] == variants
    for row in r["rows"]:
        assert METRIC <= set(row) and row["train_steps"] == 2 and row["ms_per_image"] > 0
        assert (out / f"samples_{row['variant']}.png").exists()
    # a second call refuses to overwrite the runs, and --reuse rescores them without training
    assert main(["experiment", name, "--out", str(out)] + tiny() + extra) == 2
    assert main(["experiment", name, "--out", str(out), "--reuse"] + tiny() + extra) == 0


def test_vae_vs_ddpm(tmp_path):
    out = tmp_path / "vae"
    assert main(["experiment", "vae-vs-ddpm", "--out", str(out)] + tiny()) == 0
    r = results(out)
    assert [row["model"] for row in r["rows"]] == ["VAE", "DDPM", "real training digits"]
    for row in r["rows"]:
        assert METRIC <= set(row) and {"grad_mean", "laplacian_var"} <= set(row)
    assert r["vae"]["steps"] == 2 and r["ddpm"]["steps"] == 2 and r["ddpm_over_vae_time"] > 0
    assert "reflection table" in (out / "report.md").read_text()


def test_seed_checkpoints_trains_the_lesson_recipe(tmp_path):
    out = tmp_path / "seed"
    seed_tiny = [o for o in TINY if not o.startswith("model.")]  # seed-unet has a fixed size
    assert main(["experiment", "seed-checkpoints", "--out", str(out)] + tiny(seed_tiny)) == 0
    r = results(out)
    assert set(r) >= {"forward", "loss", "samples", "passed"} and len(r["passed"]) == 3
    assert json.loads((out / "runs" / "mnist-seed" / "config.json").read_text())["model"]["name"] == "seed-unet"
    assert (out / "loss.png").exists() and (out / "samples.png").exists()


def test_seed_checkpoints_on_an_existing_run(tiny_run, tmp_path):
    out = tmp_path / "seed-run"
    assert main(["experiment", "seed-checkpoints", "--run", str(tiny_run), "--n", "4", "--sample-steps", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert not (out / "runs").exists()  # judged, not retrained


def test_forward_checkpoint_passes_for_the_lesson_schedule_and_fails_for_a_broken_one(monkeypatch):
    x0 = torch.rand(200, 1, 28, 28) * 2 - 1
    good = forward_check(get_preset("mnist-seed"), x0, seed=0)
    assert good["pass"] and good["t0_mean_abs_diff"] < 0.01  # sigma_0 = sqrt(1e-4) = 0.01
    # a schedule that never reaches noise: constant beta = 1e-4 leaves alpha_bar[999] = 0.905
    monkeypatch.setattr(seed_checkpoints, "make_path", lambda name, T: DiscretePath(Schedule(torch.full((T,), 1e-4)), "flat"))
    broken = forward_check(get_preset("mnist-seed"), x0, seed=0)
    assert not broken["pass"] and broken["tlast_var"] < 0.9


def test_loss_checkpoint_verdicts():
    cfg = get_preset("mnist-seed")
    curve = lambda *losses: [dict(step=50 * (k + 1), loss=v, epoch=0.1 * (k + 1)) for k, v in enumerate(losses)]  # noqa
    assert loss_check(cfg, curve(1.0, 0.2, 0.04, 0.03))["pass"]
    falling = loss_check(cfg, curve(1.0, 0.2, 0.09, 0.07))
    assert not falling["pass"] and "more training" in falling["verdict"]
    assert "wrong" in loss_check(cfg, curve(1.0, 0.5, 0.4, 0.3))["verdict"]


def test_sharpness_drops_with_blur():
    x = (torch.rand(8, 1, 28, 28) > 0.7).float()
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    sharp, soft = common.sharpness(x), common.sharpness(blurred)
    assert soft["grad_mean"] < sharp["grad_mean"] and soft["laplacian_var"] < sharp["laplacian_var"]


def test_guidance_experiment_writes_its_table_and_grids(class_run, tmp_path, monkeypatch):
    import tinydiffusion.eval.evaluate

    def fake_evaluate(images01, labels=None, dataset="mnist", metrics=None):  # stands in for the classifier
        return dict(fd_classifier=1.0, precision=0.5, recall=0.5, class_entropy=1.0, label_accuracy=0.1)

    monkeypatch.setattr(tinydiffusion.eval.evaluate, "evaluate_samples", fake_evaluate)
    out = tmp_path / "report"
    assert main(["experiment", "guidance", "--run", str(class_run), "--weights", "0,1,3", "--n-per-class", "2",
                 "--sample-steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| w | label_accuracy" in report and "sweep.png" in report
    for name in ("grid_w0.png", "grid_w1.png", "grid_w3.png", "sweep.png", "results.json"):
        assert (out / name).exists(), name


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
    for flags, match in [(["--samplers", "euler-a"], "sampler"), (["--steps", "5,ten"], "--steps"),
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


def test_backbones_puts_unet_and_dit_side_by_side_at_each_mark(tmp_path):
    out = tmp_path / "bb"
    sets = [a for s in ("model.channels=16", "train.batch_size=8", "train.precision=fp32", "sample.steps=2",
                        "train.log_every=1") for a in ("--set", s)]
    assert main(["experiment", "backbones", "--marks", "0.01,0.02", "--n", "4", "--seeds", "2", "--device", "cpu",
                 "--quiet", "--out", str(out), *sets]) == 0
    r = results(out)
    assert [(c["preset"], c["model"]) for c in r["cost"]] == [("mnist", "unet-patch"), ("mnist-dit", "dit-tiny")]
    for c in r["cost"]:
        assert c["params_M"] > 0 and c["gflops_per_image"] > 0 and c["train_img_s"] > 0 and c["sample_img_nfe_s"] > 0
    assert [(q["preset"], q["minutes"]) for q in r["quality"]] == [
        ("mnist", 0.01), ("mnist", 0.02), ("mnist-dit", 0.01), ("mnist-dit", 0.02)]
    assert all(len(q["fd_seeds"].split(" / ")) == 2 for q in r["quality"])
    assert (out / "quality_vs_minutes.png").exists() and (out / "grids" / "mnist-dit_0.02min.png").exists()
    assert (out / "runs" / "mnist-dit" / "snapshots" / "0.01min.safetensors").exists()


def test_gflops_count_two_per_multiply_add():
    from tinydiffusion.experiments.backbones import gflops_per_image

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)

        def forward(self, x, t):
            return self.conv(x)

    assert gflops_per_image(Conv(), (1, 28, 28)) == pytest.approx(2 * 9 * 28 * 28 / 1e9)


@pytest.mark.parametrize("marks", ["2,x", "0,5", ""])
def test_backbones_refuses_bad_marks(tmp_path, capsys, marks):
    assert main(["experiment", "backbones", "--marks", marks, "--out", str(tmp_path / "bb")]) == 2
    assert "--marks" in capsys.readouterr().err and not (tmp_path / "bb").exists()


def test_latent_vs_pixel_trains_the_autoencoder_two_latent_runs_and_pixels(tmp_path):
    import numpy as np

    from tinydiffusion.data import load_dataset

    digits = tmp_path / "digits"  # 256 training digits: the autoencoder's cache takes no time
    digits.mkdir()
    for split, k in (("train", 256), ("test", 64)):
        ds = load_dataset("mnist", split)
        np.savez(digits / f"{split}.npz", images=ds.images[:k].numpy(), labels=ds.labels[:k].numpy())
    out = tmp_path / "lvp"
    sets = [a for s in (f"data.name={digits}", "model.channels=8", "train.batch_size=8", "train.precision=fp32",
                        "sample.steps=2", "train.log_every=1") for a in ("--set", s)]
    assert main(["experiment", "latent-vs-pixel", "--minutes", "0.03", "--ae-minutes", "0.01", "--n", "8",
                 "--seeds", "2", "--device", "cpu", "--quiet", "--out", str(out), *sets]) == 0
    r = results(out)
    assert [row["preset"] for row in r["rows"]] == ["mnist-latent", "mnist-latent", "mnist"]
    latent, full, pixel = r["rows"]
    assert latent["total_minutes"] == pytest.approx(latent["train_minutes"] + r["ae_minutes"])
    assert latent["train_minutes"] < full["train_minutes"] and all(row["s_per_64"] > 0 for row in r["rows"])
    assert set(r["ceiling"]) >= {"psnr", "mse"} and (out / "latent_vs_pixel.png").exists()
    assert main(["experiment", "latent-vs-pixel", "--minutes", "2", "--ae-minutes", "3", "--out", str(out / "x")]) == 2
