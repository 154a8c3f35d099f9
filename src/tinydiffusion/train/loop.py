"""train(cfg): data -> t -> noise -> loss -> step -> EMA -> log -> checkpoint, top to bottom."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..checkpoint import (CONFIG, EMA, MODEL, latest, load_meta, load_train_state, load_weights, model_from_config,
                          pin_model_config, save_checkpoint, state_tensors)
from ..conditioning import Cond
from ..conditioning.captions import caption_bank
from ..config import Config
from ..data import Batches, load_dataset, to_model_range, to_unit_range
from ..data.latents import check_mode
from .. import distributed
from ..device import PRECISIONS, amp_dtype, autocast, configure, resolve_device
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..io import atomic_write
from ..latent_space import latent_training_set
from ..models import MODELS, count_parameters, is_autoencoder
from ..objectives import diffusion_loss, draw_noise, objective_options
from ..samplers import SAMPLERS
from ..validate import check_fits, check_values
from ..paths import PATHS, make_path
from ..viz.grids import save_grid
from . import ddp
from .lock import run_lock
from .optim import OPTIMIZERS, budget, lr_at, make_optimizer, update_ema


def check_config(cfg: Config) -> None:
    """Fail on unknown names and out-of-range values before any data is loaded or time is spent."""
    from ..denoiser import PREDICTIONS
    from ..objectives import T_SAMPLINGS, WEIGHTINGS
    from ..timesteps import SPACINGS

    for registry, name in ((MODELS, cfg.model.name), (PATHS, cfg.diffusion.path),
                           (WEIGHTINGS, cfg.diffusion.weighting), (T_SAMPLINGS, cfg.diffusion.t_sampling),
                           (OPTIMIZERS, cfg.train.optimizer), (PREDICTIONS, cfg.diffusion.prediction),
                           (PRECISIONS, cfg.train.precision), (SAMPLERS, cfg.sample.sampler),
                           (SPACINGS, cfg.sample.spacing)):
        registry.check(name)
    check_values(cfg)
    if cfg.data.autoencoder:
        check_mode(cfg.data.latents)
        if cfg.data.hflip:
            raise UserError("data.hflip flips images, and a latent run trains on latents encoded once; turn it off "
                            "(or train the autoencoder on flipped images).")
        if is_autoencoder(cfg.model.name):
            raise UserError("An autoencoder trains on images; unset data.autoencoder.")
        if cfg.sample.clip_x0:
            raise UserError("sample.clip_x0 clips x0_hat to the pixel range [-1, 1], but a latent run's x0_hat is a "
                            "standardised latent (unit variance, no fixed range); set sample.clip_x0=false.")
    d = cfg.diffusion
    continuous = make_path(d.path, d.T).T is None
    if continuous and d.prediction == "eps":
        raise UserError(f"prediction 'eps' cannot give x0 at t = 1 on the '{d.path}' path, where alpha = 0 and "
                        "sampling starts; predict u, v or x0 (--set diffusion.prediction=u).")
    if continuous and d.t_sampling == "importance":
        raise UserError(f"t_sampling 'importance' needs a DDPM path's table of steps; '{d.path}' is continuous: "
                        "use uniform, logit-normal or lognormal.")


MAX_SKIPS_IN_ROW = 10  # nan_policy=skip stops after this many non-finite losses in a row


def train(cfg: Config, out: Path, *, device: str = "cpu", resume: bool = False, quiet: bool = False) -> dict:
    """Train a denoiser with cfg, writing the run to `out` (which one process at a time may write: run_lock).
    Returns a summary dict."""
    out = Path(out)
    check_config(cfg)
    if resume and not (out / CONFIG).exists():
        raise UserError(f"Nothing to resume in {out}: it has no checkpoint. Start a new run without --resume.")
    if not resume and (out / CONFIG).exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose another --out.")
    distributed.barrier()  # every rank has looked before rank 0 writes anything
    with run_lock(out) if distributed.is_main() else contextlib.nullcontext():
        if cfg.control.base:  # a ControlNet on a frozen base run
            from .controlnet import train_controlnet
            return train_controlnet(cfg, out, device=device, resume=resume, quiet=quiet)
        if is_autoencoder(cfg.model.name):
            from .autoencoder import train_autoencoder
            return train_autoencoder(cfg, out, device=device, resume=resume, quiet=quiet)
        return _train(cfg, out, device=device, resume=resume, quiet=quiet)


def _train(cfg: Config, out: Path, *, device: str, resume: bool, quiet: bool) -> dict:
    dev = distributed.init(resolve_device(device))  # cuda:LOCAL_RANK under torchrun on GPUs
    configure(dev)
    amp = amp_dtype(cfg.train.precision, dev)  # bf16, fp16 (with a GradScaler) or None = fp32
    bf16 = amp == torch.bfloat16
    tc = cfg.train
    main = distributed.is_main()  # rank 0 alone writes files
    torch.manual_seed(cfg.seed)  # the initial weights: the same on every rank
    g = torch.Generator().manual_seed(cfg.seed)  # t, noise, label dropout, flips of the global batch: every rank alike
    shards = ddp.Shards(tc.batch_size, tc.accumulate)  # this rank's micro-batches of each global batch

    # 1. data, model, EMA, optimiser, path
    data = load_dataset(cfg.data.name, "train", cfg.data.path, image_size=cfg.data.image_size,
                        channels=cfg.data.channels)
    num_classes = data.num_classes if cfg.data.conditional else 0
    if cfg.data.conditional and not num_classes:
        raise UserError(f"Dataset '{data.name}' has no labels; set data.conditional=false.")
    space, latents = latent_training_set(cfg, data, dev) if cfg.data.autoencoder else (None, None)
    shape = latents.shape if latents is not None else data.shape  # what the network sees: latents (c, h, w) or pixels
    check_fits(cfg, shape, len(data), num_classes)  # batch vs dataset, memory: before anything is allocated
    cfg = pin_model_config(cfg, shape)  # config.json names every size of the network
    captions = caption_bank(cfg, data) if cfg.data.text else None  # every distinct caption encoded once
    meta = dict(dataset=data.name, shape=list(shape), num_classes=num_classes, class_names=data.class_names,
                precision={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32"),  # as resolved here
                world_size=shards.world)
    if space is not None:  # a latent run knows its autoencoder, by path and by the SHA-256 of its weights
        meta["autoencoder"] = dict(run=str(space.run_dir.resolve()), digest=space.digest, latents=cfg.data.latents,
                                   image_shape=list(data.shape))
    batches = Batches(len(data), tc.batch_size, cfg.seed)
    max_steps, max_seconds = budget(cfg, batches.steps_per_epoch)
    path = make_path(cfg.diffusion.path, cfg.diffusion.T)
    model = model_from_config(cfg, shape, num_classes).to(dev)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    ema = copy.deepcopy(model).requires_grad_(False).eval() if tc.ema_decay > 0 else None  # of the unwrapped model
    if shards.world > 1:
        torch.manual_seed(cfg.seed * 1_000_003 + shards.rank * 7919)  # dropout: a stream of its own per rank
    optimizer = make_optimizer(tc, model.parameters(), dev)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    step, elapsed = 0, 0.0
    if resume:
        folder = latest(out)  # the newest complete checkpoint (an older one, with a note, if it is damaged)
        state = load_train_state(folder)
        before = load_meta(out, folder).get("autoencoder")
        if before and before["digest"] != space.digest:
            raise UserError(f"The autoencoder {space.run_dir} has changed since this run began (weights "
                            f"{space.digest[:12]}, the run learnt {before['digest'][:12]}); restore it or start anew.")
        load_weights(model, folder / MODEL)
        if ema is not None:
            load_weights(ema, folder / EMA)
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        g.set_state(state["generator"])
        ddp.restore_rng(state["torch_rng"], cfg.seed, step)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        if main:
            _truncate_metrics(out / "metrics.jsonl", step)
        distributed.barrier()  # every rank has read the checkpoint before rank 0 writes the next
    meta["parameters"] = count_parameters(model)

    def batch_at(step: int, gen: torch.Generator):
        """(x0, cond, (t, eps)) of the global batch `step`, every draw from gen, in the order of one process."""
        idx = batches.indices(step)
        if latents is not None:
            x0 = latents.batch(idx, gen).to(dev, memory_format=memory_format)  # (B, c, h, w) standardised latents
        else:
            x0 = to_model_range(data.images[idx]).to(dev, memory_format=memory_format)  # (B, C, H, W) in [-1, 1]
        if cfg.data.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x0[flip.to(dev)] = x0[flip.to(dev)].flip(-1)
        cond = None
        if num_classes:  # a fraction label_dropout gets the null label (classifier-free guidance)
            cond = Cond(labels=data.labels[idx]).drop(torch.rand(len(idx), generator=gen) < tc.label_dropout).to(dev)
        if captions is not None:
            cond = captions.batch(idx, gen, tc.label_dropout).to(dev)  # dropped captions = the empty prompt
        noise = draw_noise(path, x0.shape, generator=gen, **objective_options(cfg))  # t (B,), eps (B, ...)
        return x0, cond, noise

    def micro_loss(net, batch, s: slice) -> torch.Tensor:
        """The mean loss of rows s of a global batch, under autocast."""
        x0, cond, (t, eps) = batch
        with autocast(dev, amp):
            return diffusion_loss(net, path, x0[s], **objective_options(cfg), cond=None if cond is None else cond[s],
                                  noise=(t[s], eps[s])).mean()

    find_unused = False
    if shards.world > 1:  # does the network leave a parameter without gradient? DDP must then look each step
        unused = ddp.unused_parameters(model, lambda m: micro_loss(m, batch_at(step, torch.Generator()), shards.slices()[0]))
        find_unused = bool(unused)
        meta["ddp_unused_parameters"] = unused
    net = ddp.wrap(model, dev, find_unused)  # what computes the loss; `model` (unwrapped) is saved and averaged
    if tc.compile:
        net = torch.compile(net)

    def checkpoint():
        meta["step"] = step
        rng = ddp.rng_states()  # every rank's, gathered (a collective: all ranks call checkpoint)
        if main:
            save_checkpoint(out, cfg, meta, model, ema, optimizer, dict(
                step=step, elapsed=elapsed, generator=g.get_state(), torch_rng=rng, world_size=shards.world,
                **({"scaler": scaler.state_dict()} if scaler else {})), keep=tc.keep_checkpoints)

    def sample_grid():
        net = (ema or model).eval()
        gs = torch.Generator().manual_seed(cfg.seed)
        cond = Cond(labels=torch.arange(64) % num_classes) if num_classes else \
            captions.class_context(torch.arange(64) % 10) if captions else None
        x = generate(denoiser_for(net, path, cfg.diffusion.prediction, cfg.sample), cfg.sample, 64, shape,
                     generator=gs, device=dev, bf16=bf16, cond=cond)
        model.train()
        save_grid(to_unit_range(space.decode(x) if space else x), out / "samples" / f"step_{step:07d}.png")

    checkpoint()  # fails early (unwritable --out) before any time is spent
    bar = tqdm(total=max_steps or round(max_seconds), initial=step if max_steps else round(elapsed),
               unit="step" if max_steps else "s", disable=quiet or not main, dynamic_ncols=True)
    model.train()
    if main:
        (out / "metrics.jsonl").touch()
    window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
    value = float("nan")  # the last step's loss
    carry = 0.0  # seconds of the last step spent after its ranks agreed on the elapsed time
    skipped, in_row = 0, 0  # nan_policy=skip: steps dropped in all, and in a row
    snapshots = sorted(m for m in tc.snapshot_minutes if m * 60 > elapsed)

    # 2. the loop
    while (max_steps is None or step < max_steps) and (max_seconds is None or elapsed < max_seconds):
        t0 = time.perf_counter()
        progress = max(step / max_steps if max_steps else 0.0, elapsed / max_seconds if max_seconds else 0.0)
        lr = lr_at(tc, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch_at(step, g)
        optimizer.zero_grad(set_to_none=True)
        local = 0.0
        for k, rows in enumerate(shards.slices()):  # accumulate micro-batches; DDP all-reduces on the last
            with ddp.no_sync(net, last=k == shards.accumulate - 1):
                loss = micro_loss(net, batch, rows) / shards.accumulate
                (scaler.scale(loss) if scaler else loss).backward()
            local += loss.item()
        step += 1
        # every rank the same loss (the global batch's) and the same clock: the same decisions below
        value, elapsed = ddp.sync_scalars(local, elapsed + carry + time.perf_counter() - t0)
        t1 = time.perf_counter()
        if not math.isfinite(value):  # the weights never see a non-finite gradient: no update at all
            skipped, in_row = skipped + 1, in_row + 1
            if tc.nan_policy == "stop" or in_row >= MAX_SKIPS_IN_ROW:
                raise UserError(f"The loss became {value} at step {step}"
                                + (f" ({in_row} steps in a row)" if in_row > 1 else "")
                                + f"; the last good checkpoint in {out} is intact. Lower train.lr, keep "
                                "train.grad_clip on, or set train.nan_policy=skip.")
            carry = time.perf_counter() - t1
            continue  # nan_policy=skip: this batch is dropped, the step counted in `skipped`
        in_row = 0
        if scaler:
            scaler.unscale_(optimizer)
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:  # on every rank, from the unwrapped model: identical EMAs, never wrapped in DDP
            decay = min(tc.ema_decay, (1 + step) / (10 + step)) if tc.ema_warmup else tc.ema_decay
            update_ema(ema, model, decay)

        # 3. log, checkpoint, pictures
        carry = time.perf_counter() - t1
        dt = time.perf_counter() - t0
        window_loss, window_n = window_loss + value, window_n + 1
        bar.update(1 if max_steps else min(dt, max(0.0, (max_seconds or 0) - bar.n)))
        if main and (step % tc.log_every == 0 or step == max_steps):
            now = time.perf_counter()
            row = dict(step=step, loss=window_loss / max(1, window_n), lr=lr, img_per_s=window_n * tc.batch_size / (now - window_t),
                       elapsed_s=round(elapsed, 2), epoch=round(step / batches.steps_per_epoch, 3),
                       **({"skipped": skipped} if skipped else {}))
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.4f}", step=step, img_s=f"{row['img_per_s']:.0f}")
            window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
        if step % tc.checkpoint_every == 0:
            checkpoint()
        if main and tc.sample_every and step % tc.sample_every == 0:
            sample_grid()
            window_t = time.perf_counter()
        if main and tc.eval_every and step % tc.eval_every == 0:
            from ..eval.evaluate import evaluate_during_training  # lazy: evaluation is optional
            evaluate_during_training(ema or model, path, cfg, meta, step, out / "metrics.jsonl", dev)
            model.train()
            window_t = time.perf_counter()
        while snapshots and elapsed >= snapshots[0] * 60:  # weights at fixed wall-clock marks (the bench)
            minutes = snapshots.pop(0)
            if main:
                atomic_write(out / "snapshots" / f"{minutes:g}min.safetensors",
                             lambda tmp: save_file(state_tensors(ema or model), tmp))
    bar.close()
    elapsed += carry
    checkpoint()
    if main:
        sample_grid()
    return dict(steps=step, elapsed_s=elapsed, loss=value,
                img_per_s=step * tc.batch_size / elapsed if elapsed else 0.0, parameters=meta["parameters"],
                precision=meta["precision"], skipped=skipped)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (they will be written again)."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))
