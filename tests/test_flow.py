"""Flow matching end to end: a flow run trains, and sampling, guidance, pictures and the methods harness work on it;
bad combinations are one sentence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinydiffusion.cli import main
from tinydiffusion.data import load_dataset, to_model_range
from tinydiffusion.models import build_model
from tinydiffusion.objectives import diffusion_loss
from tinydiffusion.paths import make_path
from tinydiffusion.runs import load_run, sample_run
from tinydiffusion.samplers import SAMPLERS
from tinydiffusion.train import train

from conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow_run") / "run"
    train(tiny_config(preset="mnist"), out, device="cpu", quiet=True)
    return out


def test_a_tiny_model_learns_the_flow_velocity():
    """The overfit check of the flow trainer: on 64 digits the u-MSE falls well below its start (E||eps - x0||^2
    per pixel is 1 + E[x0^2] ~ 1.6 for a net that outputs 0)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x0 = to_model_range(load_dataset("mnist", "test").images[:64])
    net, flow = build_model("unet-small", 1, 28, channels=16), make_path("flow")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = diffusion_loss(net, flow, x0, prediction="u", t_sampling="logit-normal", generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 1.2 and last < 0.6 * first, (first, last)


def test_a_flow_run_samples_with_every_sampler_and_spacing(flow_run):
    cfg, _, path, _ = load_run(flow_run)
    assert cfg.diffusion.path == "flow" and cfg.diffusion.prediction == "u" and path.T is None
    for sampler in SAMPLERS:
        for spacing in ("uniform", "shifted", "karras"):
            x = sample_run(flow_run, 3, sampler=sampler, steps=3, spacing=spacing, seed=1)
            assert x.shape == (3, 1, 28, 28) and torch.isfinite(x).all() and x.abs().max() <= 1, (sampler, spacing)


def test_flow_runs_through_the_cli_sample_and_pictures(flow_run, tmp_path):
    assert main(["sample", "--run", str(flow_run), "--n", "4", "--steps", "2", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 1, 28, 28)
    assert main(["viz", "trajectory", "--run", str(flow_run), "--n", "2", "--steps", "4", "--device", "cpu",
                 "--out", str(tmp_path / "traj.png")]) == 0
    assert main(["viz", "diagnostic", "--run", str(flow_run), "--n", "2", "--t", "0.1,0.5,0.9", "--device", "cpu",
                 "--out", str(tmp_path / "diag.png")]) == 0
    assert main(["viz", "forward", "--schedules", "linear,flow", "--out", str(tmp_path / "fwd.png")]) == 0
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("traj.png", "traj.gif", "diag.png", "fwd.png"))
    # a DDPM step number is not a time on a flow run
    assert main(["viz", "diagnostic", "--run", str(flow_run), "--t", "100", "--out", str(tmp_path / "bad.png")]) == 2


def test_class_conditional_flow_with_guidance(tmp_path):
    out = tmp_path / "fc"
    train(tiny_config(steps=2, preset="mnist-class"), out, device="cpu", quiet=True)
    assert main(["sample", "--run", str(out), "--classes", "3,1", "--guidance", "3", "--steps", "2",
                 "--out", str(tmp_path / "g.png")]) == 0


@pytest.mark.parametrize("bad, match", [
    (["--set", "diffusion.path=rectified"], "Unknown path 'rectified'"),
    (["--set", "diffusion.prediction=eps"], "cannot give x0 at t = 1"),
    (["--set", "diffusion.t_sampling=importance"], "needs a DDPM path"),
])
def test_bad_flow_settings_are_one_sentence(tmp_path, capsys, bad, match):
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--preset", "mnist", "--steps", "1", *sets, *bad, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and not (tmp_path / "r" / "config.json").exists()


def test_the_methods_harness_trains_each_method_and_tabulates_quality_per_nfe(tmp_path):
    out = tmp_path / "methods"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["experiment", "methods", "--steps", "2", "--n", "8", "--nfe", "1,3", "--seeds", "2", "--device", "cpu",
                 "--quiet", "--out", str(out), *sets]) == 0
    r = json.loads((out / "results.json").read_text())
    assert [(row["method"], row["nfe"]) for row in r["rows"]] == [("ddpm", 1), ("ddpm", 3), ("flow", 1), ("flow", 3)]
    for row in r["rows"]:
        assert len(row["fd_seeds"]) == 2 and row["fd_mean"] > 0 and row["train_img_s"] > 0
        assert row["nfe"] >= {"heun": 2 * row["steps"] - 1}.get(row["sampler"], row["steps"])
    heun = [t for t in r["tried"] if t["sampler"] == "heun"]
    assert {(t["nfe_budget"], t["steps"], t["nfe"]) for t in heun} == {(1, 1, 1), (3, 2, 3)}
    assert len(r["floor"]["fd_seeds"]) == 2
    assert (out / "quality_vs_nfe.png").exists() and (out / "grids" / "flow_nfe3.png").exists()


def test_the_lcm_row_distils_the_class_row_and_only_guided_cfg_pays_two_evaluations_per_step(tmp_path):
    out = tmp_path / "methods"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["experiment", "methods", "--methods", "flow-class,lcm", "--steps", "2", "--n", "10", "--nfe", "1,2",
                 "--seeds", "1", "--guidance", "3", "--device", "cpu", "--quiet", "--out", str(out), *sets]) == 0
    r = json.loads((out / "results.json").read_text())
    # CFG at w = 3 on the class run: two evaluations per step, so nothing fits in 1; the LCM run reads w: one
    assert [(row["method"], row["nfe"], row["steps"]) for row in r["rows"]] == [
        ("flow-class", 2, 1), ("lcm", 1, 1), ("lcm", 2, 2)]
    assert all(t["nfe"] == 2 * t["steps"] for t in r["tried"] if t["sampler"] == "euler")
    from tinydiffusion.runs import load_run
    assert load_run(out / "runs" / "lcm")[3]["distill"]["method"] == "lcm"


def test_unknown_method_is_one_sentence(tmp_path, capsys):
    assert main(["experiment", "methods", "--methods", "gan", "--out", str(tmp_path / "m")]) == 2
    assert "Unknown method 'gan'" in capsys.readouterr().err


def test_the_latent_row_trains_an_autoencoder_first_and_shows_its_minutes_apart(digits, tmp_path):
    out = tmp_path / "methods"
    sets = [a for s in TINY + [f"data.name={digits}", "sample.clip_x0=false"] for a in ("--set", s)]
    assert main(["experiment", "methods", "--methods", "latent", "--steps", "2", "--n", "8", "--nfe", "2",
                 "--seeds", "1", "--device", "cpu", "--quiet", "--out", str(out), *sets]) == 0
    r = json.loads((out / "results.json").read_text())
    assert [(row["method"], row["nfe"]) for row in r["rows"]] == [("latent", 2)] and r["rows"][0]["fd_mean"] > 0
    meta = load_run(out / "runs" / "latent")[3]
    assert meta["shape"] == [4, 7, 7] and meta["autoencoder"]["run"] == str(out / "runs" / "ae")
    assert load_run(out / "runs" / "ae")[0].model.name == "ae-f4c4"  # the rows' model.* overrides skip it
    assert main(["experiment", "methods", "--methods", "latent-cd", "--steps", "2", "--n", "8", "--nfe", "1",
                 "--seeds", "1", "--device", "cpu", "--quiet", "--reuse", "--out", str(out), *sets]) == 0
    r = json.loads((out / "results.json").read_text())  # the latent row's run (reused) is the teacher, on the same AE
    assert [(row["method"], row["nfe"], row["sampler"]) for row in r["rows"]] == [("latent-cd", 1, "consistency")]
    meta = load_run(out / "runs" / "latent-cd")[3]
    assert meta["distill"]["method"] == "cd" and meta["autoencoder"]["run"] == str(out / "runs" / "ae")
    assert main(["experiment", "methods", "--methods", "latent", "--autoencoder", str(tmp_path / "none"),
                 "--out", str(tmp_path / "m2")]) == 2
