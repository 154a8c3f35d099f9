"""runs.py: loading a run directory, its conditioning checks, and sampling it. Runs written by earlier versions
(tests/fixtures/runs, made by tests/fixtures/make_old_runs.sh at 151e4c9) sample to exactly what they sampled to
then (tests/fixtures/old_samples.npz, recorded by tests/fixtures/record_old_samples.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tinydiffusion.denoiser import Denoiser
from tinydiffusion.errors import UserError
from tinydiffusion.runs import load_run, sample_conditional
from tinydiffusion.samplers import get_sampler
from tinydiffusion.timesteps import time_grid

FIXTURES = Path(__file__).parent / "fixtures"
OLD = np.load(FIXTURES / "old_samples.npz")
RUNS = ("uncond-v", "class-eps", "text-v")


def same(got: torch.Tensor, key: str) -> None:
    """Bit-identical on the CPU kind that recorded them (one thread, as these tests run); other CPUs' kernels
    round differently, so there the check is to float32 rounding."""
    want = torch.from_numpy(OLD[key])
    if torch.backends.cpu.get_cpu_capability() == str(OLD["cpu"]):
        assert torch.equal(got, want), f"{key}: max diff {(got - want).abs().max().item():.3g}"
    else:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=key)


@pytest.mark.parametrize("run", RUNS)
def test_old_runs_sample_every_sampler_to_the_recorded_values(run):
    cfg, net, path, meta = load_run(FIXTURES / "runs" / run)
    assert path.name == f"ddpm-{json.loads((FIXTURES / 'runs' / run / 'config.json').read_text())['diffusion']['schedule']}"
    keys = [k for k in OLD.files if k.startswith(f"raw/{run}/")]
    assert len(keys) == 16
    options = {"ddpm/uniform": {"variance": "small"}, "ddpm/trailing": {"variance": "large"},
               "ddim/uniform": {"eta": 0.0}, "ddim/quadratic": {"eta": 0.5}}
    for key in keys:
        _, _, sampler, spacing, clip = key.split("/")
        denoiser = Denoiser(net, path, cfg.diffusion.prediction, clip_x0=clip == "clip1")
        g = torch.Generator().manual_seed(0)
        x_T = torch.randn((4, *meta["shape"]), generator=g)
        x = get_sampler(sampler)(denoiser, x_T, time_grid(path, 5, spacing), generator=g,
                                 **options.get(f"{sampler}/{spacing}", {}))
        same(x, key)


@pytest.mark.parametrize("run", RUNS)
def test_old_runs_sample_with_their_conditioning_and_guidance_to_the_recorded_values(run):
    labels = torch.tensor([3, 1, 4, 1])
    requests = {"plain": {}}
    if run == "class-eps":
        requests.update(cls={"labels": labels}, cfg2={"labels": labels, "guidance": 2.0},
                        cfg3r={"labels": labels, "guidance": 3.0, "guidance_rescale": 0.7})
    if run == "text-v":
        requests.update(prompt={"prompts": ["a thick seven", "the digit 3", "", "a thin 2"], "guidance": 2.0},
                        cls={"labels": labels, "guidance": 3.0})
    for name, kw in requests.items():
        images, _ = sample_conditional(FIXTURES / "runs" / run, 4, seed=1, **kw)
        same(images, f"run/{run}/{name}")
    images, _ = sample_conditional(FIXTURES / "runs" / run, 4, seed=2, use_ema=False, sampler="ddim", steps=4)
    same(images, f"run/{run}/raw-ddim4")


def test_a_missing_run_directory_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_run(tmp_path / "nothing")
