"""A trained run directory as users meet it: load it, check what it can be conditioned on, sample from it."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import CONFIG, EMA, MANIFEST, MODEL, latest, load_meta, load_weights, model_from_config
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
    if cfg.control.base:  # a ControlNet: its base run, frozen, and the trained branch
        net, trainable = load_control_net(cfg, meta, device, use_ema)
    else:
        net = trainable = model_from_config(cfg, tuple(meta["shape"]), int(meta.get("num_classes", 0)))
    if weights is not None:
        if not Path(weights).is_file():
            raise UserError(f"Weights file {weights} does not exist.")
    else:
        weights = folder / EMA if use_ema and (folder / EMA).exists() else folder / MODEL
    if use_ema and weights == folder / MODEL and cfg.train.ema_decay > 0:  # trained with EMA, but its file is gone
        print(f"note: {folder / EMA} is missing, so the raw weights ({MODEL}) are used; pass --raw to choose "
              "them on purpose.", file=sys.stderr)
    load_weights(trainable, weights)
    return cfg, net.to(device).eval(), make_path(cfg.diffusion.path, cfg.diffusion.T), meta


def control_model(cfg, base, shape: tuple, num_classes: int):
    """(the network a control run samples with, the part of it that trains and is saved): a ControlNet on the frozen
    base net, or (control.arch = concat) the base's architecture built afresh with the map as one more input channel."""
    from .models.controlnet import ConcatControl, ControlBranch, ControlNet

    if cfg.control.arch == "concat":
        C, H, W = shape
        net = ConcatControl(model_from_config(cfg, (C + 1, H, W), num_classes), C)
        return net, net.net
    branch = ControlBranch(base, hint_channels=cfg.control.hint_channels, zero_init=cfg.control.zero_init)
    return ControlNet(base, branch), branch


def check_base(base_dir: Path, base_meta: dict, dataset: str, shape: tuple, what: str) -> None:
    """One sentence unless the base run generates images of `dataset` and `shape` (and is a pixel denoiser)."""
    if base_meta.get("kind") == "autoencoder" or base_meta.get("autoencoder") or base_meta.get("control"):
        raise UserError(f"The base run {base_dir} is not a pixel denoiser (an autoencoder, a latent run or a "
                        "ControlNet); give control.base a run trained with --preset mnist (or another pixel preset).")
    if base_meta.get("dataset") != dataset or tuple(base_meta["shape"]) != tuple(shape):
        raise UserError(f"The base run {base_dir} generates {base_meta.get('dataset')} images of shape "
                        f"{tuple(base_meta['shape'])}, but {what} {dataset} images of shape {tuple(shape)}; choose a "
                        "base trained on the same data.")


def base_digest(base_dir: Path) -> str:
    """The SHA-256 of the base run's newest weights (its EMA file where there is one), from its manifest."""
    import json
    folder = latest(base_dir, quiet=True)
    files = json.loads((folder / MANIFEST).read_text())["files"] if (folder / MANIFEST).exists() else {}
    return files.get(EMA, files.get(MODEL, ""))


def load_control_net(cfg, meta: dict, device: str, use_ema: bool):
    """(net, trainable part) of a control run, its base run loaded (frozen) and checked against what it learnt."""
    known = meta.get("control", {})
    base_dir = Path(known.get("base", cfg.control.base))
    _, base, _, base_meta = load_run(base_dir, use_ema=use_ema, device=device)
    check_base(base_dir, base_meta, meta["dataset"], tuple(meta["shape"]), "this ControlNet was trained on")
    if cfg.control.arch == "controlnet" and known.get("digest") and base_digest(base_dir) != known["digest"]:
        raise UserError(f"The base run {base_dir} has changed since this ControlNet was trained on it (its weights "
                        "differ); restore it, or train the ControlNet again.")
    return control_model(cfg, base, tuple(meta["shape"]), int(meta.get("num_classes", 0)))


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
                       callback=None, control: torch.Tensor | None = None, control_scale: float | None = None,
                       drop_control: bool = False):
    """(images (n, C, H, W) in [-1, 1], labels (n,) or None) from a run, for n labels or n prompts (or
    neither), with optional classifier-free guidance; bad requests raise UserError before any sampling.
    control: n maps (n, 1, H, W) in {0, 1} for a control run, at control_scale (default: the run's control.scale);
    drop_control: guidance's unconditional branch is the base without the map (guidance on the map itself).
    callback(frame): called once per sampler step with the sampler's dict (i, t, x, x0_hat) of the current batch,
    x and x0_hat as images (decoded through the autoencoder of a latent run)."""
    cfg, net, path, meta = load_run(run_dir, use_ema=use_ema, device=device, weights=weights)
    for given, what in ((labels, "labels"), (prompts, "prompts")):
        if given is not None and len(given) != n:
            raise UserError(f"Give one of the {what} per image: got {len(given)} for {n} images.")
    if control is not None and not cfg.control.base:
        raise UserError("This run was not trained with control maps (train one with --preset mnist-controlnet); "
                        "drop --control.")
    if drop_control and (control is None or guidance is None):
        raise UserError("Dropping the control map in guidance needs --guidance W and a control map.")
    if control is not None and len(control) != n:
        raise UserError(f"Give one control map per image: got {len(control)} for {n} images.")
    cond, labels = conditioning(cfg, meta, labels=labels, prompts=prompts,
                                guidance=None if drop_control else guidance)  # the map is what guidance steers by
    if control is not None:
        from .conditioning.control import control_cond
        cond = control_cond(control, cfg.control.scale if control_scale is None else control_scale, cond)
    sample_cfg = replace(cfg.sample, sampler=cfg.sample.sampler if sampler is None else sampler,
                         steps=cfg.sample.steps if steps is None else steps,
                         spacing=cfg.sample.spacing if spacing is None else spacing)
    denoiser = denoiser_for(net, path, cfg.diffusion.prediction, sample_cfg, guidance=guidance,
                            guidance_rescale=guidance_rescale, drop_control=drop_control)
    space = run_latent_space(meta, device)  # None for a pixel run
    if space is not None and callback is not None:
        callback = _decoding(callback, space)
    images = generate(denoiser, sample_cfg, n, tuple(meta["shape"]), batch_size=batch_size,
                      seed=seed, device=device, cond=cond,
                      bf16=use_bf16(cfg.train.precision, device), callback=callback)
    if space is not None:
        images = space.decode(images)
    return images.clamp(-1, 1), labels  # images: pixels, so clamped to the data range


def _decoding(callback, space):
    """callback, fed frames whose x and x0_hat are decoded from latents to images."""
    return lambda frame: callback({**frame, "x": space.decode(frame["x"]), "x0_hat": space.decode(frame["x0_hat"])})
