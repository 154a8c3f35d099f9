"""The standard diffusers recipe as a peer: UNet2DModel + DDPMScheduler (linear, 1000 steps), AdamW 1e-4.

Bench-only: `pip install diffusers` (it needs no torchvision). The package itself never imports diffusers.
The layout is the Hugging Face diffusion course's UNet2DModel for 32 px (channels 64-128-128-256, two
layers per block, attention in the two lowest down/up blocks); MNIST is padded from 28 to 32 px with the
background value and cropped back for evaluation.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tinydiffusion.io import atomic_write, write_text
from tinydiffusion.data import Batches, load_dataset, to_model_range
from tinydiffusion.errors import UserError


def _diffusers():
    try:
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
    except ImportError:
        raise UserError("The diffusers peer needs `pip install diffusers` (bench only); or pass --recipes "
                        "without 'diffusers'.") from None
    return UNet2DModel, DDPMScheduler, DDIMScheduler


def build_unet():
    UNet2DModel, _, _ = _diffusers()
    return UNet2DModel(sample_size=32, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(64, 128, 128, 256),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def pad32(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) -> (B, 1, 32, 32), padded with the background value -1."""
    return F.pad(x, (2, 2, 2, 2), value=-1.0)


def train_step_fn(unet, scheduler, optimizer, g):
    """One step of the diffusers example's loop: random t, add_noise, MSE on eps."""
    def step(x0):
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=g)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def train_peer(out: Path, minutes: float, marks: list[float], batch_size: int = 128, seed: int = 0) -> dict:
    """Train for `minutes` of step time, saving the weights at each mark (minutes) to out/{m}min.pt."""
    _, DDPMScheduler, _ = _diffusers()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = load_dataset("mnist", "train")
    batches = Batches(len(data), batch_size, seed)
    unet = build_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    step_fn = train_step_fn(unet, scheduler, optimizer, g)
    out.mkdir(parents=True, exist_ok=True)
    elapsed, step, pending, loss = 0.0, 0, sorted(marks), float("nan")
    while pending:
        t0 = time.perf_counter()
        loss = step_fn(pad32(to_model_range(data.images[batches.indices(step)])))
        elapsed += time.perf_counter() - t0
        step += 1
        while pending and elapsed >= pending[0] * 60:
            atomic_write(out / f"{pending.pop(0):g}min.pt", lambda tmp: torch.save(unet.state_dict(), tmp))
    record = dict(steps=step, loss=loss, img_per_s=step * batch_size / elapsed)
    write_text(out / "train.json", json.dumps(record))  # last: it marks the training as finished (bench --resume)
    return record


@torch.no_grad()
def sample_peer(weights: Path, n: int, scheduler_name: str, steps: int, seed: int = 0, batch_size: int = 250):
    """n images (N, 1, 28, 28) in [0, 1]: DDPMPipeline-style ancestral sampling or DDIM, cropped to 28 px."""
    _, DDPMScheduler, DDIMScheduler = _diffusers()
    unet = build_unet()
    unet.load_state_dict(torch.load(weights, weights_only=True))
    unet.eval()
    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[scheduler_name]
    scheduler = cls(num_train_timesteps=1000, beta_schedule="linear")
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    images = []
    for start in range(0, n, batch_size):
        x = torch.randn((min(batch_size, n - start), 1, 32, 32), generator=g)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=g).prev_sample
        images.append(((x[:, :, 2:30, 2:30].clamp(-1, 1) + 1) / 2))
    return torch.cat(images)


def forward_fn():
    """A callable (x (B,1,28,28), t (B,) int) -> output (B,1,28,28), for throughput timing."""
    unet = build_unet()
    return unet, lambda x, t: unet(pad32(x), t).sample[:, :, 2:30, 2:30]
