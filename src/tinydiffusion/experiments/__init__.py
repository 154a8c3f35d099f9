"""Experiments: `tinydiffusion experiment NAME ...` writes a report folder (report.md + results.json + pictures).

Each experiment module defines `add_arguments(parser)` and `run(args) -> Path` (the report folder) and is
listed in EXPERIMENTS below with a one-line description.
"""
from __future__ import annotations

import importlib

# name -> (module under tinydiffusion.experiments, one-line description)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "guidance": ("guidance", "classifier-free guidance sweep on a conditional run: label accuracy, diversity, saturation per w"),
    "timing": ("timing", "one training step vs generating 64 images with the full chain, measured and extrapolated"),
    "schedules": ("schedules", "linear vs cosine schedule, same training budget: samples and the project metric"),
    "timesteps": ("timesteps", "T = 1000, 500, 200 with the same training budget: samples and the project metric"),
    "vae-vs-ddpm": ("vae_vs_ddpm", "a convolutional VAE vs DDPM, same data and budget: quality, sharpness, ms/image"),
    "seed-checkpoints": ("seed_checkpoints", "the lesson's three checkpoints (forward process, loss, samples), PASS/FAIL"),
    "nfe": ("nfe", "quality vs number of function evaluations for each sampler"),
}


def load(name: str):
    """The module of experiment `name`."""
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name][0]}")
