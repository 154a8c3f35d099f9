"""`tinydiffusion bench --variants`: what the `mnist` preset's speed choices are worth on this machine.

Each variant is the preset with `--set` overrides (paste them into `tinydiffusion train` to try one), timed
like the bench's throughput table: training img/s at the variant's batch size and precision, network calls
per second on 64 images, and the wall-clock for 64 samples with the preset's sampler. Then a profile of the
preset's training step: which operators take the time.
"""
from __future__ import annotations

import time

import torch

from tinydiffusion.checkpoint import model_from_config
from tinydiffusion.config import apply_overrides, get_preset
from tinydiffusion.device import autocast, use_bf16
from tinydiffusion.experiments.report import describe, machine, table
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.io import write_text
from tinydiffusion.paths import make_path

from .bench import measure, timing_optimizer

VARIANTS = [
    ("preset: unet-patch 32 ch, batch 64, precision auto", []),
    ("fp32", ["train.precision=fp32"]),
    ("bf16 autocast", ["train.precision=bf16"]),
    ("channels-last memory layout", ["train.channels_last=true"]),
    ("batch 32", ["train.batch_size=32"]),
    ("batch 128", ["train.batch_size=128"]),
    ("no self-attention", ["model.attention_resolutions=()"]),
    ("no GroupNorm", ["model.norm_kind=none"]),
    ("40 channels", ["model.channels=40"]),
    ("48 channels (the previous preset)", ["model.channels=48"]),
    ("64 channels", ["model.channels=64"]),
    ("patches 4x4, 64 channels", ["model.patch_size=4", "model.channels=64"]),
    ("full resolution: unet-small (32 ch, 28 px)", ["model.name=unet-small"]),
]


def time_64_samples(cfg, net) -> float:
    """Seconds for 64 samples with the config's sampler (after one warm-up call), in its precision."""
    path = make_path(cfg.diffusion.path, cfg.diffusion.T)
    bf16 = use_bf16(cfg.train.precision, "cpu")
    with torch.no_grad(), autocast("cpu", bf16):
        net(torch.randn(64, 1, 28, 28), torch.full((64,), 0.5))
    start = time.perf_counter()
    generate(denoiser_for(net, path, cfg.diffusion.prediction, cfg.sample), cfg.sample, 64, (1, 28, 28),
             generator=torch.Generator().manual_seed(0), bf16=bf16)
    return time.perf_counter() - start


def profile_step(cfg, net, steps: int = 5) -> str:
    """torch.profiler's operator table (self CPU time) for `steps` training steps of the config."""
    x = torch.randn(cfg.train.batch_size, 1, 28, 28)
    opt = timing_optimizer(cfg.train)(net.parameters())

    def step():
        with autocast("cpu", use_bf16(cfg.train.precision, "cpu")):
            loss = (net(x, torch.rand(x.shape[0])).float() - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def run_variants(out, quick: bool = False) -> str:
    info, rows = machine(), []
    base = get_preset("mnist")
    for label, overrides in VARIANTS[:2] if quick else VARIANTS:
        cfg = apply_overrides(base, overrides)
        net = model_from_config(cfg, (1, 28, 28), 0)
        speed = measure(net, net, cfg.train.batch_size, use_bf16(cfg.train.precision, "cpu"), 1 if quick else 10,
                        channels_last=cfg.train.channels_last,
                        make_opt=timing_optimizer(cfg.train))
        rows.append(dict(variant=label, set=" ".join(overrides) or "-", **speed,
                         s_per_64_samples=round(time_64_samples(cfg, net.eval()), 2)))
        print(rows[-1], flush=True)
    prof = profile_step(base, model_from_config(base, (1, 28, 28), 0).train(), 1 if quick else 5)
    md = (f"# Speed variants of the `mnist` preset\n\nMachine: {describe(info)}. 64 samples: {base.sample.sampler}, "
          f"{base.sample.steps} steps.\n\n{table(rows)}\n\n"
          f"## Profile of the preset's training step (self CPU time)\n\n```\n{prof}\n```\n")
    write_text(out / "variants.md", md)
    return md
