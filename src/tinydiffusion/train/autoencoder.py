"""Training the latent-diffusion autoencoder (models/autoencoder.py): L1 reconstruction + a small KL weight, then the
latent cache of the whole training set, its per-channel statistics and the reconstruction ceiling, all stored with
the weights in the run directory.

The loss per image is sum |x - x_hat| + kl_weight * KL(q(z | x) || N(0, I)) on a posterior sample z. L1 rather than
L2 because squared error favours the blurry average of plausible strokes (LDM's autoencoders use L1 plus perceptual and
adversarial terms; those are left out here: no pretrained perceptual network ships offline). The KL weight only keeps
the latents near N(0, I) in scale and smooth; it is small enough that the posterior stays sharp, and the diffusion run
standardises the latents per channel anyway (data/latents.py).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import distributed
from ..checkpoint import CONFIG, MODEL, latest, load_train_state, load_weights, model_from_config, \
    pin_model_config, save_checkpoint
from ..config import Config
from ..data import Batches, load_dataset, to_model_range, to_unit_range
from ..data.latents import cached_latents, latent_stats
from ..device import autocast, resolve_device, use_bf16
from ..errors import UserError
from ..models import count_parameters
from ..objectives import gaussian_kl
from ..viz.grids import save_grid
from . import ddp
from .optim import budget, lr_at, make_optimizer

CEILING_N = 1000  # images for the reconstruction ceiling (the project metric's n)


def autoencoder_loss(ae, x: torch.Tensor, kl_weight: float, generator=None, eps=None):
    """(loss, L1 per pixel, KL per latent number) for images x (B, C, H, W) in [-1, 1]; loss is per image, averaged.
    eps: the posterior noise (B, c, h, w), else drawn from generator."""
    recon, mean, log_var = ae(x, generator, eps)
    l1 = (recon.float() - x).abs().flatten(1).sum(1)  # (B,)
    kl = gaussian_kl(mean.float(), log_var.float())  # (B,)
    return (l1 + kl_weight * kl).mean(), l1.mean() / x[0].numel(), kl.mean() / mean[0].numel()


def train_autoencoder(cfg: Config, out: Path, *, device: str = "cpu", resume: bool = False, quiet: bool = False) -> dict:
    """train(cfg) for an autoencoder model (the caller holds the run lock). Returns a summary dict."""
    if cfg.data.conditional or cfg.data.text or cfg.data.autoencoder:
        raise UserError("An autoencoder trains on images alone: unset data.conditional, data.text and "
                        "data.autoencoder.")
    dev = resolve_device(device)
    bf16 = use_bf16(cfg.train.precision, dev)
    tc = cfg.train
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)  # the posterior noise of the global batch, alike on every rank
    shards, main = ddp.Shards(tc.batch_size, tc.accumulate), distributed.is_main()  # see train/ddp.py
    data = load_dataset(cfg.data.name, "train", cfg.data.path, image_size=cfg.data.image_size,
                        channels=cfg.data.channels)
    cfg = pin_model_config(cfg, data.shape)
    ae = model_from_config(cfg, data.shape, 0).to(dev)
    net = ddp.wrap(ae, dev)  # every parameter of an autoencoder is used: no search for unused ones
    optimizer = make_optimizer(tc, ae.parameters(), dev)
    batches = Batches(len(data), tc.batch_size, cfg.seed)
    max_steps, max_seconds = budget(cfg, batches.steps_per_epoch)
    meta = dict(dataset=data.name, shape=list(data.shape), num_classes=0, class_names=data.class_names,
                precision="bf16" if bf16 else "fp32", kind="autoencoder",
                latent_shape=[ae.latent_channels, ae.latent_side, ae.latent_side], parameters=count_parameters(ae),
                world_size=shards.world)
    step, elapsed = 0, 0.0
    if resume:
        folder = latest(out)
        state = load_train_state(folder)
        load_weights(ae, folder / MODEL)
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        g.set_state(state["generator"])
        ddp.restore_rng(state["torch_rng"], cfg.seed, step)
        distributed.barrier()  # every rank has read the checkpoint before rank 0 writes the next

    def checkpoint():
        meta["step"] = step
        rng = ddp.rng_states()  # a collective: every rank calls checkpoint
        if main:
            save_checkpoint(out, cfg, meta, ae, None, optimizer, dict(
                step=step, elapsed=elapsed, generator=g.get_state(), torch_rng=rng, world_size=shards.world),
                keep=tc.keep_checkpoints)

    checkpoint()
    bar = tqdm(total=max_steps or round(max_seconds), initial=step if max_steps else round(elapsed),
               unit="step" if max_steps else "s", disable=quiet or not main, dynamic_ncols=True)
    ae.train()
    log = open(out / "metrics.jsonl", "a") if main else None
    window, value, carry = [], float("nan"), 0.0
    while (max_steps is None or step < max_steps) and (max_seconds is None or elapsed < max_seconds):
        t0 = time.perf_counter()
        progress = max(step / max_steps if max_steps else 0.0, elapsed / max_seconds if max_seconds else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(tc, step, progress)
        x = to_model_range(data.images[batches.indices(step)]).to(dev)  # (B, C, H, W) in [-1, 1], the global batch
        eps = torch.randn((len(x), ae.latent_channels, ae.latent_side, ae.latent_side), generator=g)
        optimizer.zero_grad(set_to_none=True)
        parts = torch.zeros(3)  # loss, L1, KL of this rank's micro-batches, each / accumulate
        for k, rows in enumerate(shards.slices()):
            with ddp.no_sync(net, last=k == shards.accumulate - 1):
                with autocast(dev, bf16):
                    loss, l1, kl = autoencoder_loss(net, x[rows], tc.kl_weight, eps=eps[rows])
                (loss / shards.accumulate).backward()
            parts += torch.tensor([loss.item(), l1.item(), kl.item()]) / shards.accumulate
        step += 1
        *means, elapsed = distributed.mean([*parts.tolist(), elapsed + carry + time.perf_counter() - t0])
        t1 = time.perf_counter()
        value = means[0]
        if not math.isfinite(value):  # every rank sees the same mean: every rank stops
            raise UserError(f"The autoencoder loss became {value} at step {step}; the last good checkpoint in "
                            f"{out} is intact. Lower train.lr.")
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ae.parameters(), tc.grad_clip)
        optimizer.step()
        carry = time.perf_counter() - t1
        dt = time.perf_counter() - t0
        window.append(means)
        bar.update(1 if max_steps else min(dt, max(0.0, (max_seconds or 0) - bar.n)))
        if main and step % tc.log_every == 0:
            mean = [sum(v) / len(window) for v in zip(*window)]
            log.write(json.dumps(dict(step=step, loss=mean[0], l1_per_pixel=mean[1], kl_per_latent=mean[2],
                                      elapsed_s=round(elapsed, 2), epoch=round(step / batches.steps_per_epoch, 3)))
                      + "\n")
            log.flush()
            bar.set_postfix(loss=f"{mean[0]:.2f}", step=step)
            window = []
        if step % tc.checkpoint_every == 0:
            checkpoint()
    bar.close()
    elapsed += carry
    if log:
        log.close()
    checkpoint()
    if main:  # the cache, statistics and ceiling: one process computes and writes them
        meta.update(finish(ae.eval(), cfg, data, out, dev))
    checkpoint()  # the same weights again (same digest), now with the latent statistics and the ceiling
    distributed.barrier()
    meta = distributed.gather(meta)[0]  # rank 0's, with the ceiling
    return dict(steps=step, elapsed_s=elapsed, loss=value, img_per_s=step * tc.batch_size / max(elapsed, 1e-9),
                parameters=meta["parameters"], precision=meta["precision"], skipped=0, **meta["reconstruction"])


@torch.no_grad()
def finish(ae, cfg: Config, data, out: Path, dev) -> dict:
    """Encode the training set once (the cache), measure its per-channel statistics and the reconstruction ceiling:
    MSE and PSNR on held-out test images, fd_classifier of reconstructed training images beside the originals'."""
    from ..eval.evaluate import evaluate_samples
    from ..latent_space import weights_digest

    digest = weights_digest(out)[1]  # the checkpoint just written is the newest
    (mean, log_var), _, _ = cached_latents(out, digest, data.images, ae.encode, device=dev)
    stats = latent_stats(mean, log_var)
    test = load_dataset(cfg.data.name, "test", cfg.data.path, image_size=cfg.data.image_size, channels=cfg.data.channels)
    g = torch.Generator().manual_seed(0)
    x_test = to_model_range(test.images[torch.randperm(len(test), generator=g)[:CEILING_N]])
    idx = torch.randperm(len(data), generator=g)[:CEILING_N]
    x_train = to_model_range(data.images[idx])
    recon_test = ae.decode(ae.encode(x_test.to(dev))[0]).float().cpu().clamp(-1, 1)
    recon_train = ae.decode(mean[idx].to(dev)).float().cpu().clamp(-1, 1)
    mse = float((to_unit_range(recon_test) - to_unit_range(x_test)).pow(2).mean())  # in [0, 1] pixel units
    reconstruction = dict(mse=mse, psnr=10 * math.log10(1 / max(mse, 1e-12)), n=CEILING_N)
    if cfg.data.name in ("mnist", "fashion"):  # the datasets the project's classifier knows
        reconstruction["fd_classifier"] = evaluate_samples(to_unit_range(recon_train), dataset=cfg.data.name,
                                                           metrics=("fd_classifier",))["fd_classifier"]
        reconstruction["fd_classifier_originals"] = evaluate_samples(
            to_unit_range(x_train), dataset=cfg.data.name, metrics=("fd_classifier",))["fd_classifier"]
    pairs = torch.stack([x_test[:32], recon_test[:32]], 1).flatten(0, 1)  # (64, C, H, W): original, reconstruction
    save_grid(to_unit_range(pairs), out / "samples" / "reconstructions.png", nrow=8)
    return dict(latent_stats=stats, reconstruction=reconstruction, digest=digest)
