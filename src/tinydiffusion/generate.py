"""From a network to samples: noise -> sampler -> tensors, in batches. Nothing here writes files or clamps:
pixels are clamped where they are made (`data.to_unit_range`), since a latent model generates latents."""
from __future__ import annotations

import torch

from . import distributed
from .config import SampleConfig
from .denoiser import Denoiser
from .device import autocast
from .guidance import guided
from .samplers import get_sampler, sampler_options
from .paths import Path
from .timesteps import time_grid


def denoiser_for(net, path: Path, prediction: str, sample_cfg: SampleConfig, *, guidance: float | None = None,
                 guidance_rescale: float = 0.0, drop_control: bool = False):
    """The Denoiser of a net for sampling with sample_cfg (its x0 clipping), wrapped in classifier-free guidance at
    scale w = guidance unless that is None (drop_control: the unconditional branch without the control map)."""
    return guided(Denoiser(net, path, prediction, clip_x0=sample_cfg.clip_x0), guidance, rescale=guidance_rescale,
                  drop_control=drop_control)


@torch.no_grad()
def generate(denoiser, sample_cfg: SampleConfig, n: int, shape: tuple, *, batch_size: int = 256,
             generator: torch.Generator | None = None, seed: int | None = None, device="cpu", cond=None,
             callback=None, bf16: bool = False, noise: torch.Tensor | None = None) -> torch.Tensor:
    """n samples (n, *shape) from x_T ~ N(0, I), in batches, with the sampler, steps, spacing and options of
    sample_cfg: the sampler's output as it is (images land near [-1, 1], unclamped). cond: a Cond of n
    conditions, or None. bf16: run the network under bf16 autocast (see device.py). noise: the starting points
    x_T (n, *shape) to use instead of drawing them (reflow's couplings).

    Randomness: one `generator` drawn through batch after batch, or (seed given) batch j drawing from its own
    stream seeded by batch_seed(seed, j). Per-batch streams make the result independent of who computes each
    batch: under torchrun the batches are shared round robin across ranks and gathered in order, so N processes
    return exactly the n images one process would (distributed.gather_batches)."""
    sampler = get_sampler(sample_cfg.sampler)
    options = sampler_options(sample_cfg.sampler, sample_cfg)
    grid = time_grid(denoiser.path, sample_cfg.steps, sample_cfg.spacing, sample_cfg.shift)  # descending, ends at 0
    n_batches = -(-n // batch_size)
    todo = range(n_batches) if seed is None else distributed.my_batches(n_batches)
    out = {}
    for j in todo:
        start, b = j * batch_size, min(batch_size, n - j * batch_size)
        g = generator if seed is None else torch.Generator().manual_seed(batch_seed(seed, j))
        x_T = torch.randn((b, *shape), generator=g) if noise is None else noise[start:start + b]
        x_T = x_T.to(device)
        c = None if cond is None else cond[start:start + b].to(device)
        with autocast(device, bf16):
            out[j] = sampler(denoiser, x_T, grid, cond=c, generator=g, callback=callback, **options).cpu()
    if seed is None:
        return torch.cat([out[j] for j in range(n_batches)])
    return distributed.gather_batches(out, n_batches)  # (n, *shape) on every rank


def batch_seed(seed: int, j: int) -> int:
    """The seed of sampling batch j's stream; batch 0's is `seed` itself (so one batch draws as it always did)."""
    return seed + 1_000_003 * j
