"""Experiments: `tinydiffusion experiment NAME ...` writes a report folder (report.md + results.json + pictures).

Each experiment module defines `add_arguments(parser)` and `run(args) -> Path` (the report folder) and is
listed in EXPERIMENTS below with a one-line description.
"""
from __future__ import annotations

import importlib

from ..registry import Registry

# name -> the module under tinydiffusion.experiments (imported when the experiment runs)
EXPERIMENTS = Registry("experiment")
EXPERIMENTS.add("guidance", "guidance",
                "classifier-free guidance sweep on a conditional run: label accuracy, diversity, saturation per w")
EXPERIMENTS.add("timing", "timing",
                "one training step vs generating 64 images with the full chain, measured and extrapolated")
EXPERIMENTS.add("schedules", "schedules",
                "linear vs cosine schedule, same training budget: samples and the project metric")
EXPERIMENTS.add("timesteps", "timesteps",
                "T = 1000, 500, 200 with the same training budget: samples and the project metric")
EXPERIMENTS.add("vae-vs-ddpm", "vae_vs_ddpm",
                "a convolutional VAE vs DDPM, same data and budget: quality, sharpness, ms/image")
EXPERIMENTS.add("seed-checkpoints", "seed_checkpoints",
                "the lesson's three checkpoints (forward process, loss, samples), PASS/FAIL")
EXPERIMENTS.add("nfe", "nfe", "quality vs number of function evaluations for each sampler")
EXPERIMENTS.add("methods", "methods", "each method (DDPM, flow, ...) trained for the same minutes: quality vs NFE, "
                "best sampler per NFE, n = 1000, three seeds, the real-digit floor")
EXPERIMENTS.add("backbones", "backbones", "U-Net and DiT (or any presets) at equal wall-clock: params, GFLOPs/image, "
                "img/s, and fd_classifier after 2/5/10 minutes, n = 1000, three seeds")

EXPERIMENTS.add("controlnet", "controlnet", "ControlNet on a trained base: fidelity to held-out maps (F1, label accuracy) "
                "vs control scale, zero vs random init, and a from-scratch model with the map as input, at equal minutes")
EXPERIMENTS.add("latent-vs-pixel", "latent_vs_pixel", "latent diffusion (autoencoder + latent run) beside pixel "
                "diffusion at equal total minutes: fd_classifier, img/s, s per 64 images, the reconstruction ceiling")


def load(name: str):
    """The module of experiment `name`."""
    return importlib.import_module(f"{__name__}.{EXPERIMENTS.get(name)}")
