"""`tinydiffusion distill`: a tiny teacher trained here, distilled for a few steps, is a normal run that loads,
samples at 1 and 2 steps with the consistency sampler and evaluates; bad input is one sentence."""
import json

import numpy as np
import pytest

from conftest import tiny_config
from tinydiffusion.cli.main import main
from tinydiffusion.runs import load_run, sample_run
from tinydiffusion.train import train


@pytest.fixture(scope="module")
def flow_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(tiny_config("train.ema_decay=0.9", steps=3, preset="mnist"), out, device="cpu", quiet=True)
    return out


@pytest.mark.parametrize("method,solver", [("cd", "heun"), ("cd", "dpm-solver"), ("ct", "heun")])
def test_a_distilled_run_loads_samples_and_evaluates(flow_teacher, tmp_path, capsys, method, solver):
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(flow_teacher), "--method", method, "--solver", solver, "--out", str(out),
                 "--steps", "3", "--N", "6", "--set", "train.log_every=1"]) == 0
    assert "run in" in capsys.readouterr().out
    cfg, net, path, meta = load_run(out)
    assert cfg.sample.sampler == "consistency" and cfg.sample.steps == 1 and cfg.diffusion.prediction == "cm-u"
    assert meta["distill"]["method"] == method and meta["step"] == 3
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert list((out / "samples").glob("*.png"))
    for steps in (1, 2):
        x = sample_run(out, 4, steps=steps)
        assert x.shape == (4, 1, 28, 28) and x.isfinite().all()
    assert main(["sample", "--run", str(out), "--n", "3", "--steps", "1", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (3, 1, 28, 28)


def test_cd_starts_from_the_teachers_weights(flow_teacher, tmp_path):
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(flow_teacher), "--out", str(out), "--steps", "1", "--N", "4",
                 "--set", "train.lr=0"]) == 0  # lr 0: the student is still the teacher
    _, teacher, _, _ = load_run(flow_teacher)
    _, student, _, _ = load_run(out)
    for (k, a), b in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert (a == b).all(), k


def test_distilled_run_evaluates(flow_teacher, tmp_path):
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(flow_teacher), "--out", str(out), "--steps", "1", "--N", "4"]) == 0
    assert main(["eval", "--run", str(out), "--n", "16", "--steps", "1", "--metrics", "class_entropy"]) == 0
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "class_entropy" in row["eval"] and row["sampling"]["steps"] == 1


@pytest.mark.parametrize("argv,words", [
    (["--teacher", "{tmp}/nope", "--steps", "1"], "does not exist"),
    (["--teacher", "{teacher}", "--method", "magic", "--steps", "1"], "magic"),
    (["--teacher", "{teacher}", "--solver", "rk4", "--steps", "1"], "rk4"),
    (["--teacher", "{teacher}", "--steps", "0"], "budget"),
    (["--teacher", "{teacher}", "--steps", "1", "--N", "1"], "--N"),
])
def test_bad_input_is_one_sentence(flow_teacher, tmp_path, capsys, argv, words):
    argv = [a.format(tmp=tmp_path, teacher=flow_teacher) for a in argv]
    assert main(["distill", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_sampling_a_distilled_run_with_zero_steps_is_one_sentence(flow_teacher, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(flow_teacher), "--out", str(out), "--steps", "1", "--N", "4"]) == 0
    capsys.readouterr()
    assert main(["sample", "--run", str(out), "--n", "2", "--steps", "0", "--out", str(tmp_path / "x.npz")]) == 2
    assert "steps" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ reflow
def test_a_reflow_run_trains_on_the_teachers_couplings_and_samples_in_one_euler_step(flow_teacher, tmp_path, capsys):
    out = tmp_path / "reflow"
    assert main(["distill", "--teacher", str(flow_teacher), "--method", "reflow", "--pairs", "24", "--out", str(out),
                 "--steps", "3", "--set", "train.log_every=1"]) == 0
    assert "generated 24 teacher couplings" in capsys.readouterr().out
    cfg, net, path, meta = load_run(out)
    assert cfg.sample.sampler == "euler" and cfg.sample.steps == 1 and cfg.diffusion.prediction == "u"
    assert cfg.diffusion.t_sampling == "uniform"
    assert meta["distill"]["method"] == "reflow" and meta["distill"]["pairs"] == 24 and meta["step"] == 3
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    for steps in (1, 2):
        x = sample_run(out, 4, steps=steps)
        assert x.shape == (4, 1, 28, 28) and x.isfinite().all()


def test_reflow_couples_each_noise_draw_with_the_teachers_sample_from_it(flow_teacher):
    """The coupling is the point of reflow: pair i's image is the teacher's ODE solution from pair i's noise."""
    import torch

    from tinydiffusion.generate import denoiser_for
    from tinydiffusion.samplers import get_sampler
    from tinydiffusion.timesteps import time_grid
    from tinydiffusion.train.distill import reflow_pairs

    tcfg, tnet, path, meta = load_run(flow_teacher)
    noise, x1, labels = reflow_pairs(tcfg, tnet, path, 300, (1, 28, 28), 0, seed=3)  # 2 batches of 256 and 44
    assert noise.shape == x1.shape == (300, 1, 28, 28) and labels is None
    d = denoiser_for(tnet, path, tcfg.diffusion.prediction, tcfg.sample)
    grid = time_grid(path, tcfg.sample.steps, tcfg.sample.spacing, tcfg.sample.shift)
    for i in (0, 255, 256, 299):
        one = get_sampler(tcfg.sample.sampler)(d, noise[i:i + 1], grid).clamp(-1, 1)
        torch.testing.assert_close(x1[i:i + 1], one, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("preset,extra,words", [
    ("mnist-ddpm", [], "rectified-flow"),
    ("mnist", ["sample.sampler=dpm++2m-sde"], "adds noise"),
])
def test_reflow_needs_a_flow_teacher_with_an_ode_sampler(tmp_path, capsys, preset, extra, words):
    teacher = tmp_path / "t"
    train(tiny_config(*extra, steps=1, preset=preset), teacher, device="cpu", quiet=True)
    assert main(["distill", "--teacher", str(teacher), "--method", "reflow", "--steps", "1", "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_reflow_with_fewer_pairs_than_a_batch_is_one_sentence(flow_teacher, tmp_path, capsys):
    assert main(["distill", "--teacher", str(flow_teacher), "--method", "reflow", "--pairs", "3", "--steps", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "fewer than one batch" in capsys.readouterr().err
