"""The latent space of a trained autoencoder run, as a latent diffusion run uses it: encode images to standardised
latents, decode standardised latents to images, and the checks that a latent run's autoencoder is the one it was
trained with (its weights' SHA-256, recorded in the latent run's meta.json).
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .checkpoint import CONFIG, MANIFEST, MODEL, latest, load_meta, load_weights, model_from_config
from .config import load_config
from .data.latents import LatentSet, cached_latents, check_mode, standardize, unstandardize
from .errors import UserError
from .models import is_autoencoder

TRAIN_IT = "train one with `tinydiffusion train --preset mnist-ae`, or name one with --set data.autoencoder=RUN"


@dataclass(frozen=True, eq=False)
class LatentSpace:
    ae: torch.nn.Module  # in eval mode, on `device`
    stats: dict  # per-channel mean, std, std_sampled over the training set (data/latents.latent_stats)
    mode: str  # mean | sample: which latents the diffusion run learns (and which std standardises them)
    run_dir: Path
    digest: str  # SHA-256 of the autoencoder's weights file
    image_shape: tuple[int, int, int]
    shape: tuple[int, int, int]  # the latent grid (c, h, w)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> standardised posterior means (B, c, h, w)."""
        device = next(self.ae.parameters()).device
        return standardize(self.ae.encode(x.to(device))[0].float(), self.stats, self.mode).cpu()

    @torch.no_grad()
    def decode(self, z_std: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Standardised latents (B, c, h, w) -> images (B, C, H, W) near [-1, 1] (not clamped), in batches."""
        device = next(self.ae.parameters()).device
        out = [self.ae.decode(unstandardize(z.float().to(device), self.stats, self.mode)).float().cpu()
               for z in z_std.split(batch_size)]
        return torch.cat(out) if out else z_std.new_zeros((0, *self.image_shape))


def weights_digest(ae_dir: Path) -> tuple[Path, str]:
    """(checkpoint folder, SHA-256 of its weights file) of an autoencoder run's newest complete checkpoint."""
    folder = latest(ae_dir, quiet=True)
    return folder, json.loads((folder / MANIFEST).read_text())["files"][MODEL]


def load_latent_space(ae_dir: Path, mode: str = "mean", device="cpu") -> LatentSpace:
    """An autoencoder run's latent space; one sentence if the directory is missing, is not an autoencoder run, or
    has not finished training (no latent statistics)."""
    check_mode(mode)
    ae_dir = Path(ae_dir)
    if not (ae_dir / CONFIG).exists():
        raise UserError(f"The autoencoder run {ae_dir} does not exist; {TRAIN_IT}.")
    cfg = load_config(ae_dir / CONFIG)
    if not is_autoencoder(cfg.model.name):
        raise UserError(f"{ae_dir} is a '{cfg.model.name}' run, not an autoencoder; {TRAIN_IT}.")
    folder, digest = weights_digest(ae_dir)
    meta = load_meta(ae_dir, folder)
    if "latent_stats" not in meta:
        raise UserError(f"The autoencoder run {ae_dir} has no latent statistics yet (its training did not finish); "
                        f"resume it with `tinydiffusion train --resume --out {ae_dir}`.")
    ae = model_from_config(cfg, tuple(meta["shape"]), 0)
    load_weights(ae, folder / MODEL)
    return LatentSpace(ae.to(device).eval().requires_grad_(False), meta["latent_stats"], mode, ae_dir, digest,
                       tuple(meta["shape"]), tuple(meta["latent_shape"]))


def run_latent_space(meta: dict, device="cpu") -> LatentSpace | None:
    """The latent space of a latent diffusion run (None for a pixel run), checked against the autoencoder weights it
    was trained with."""
    info = meta.get("autoencoder")
    if not info:
        return None
    run = Path(info["run"])
    if not (run / CONFIG).exists():
        raise UserError(f"This latent run's autoencoder {run} is missing; restore it (or retrain the latent run on "
                        "another autoencoder).")
    current = weights_digest(run)[1]
    if current != info["digest"]:
        raise UserError(f"This latent run's autoencoder {run} has changed since the run was trained (its weights "
                        f"are {current[:12]}, the run learnt {info['digest'][:12]}); restore that autoencoder or "
                        "retrain the latent run.")
    return _load(str(run), current, info.get("latents", "mean"), str(device))


@functools.lru_cache(maxsize=4)
def _load(run: str, digest: str, mode: str, device: str) -> LatentSpace:
    """Loaded once per (run, weights, mode, device): sampling a run twice does not reload its autoencoder."""
    return load_latent_space(Path(run), mode, device)


def latent_training_set(cfg, data, device="cpu") -> tuple[LatentSpace, LatentSet]:
    """The latent space named by cfg.data.autoencoder and the training set `data` in it, encoded once (the cache in
    the autoencoder's run directory, rebuilt whenever its weights change). The autoencoder must have been trained on
    the same data."""
    space = load_latent_space(Path(cfg.data.autoencoder), cfg.data.latents, device)
    ae_data = load_config(space.run_dir / CONFIG).data
    mine, theirs = [(d.name, d.path, d.image_size, d.channels) for d in (cfg.data, ae_data)]
    if mine != theirs:
        raise UserError(f"The autoencoder {space.run_dir} was trained on {ae_data.name} (path '{ae_data.path}', "
                        f"size {ae_data.image_size}, channels {ae_data.channels}); this run's data is {cfg.data.name} "
                        f"(path '{cfg.data.path}', size {cfg.data.image_size}, channels {cfg.data.channels}).")
    main = distributed.is_main()
    if not main:
        distributed.barrier()  # under torchrun rank 0 encodes and writes the cache once; the others then read it
    (mean, log_var), _, _ = cached_latents(space.run_dir, space.digest, data.images, space.ae.encode, device=device)
    if main:
        distributed.barrier()
    return space, LatentSet(mean, log_var, space.stats, cfg.data.latents)


@torch.no_grad()
def health(space: LatentSpace, images_uint8: torch.Tensor, n: int = 1000) -> list[str]:
    """The latent health lines of a dataset split in a latent space: per-channel mean and std of its standardised
    posterior means (0 and 1 on the training set the statistics came from) and the round-trip error
    decode(encode(x)) - x on its first n images, in [0, 1] pixel units."""
    (mean, log_var), _, _ = cached_latents(space.run_dir, space.digest, images_uint8, space.ae.encode)
    z = standardize(mean, space.stats, space.mode)  # (N, c, h, w)
    x = images_uint8[:n].float() / 255
    recon = ((space.decode(z[:n]) + 1) / 2).clamp(0, 1)
    mse = float((recon - x).pow(2).mean())
    c, h, w = space.shape
    return [f"latents   {c} x {h} x {w} from {space.run_dir} ({space.mode}); standardised per channel: mean "
            + ", ".join(f"{v:+.3f}" for v in z.mean(dim=(0, 2, 3)).tolist()) + "; std "
            + ", ".join(f"{v:.3f}" for v in z.std(dim=(0, 2, 3)).tolist()),
            f"round trip decode(encode(x)) on {min(n, len(x))} images: MSE {mse:.5f}, PSNR "
            f"{10 * math.log10(1 / max(mse, 1e-12)):.1f} dB"]


def to_pixels(meta: dict, x: torch.Tensor, device="cpu") -> torch.Tensor:
    """A sampler's output as images: decoded through the run's autoencoder for a latent run, else as it is."""
    space = run_latent_space(meta, device)
    return x if space is None else space.decode(x)
