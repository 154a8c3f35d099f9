"""From a trained run to images: noise -> sampler -> images, in batches, plus the .npz / .png writers."""
from __future__ import annotations

import inspect
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .checkpoint import atomic_write, load_run
from .config import SampleConfig
from .data import to_unit_range
from .denoiser import Denoiser
from .device import autocast, use_bf16
from .errors import UserError
from .guidance import guided
from .samplers import get_sampler, make_timesteps
from .viz import font, grid_array, save_grid, save_png, to_pil


@torch.no_grad()
def generate(net, schedule, sample_cfg: SampleConfig, prediction: str, n: int, shape: tuple, *,
             batch_size: int = 256, generator: torch.Generator | None = None, device="cpu", cond=None,
             callback=None, guidance: float | None = None, guidance_rescale: float = 0.0,
             null_label: int | None = None, bf16: bool = False) -> torch.Tensor:
    """n images of `shape` in [-1, 1], sampled in batches with the configured sampler. cond: (n,) labels, a
    Context of n prompts, or None. guidance: classifier-free guidance scale w (None = plain conditional);
    null_label defaults to net.num_classes. bf16: run the network under bf16 autocast (see device.py)."""
    sampler = get_sampler(sample_cfg.sampler)
    options = {k: getattr(sample_cfg, k) for k in inspect.signature(sampler).parameters if hasattr(sample_cfg, k)
               and k not in ("steps",)}
    timesteps = make_timesteps(schedule, sample_cfg.steps, sample_cfg.spacing)  # karras/logsnr need the noise levels
    denoiser = guided(Denoiser(net, schedule, prediction, clip_x0=sample_cfg.clip_x0), guidance,
                      null_label=getattr(net, "num_classes", None) if null_label is None else null_label,
                      rescale=guidance_rescale)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x_T = torch.randn((b, *shape), generator=generator).to(device)
        c = None if cond is None else cond[start:start + b].to(device)
        with autocast(device, bf16):
            out.append(sampler(denoiser, x_T, timesteps, cond=c, generator=generator, callback=callback,
                               **options).cpu())
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


def conditioning(cfg, meta: dict, *, labels: torch.Tensor | None = None, prompts: list[str] | None = None,
                 guidance: float | None = None):
    """(cond for the net, labels or None) for a run, checking that the run can take what was asked for.

    Class runs take labels; text runs take prompts, or labels turned into prompts ("a handwritten 7"). The
    labels returned for prompts are the digits they name, when every prompt names one.
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
            return labels.long(), labels.long()
        from .captions import class_prompt
        prompts = [class_prompt(int(c)) for c in labels]
    if prompts is not None:
        if not text:
            raise UserError("This run does not read text prompts (train one with --preset mnist-text); "
                            + ("use --class instead." if num_classes else "drop --prompt."))
        from .captions import digit_in_prompt
        from .text_encoder import get_encoder
        digits = [digit_in_prompt(p) for p in prompts] if labels is None else labels.tolist()
        found = None if None in digits else torch.tensor(digits, dtype=torch.long)
        return get_encoder().encode(list(prompts)), found
    return None, None


def save_labelled_grid(images: torch.Tensor, path: Path, row_names: list[str]) -> None:
    """A PNG grid with one row per name (class or prompt) and the name written to the left of its row."""
    per_row = len(images) // len(row_names)
    grid = to_pil(grid_array(to_unit_range(images), per_row, scale=2))
    fnt = font(14)
    left = int(max(fnt.getlength(n) for n in row_names)) + 12
    page = Image.new("RGB", (grid.width + left, grid.height), "white")
    page.paste(grid.convert("RGB"), (left, 0))
    draw, row_h = ImageDraw.Draw(page), grid.height / len(row_names)
    for r, name in enumerate(row_names):
        draw.text((6, (r + 0.5) * row_h - 8), name, font=fnt, fill=(0, 0, 0))
    save_png(page, path)


def sample_run(run_dir: Path, n: int, *, sampler: str | None = None, steps: int | None = None,
               spacing: str | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu",
               use_ema: bool = True) -> torch.Tensor:
    """Load a run and draw n samples with its sampling config (sampler, steps and spacing overridable)."""
    return sample_conditional(run_dir, n, sampler=sampler, steps=steps, spacing=spacing, seed=seed,
                              batch_size=batch_size, device=device, use_ema=use_ema)[0]


def sample_conditional(run_dir: Path, n: int, *, sampler: str | None = None, steps: int | None = None,
                       spacing: str | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu",
                       use_ema: bool = True, labels: torch.Tensor | None = None, prompts: list[str] | None = None,
                       guidance: float | None = None, guidance_rescale: float = 0.0):
    """(images (n, C, H, W) in [-1, 1], labels (n,) or None) from a run, for n labels or n prompts (or
    neither), with optional classifier-free guidance; bad requests raise UserError before any sampling."""
    cfg, net, schedule, meta = load_run(run_dir, use_ema=use_ema, device=device)
    for given, what in ((labels, "labels"), (prompts, "prompts")):
        if given is not None and len(given) != n:
            raise UserError(f"Give one of the {what} per image: got {len(given)} for {n} images.")
    cond, labels = conditioning(cfg, meta, labels=labels, prompts=prompts, guidance=guidance)
    sample_cfg = replace(cfg.sample, sampler=cfg.sample.sampler if sampler is None else sampler,
                         steps=cfg.sample.steps if steps is None else steps,
                         spacing=cfg.sample.spacing if spacing is None else spacing)
    g = torch.Generator().manual_seed(seed)
    images = generate(net, schedule, sample_cfg, cfg.diffusion.prediction, n, tuple(meta["shape"]),
                      batch_size=batch_size, generator=g, device=device, cond=cond, guidance=guidance,
                      guidance_rescale=guidance_rescale, bf16=use_bf16(cfg.train.precision, device))
    return images, labels
