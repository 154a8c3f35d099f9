"""From a trained run to images: noise -> sampler -> images, in batches, plus the .npz / .png writers."""
from __future__ import annotations

import inspect
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write, load_run
from .config import SampleConfig
from .data import to_unit_range
from .denoiser import Denoiser
from .errors import UserError
from .samplers import get_sampler, make_timesteps
from .viz import save_grid


@torch.no_grad()
def generate(net, schedule, sample_cfg: SampleConfig, prediction: str, n: int, shape: tuple, *,
             batch_size: int = 256, generator: torch.Generator | None = None, device="cpu", cond=None,
             callback=None) -> torch.Tensor:
    """n images of `shape` in [-1, 1], sampled in batches with the configured sampler. cond: (n,) or None."""
    sampler = get_sampler(sample_cfg.sampler)
    options = {k: getattr(sample_cfg, k) for k in inspect.signature(sampler).parameters if hasattr(sample_cfg, k)
               and k not in ("steps",)}
    timesteps = make_timesteps(schedule.T, sample_cfg.steps, sample_cfg.spacing)
    denoiser = Denoiser(net, schedule, prediction, clip_x0=sample_cfg.clip_x0)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x_T = torch.randn((b, *shape), generator=generator).to(device)
        c = None if cond is None else cond[start:start + b].to(device)
        out.append(sampler(denoiser, x_T, timesteps, cond=c, generator=generator, callback=callback, **options).cpu())
    return torch.cat(out).clamp(-1, 1)


def save_samples(images: torch.Tensor, path: Path, labels: torch.Tensor | None = None) -> None:
    """images (N, C, H, W) in [-1, 1] -> .npz (images float32 in [0, 1], labels) or a .png grid."""
    path = Path(path)
    images01 = to_unit_range(images)
    if path.suffix == ".png":
        save_grid(images01, path)
    elif path.suffix == ".npz":
        arrays = {"images": images01.numpy().astype(np.float32)}
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    else:
        raise UserError(f"Output file {path} must end in .npz (arrays) or .png (a grid).")


def sample_run(run_dir: Path, n: int, *, sampler: str | None = None, steps: int | None = None, seed: int = 0,
               batch_size: int = 256, device: str = "cpu", use_ema: bool = True) -> torch.Tensor:
    """Load a run and draw n samples with its sampling config (sampler and steps overridable)."""
    cfg, net, schedule, meta = load_run(run_dir, use_ema=use_ema, device=device)
    sample_cfg = replace(cfg.sample, sampler=sampler or cfg.sample.sampler, steps=steps or cfg.sample.steps)
    g = torch.Generator().manual_seed(seed)
    return generate(net, schedule, sample_cfg, cfg.diffusion.prediction, n, tuple(meta["shape"]),
                    batch_size=batch_size, generator=g, device=device)
