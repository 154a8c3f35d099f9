"""generate(): the sampler, options and spacing of a SampleConfig reach the sampler; nothing is clamped."""
from __future__ import annotations

from dataclasses import replace

import torch

from tinydiffusion.conditioning import Cond
from tinydiffusion.config import SampleConfig
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.samplers import get_sampler
from tinydiffusion.timesteps import time_grid

from gaussian_oracle import LINEAR, MU, STD, GaussianOracle, denoiser


def test_generate_passes_eta_and_schedule_aware_spacings():
    def run(eta):
        cfg = SampleConfig(sampler="ddim", steps=10, spacing="karras", eta=eta, clip_x0=False)
        return generate(denoiser_for(GaussianOracle(LINEAR, MU, STD), LINEAR, "eps", cfg), cfg, 8, (1, 2, 2),
                        generator=torch.Generator().manual_seed(0))
    x_T = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))  # what generate draws first
    expected = get_sampler("ddim")(denoiser(), x_T, time_grid(LINEAR, 10, "karras"))  # generate never clamps
    torch.testing.assert_close(run(0.0), expected)
    assert not torch.allclose(run(1.0), run(0.0))  # eta reached the sampler


def test_generate_returns_the_sampler_output_unclamped_and_batches_conditions():
    """Nothing in generate clamps (a latent model generates latents); each batch gets its slice of cond."""
    cfg = SampleConfig(sampler="ddim", steps=5, spacing="uniform", clip_x0=False)
    wide = GaussianOracle(LINEAR, MU * 6, STD)  # data far outside [-1, 1]
    x = generate(denoiser_for(wide, LINEAR, "eps", cfg), cfg, 64, (1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert x.abs().max() > 2

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond=None):
            seen.append(cond.labels.tolist())
            return torch.zeros_like(x)

    generate(denoiser_for(Spy(), LINEAR, "eps", replace(cfg, steps=1)), replace(cfg, steps=1), 5, (1, 2, 2),
             batch_size=2, cond=Cond(labels=torch.arange(5)))
    assert seen == [[0, 1], [2, 3], [4]]
