"""A trained run directory as users meet it: load it, check what it can be conditioned on, sample from it."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import CONFIG, EMA, MODEL, latest, load_meta, load_weights, model_from_config
from .conditioning import Cond
from .config import load_config
from .device import use_bf16
from .errors import UserError
from .generate import denoiser_for, generate
from .latent_space import run_latent_space
from .paths import make_path


def load_run(run_dir: Path, use_ema: bool = True, device: str = "cpu", weights: Path | None = None):
    """(cfg, net, path, meta) of a trained run; net in eval mode, EMA weights when they exist. `weights`: a
    weights file to load instead of the checkpoint's (e.g. snapshots/5min.safetensors)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"Run directory {run_dir} does not exist.")
    cfg = load_config(run_dir / CONFIG)
    folder = latest(run_dir)  # the newest complete checkpoint
    meta = load_meta(run_dir, folder)
    net = model_from_config(cfg, tuple(meta["shape"]), int(meta.get("num_classes", 0)))
    if weights is not None:
        if not Path(weights).is_file():
            raise UserError(f"Weights file {weights} does not exist.")
    else:
        weights = folder / EMA if use_ema and (folder / EMA).exists() else folder / MODEL
    if use_ema and weights == folder / MODEL and cfg.train.ema_decay > 0:  # trained with EMA, but its file is gone
        print(f"note: {folder / EMA} is missing, so the raw weights ({MODEL}) are used; pass --raw to choose "
              "them on purpose.", file=sys.stderr)
    load_weights(net, weights)
    return cfg, net.to(device).eval(), make_path(cfg.diffusion.path, cfg.diffusion.T), meta


def conditioning(cfg, meta: dict, *, labels: torch.Tensor | None = None, prompts: list[str] | None = None,
                 guidance: float | None = None, encode: bool = True) -> tuple[Cond | None, torch.Tensor | None]:
    """(Cond for the net, labels or None) for a run, checking that the run can take what was asked for.

    Class runs take labels; text runs take prompts, or labels turned into prompts ("a handwritten 7"). The
    labels returned for prompts are the digits they name, when every prompt names one. encode=False only checks
    (the Cond of a text run is then None: the prompts are not run through the text encoder).
    """
    num_classes, text = int(meta.get("num_classes", 0)), bool(cfg.data.text)
    if guidance is not None and not (num_classes or text):
        raise UserError("Guidance needs a conditional run, and this one was trained without labels or prompts; "
                        "train one with --preset mnist-class or mnist-text.")
    if guidance is not None and labels is None and prompts is None:
        raise UserError("Guidance needs something to guide towards: add --class, --classes or --prompt.")
    if labels is not None:
        if not (num_classes or text):
            raise UserError("This run is unconditional, so it cannot draw a chosen class; "
                            "train one with --preset mnist-class.")
        k = num_classes or 10  # text runs know the ten digits through their captions
        bad = [int(c) for c in labels.tolist() if not 0 <= c < k]
        if bad:
            raise UserError(f"Class {bad[0]} is out of range: this run has classes 0-{k - 1}.")
        if num_classes:
            return Cond(labels=labels.long()), labels.long()
        from .conditioning.captions import class_prompt
        prompts = [class_prompt(int(c)) for c in labels]
    if prompts is not None:
        if not text:
            raise UserError("This run does not read text prompts (train one with --preset mnist-text); "
                            + ("use --class instead." if num_classes else "drop --prompt."))
        from .conditioning.captions import digit_in_prompt
        from .conditioning.text_encoder import get_encoder
        digits = [digit_in_prompt(p) for p in prompts] if labels is None else labels.tolist()
        found = None if None in digits else torch.tensor(digits, dtype=torch.long)
        return (get_encoder().encode(list(prompts)) if encode else None), found
    return None, None


def sample_run(run_dir: Path, n: int, *, sampler: str | None = None, steps: int | None = None,
               spacing: str | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu",
               use_ema: bool = True, weights: Path | None = None) -> torch.Tensor:
    """Load a run and draw n samples with its sampling config (sampler, steps and spacing overridable)."""
    return sample_conditional(run_dir, n, sampler=sampler, steps=steps, spacing=spacing, seed=seed,
                              batch_size=batch_size, device=device, use_ema=use_ema, weights=weights)[0]


def sample_conditional(run_dir: Path, n: int, *, sampler: str | None = None, steps: int | None = None,
                       spacing: str | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu",
                       use_ema: bool = True, labels: torch.Tensor | None = None, prompts: list[str] | None = None,
                       guidance: float | None = None, guidance_rescale: float = 0.0, weights: Path | None = None,
                       callback=None):
    """(images (n, C, H, W) in [-1, 1], labels (n,) or None) from a run, for n labels or n prompts (or
    neither), with optional classifier-free guidance; bad requests raise UserError before any sampling.
    callback(frame): called once per sampler step with the sampler's dict (i, t, x, x0_hat) of the current batch,
    x and x0_hat as images (decoded through the autoencoder of a latent run)."""
    cfg, net, path, meta = load_run(run_dir, use_ema=use_ema, device=device, weights=weights)
    for given, what in ((labels, "labels"), (prompts, "prompts")):
        if given is not None and len(given) != n:
            raise UserError(f"Give one of the {what} per image: got {len(given)} for {n} images.")
    cond, labels = conditioning(cfg, meta, labels=labels, prompts=prompts, guidance=guidance)
    sample_cfg = replace(cfg.sample, sampler=cfg.sample.sampler if sampler is None else sampler,
                         steps=cfg.sample.steps if steps is None else steps,
                         spacing=cfg.sample.spacing if spacing is None else spacing)
    denoiser = denoiser_for(net, path, cfg.diffusion.prediction, sample_cfg, guidance=guidance,
                            guidance_rescale=guidance_rescale)
    space = run_latent_space(meta, device)  # None for a pixel run
    if space is not None and callback is not None:
        callback = _decoding(callback, space)
    images = generate(denoiser, sample_cfg, n, tuple(meta["shape"]), batch_size=batch_size,
                      generator=torch.Generator().manual_seed(seed), device=device, cond=cond,
                      bf16=use_bf16(cfg.train.precision, device), callback=callback)
    if space is not None:
        images = space.decode(images)
    return images.clamp(-1, 1), labels  # images: pixels, so clamped to the data range


def _decoding(callback, space):
    """callback, fed frames whose x and x0_hat are decoded from latents to images."""
    return lambda frame: callback({**frame, "x": space.decode(frame["x"]), "x0_hat": space.decode(frame["x0_hat"])})
