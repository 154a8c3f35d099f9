"""Training a ControlNet (Zhang et al. 2023) on a frozen base run: data -> control map -> t -> noise -> loss -> step
(the branch only) -> EMA -> log -> fidelity on held-out maps -> checkpoint.

The base's condition (labels or prompt) is dropped with probability control.drop_base, so the branch learns to
steer from the map alone (the paper drops 50 % of prompts, sec. 3.3). Every control.fidelity_every steps the EMA
network samples a fixed batch of maps from held-out test digits and the edge F1 / label accuracy go into
metrics.jsonl (more often early on: fidelity_due): the "sudden convergence" of sec. 4.4 is visible there as a curve (`tinydiffusion viz control`).
control.arch=concat trains the baseline instead: the base's architecture from scratch with the map as an input.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import EMA, MODEL, latest, load_meta, load_train_state, load_weights, save_checkpoint
from ..conditioning import Cond
from ..conditioning.captions import caption_bank
from ..conditioning.control import CONTROL_MAPS, control_cond, control_map
from .. import distributed
from ..config import Config
from ..data import Batches, load_dataset, to_model_range
from ..device import autocast, resolve_device, use_bf16
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..objectives import diffusion_loss, draw_noise, objective_options
from ..runs import base_digest, check_base, control_model, load_run
from . import ddp
from .optim import budget, lr_at, make_optimizer, update_ema


def control_config(cfg: Config, base_cfg: Config) -> Config:
    """cfg with the base's network, path and sampler (a ControlNet denoises on its base's terms) and its kind of
    condition; the data, the training recipe and the control section stay cfg's."""
    data = replace(cfg.data, conditional=base_cfg.data.conditional, text=base_cfg.data.text)
    return replace(cfg, data=data, model=base_cfg.model, diffusion=base_cfg.diffusion, sample=base_cfg.sample)


def held_out_maps(cfg: Config, n: int, seed: int = 0):
    """(images (n, C, H, W) in [-1, 1], their maps (n, 1, H, W), labels (n,) or None): random test-split digits."""
    test = load_dataset(cfg.data.name, "test", cfg.data.path, image_size=cfg.data.image_size, channels=cfg.data.channels)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
    x = to_model_range(test.images[idx])
    return x, control_map(cfg.control.kind, x), (None if test.labels is None else test.labels[idx])


def train_controlnet(cfg: Config, out: Path, *, device: str = "cpu", resume: bool = False, quiet: bool = False) -> dict:
    """train(cfg) for a control run (the caller holds the run lock). Returns a summary dict."""
    CONTROL_MAPS.check(cfg.control.kind)
    dev = resolve_device(device)
    base_dir = Path(cfg.control.base).resolve()
    if not (base_dir / "config.json").exists():
        raise UserError(f"control.base={cfg.control.base}: no trained run there; train the base first (tinydiffusion "
                        "train --preset mnist --out runs/mnist) or name one with --set control.base=RUN.")
    base_cfg, base, path, base_meta = load_run(base_dir, device=dev)
    data = load_dataset(cfg.data.name, "train", cfg.data.path, image_size=cfg.data.image_size,
                        channels=cfg.data.channels)
    check_base(base_dir, base_meta, data.name, data.shape, "the data (data.name, data.image_size) are")
    cfg = control_config(cfg, base_cfg)
    bf16, tc, cc = use_bf16(cfg.train.precision, dev), cfg.train, cfg.control
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)  # t, noise, condition dropout of the global batch, alike on all ranks
    shards, main = ddp.Shards(tc.batch_size, tc.accumulate), distributed.is_main()  # see train/ddp.py
    num_classes = int(base_meta.get("num_classes", 0))
    captions = caption_bank(cfg, data) if cfg.data.text else None
    model, trainable = control_model(cfg, base, data.shape, num_classes)
    model, ema = model.to(dev), copy.deepcopy(trainable).requires_grad_(False).eval() if tc.ema_decay > 0 else None
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = make_optimizer(tc, params, dev)
    batches = Batches(len(data), tc.batch_size, cfg.seed)
    max_steps, max_seconds = budget(cfg, batches.steps_per_epoch)
    meta = dict(dataset=data.name, shape=list(data.shape), num_classes=num_classes, class_names=data.class_names,
                precision="bf16" if bf16 else "fp32", parameters=model.trainable_parameters(),
                frozen_parameters=sum(p.numel() for p in model.parameters() if not p.requires_grad),
                control=dict(base=str(base_dir), digest=base_digest(base_dir), kind=cc.kind, arch=cc.arch),
                world_size=shards.world)
    step, elapsed = 0, 0.0
    if resume:
        folder = latest(out)
        state = load_train_state(folder)
        if load_meta(out, folder)["control"]["digest"] != meta["control"]["digest"]:
            raise UserError(f"The base run {base_dir} has changed since this ControlNet began; restore it or start anew.")
        load_weights(trainable, folder / MODEL)
        if ema is not None:
            load_weights(ema, folder / EMA)
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        g.set_state(state["generator"])
        ddp.restore_rng(state["torch_rng"], cfg.seed, step)
        log = out / "metrics.jsonl"  # rows logged after the checkpoint will be logged again
        if main:
            log.write_text("".join(r + "\n" for r in log.read_text().splitlines()
                                   if r and json.loads(r)["step"] <= step))
        distributed.barrier()  # every rank has read the checkpoint before rank 0 writes the next
    _, test_maps, test_labels = held_out_maps(cfg, cc.fidelity_n) if cc.fidelity_every else (None, None, None)

    def batch_at(step: int, gen: torch.Generator):
        """(x0, cond with the map, (t, eps)) of the global batch `step`, every draw from gen."""
        idx = batches.indices(step)
        x0 = to_model_range(data.images[idx])  # (B, C, H, W) in [-1, 1]
        cond = None
        if num_classes:  # the base's condition, dropped for a fraction drop_base of the images
            cond = Cond(labels=data.labels[idx]).drop(torch.rand(len(idx), generator=gen) < cc.drop_base)
        if captions is not None:
            cond = captions.batch(idx, gen, cc.drop_base)
        cond = control_cond(control_map(cc.kind, x0), 1.0, cond).to(dev)
        return x0.to(dev), cond, draw_noise(path, x0.shape, generator=gen, **objective_options(cfg))

    def micro_loss(net, batch, s: slice) -> torch.Tensor:
        x0, cond, (t, eps) = batch
        with autocast(dev, bf16):
            return diffusion_loss(net, path, x0[s], **objective_options(cfg), cond=cond[s], noise=(t[s], eps[s])).mean()

    find_unused = False
    if shards.world > 1:  # a branch the network skips would need DDP's search every step (train/ddp.py)
        unused = ddp.unused_parameters(model, lambda m: micro_loss(m, batch_at(step, torch.Generator()),
                                                                   shards.slices()[0]))
        find_unused, meta["ddp_unused_parameters"] = bool(unused), unused
    net = ddp.wrap(model, dev, find_unused)

    def checkpoint():
        meta["step"] = step
        rng = ddp.rng_states()  # a collective: every rank calls checkpoint
        if main:
            save_checkpoint(out, cfg, meta, trainable, ema, optimizer, dict(
                step=step, elapsed=elapsed, generator=g.get_state(), torch_rng=rng, world_size=shards.world),
                keep=tc.keep_checkpoints)

    def log_fidelity():
        from ..eval.fidelity import fidelity
        net = model if ema is None else _with(model, ema)
        x = generate(denoiser_for(net.eval(), path, cfg.diffusion.prediction, cfg.sample), cfg.sample,
                     len(test_maps), data.shape, generator=torch.Generator().manual_seed(0), device=dev, bf16=bf16,
                     cond=control_cond(test_maps, 1.0))
        scores = fidelity(x.clamp(-1, 1), test_maps, cc.kind, test_labels, cfg.data.name)
        row = dict(step=step, elapsed_s=round(elapsed, 2), fidelity_kind=cc.kind,
                   **{f"fidelity_{k}": v for k, v in scores.items()})
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        model.train()

    checkpoint()
    if main:
        (out / "metrics.jsonl").touch()
    if main and cc.fidelity_every and step == 0:
        log_fidelity()  # step 0: the base's samples, the chance level
    bar = tqdm(total=max_steps or round(max_seconds), initial=step if max_steps else round(elapsed),
               unit="step" if max_steps else "s", disable=quiet or not main, dynamic_ncols=True)
    model.train()
    window, window_t, value, carry = [], time.perf_counter(), float("nan"), 0.0
    while (max_steps is None or step < max_steps) and (max_seconds is None or elapsed < max_seconds):
        t0 = time.perf_counter()
        progress = max(step / max_steps if max_steps else 0.0, elapsed / max_seconds if max_seconds else 0.0)
        lr = lr_at(tc, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch_at(step, g)
        optimizer.zero_grad(set_to_none=True)
        local = 0.0
        for k, rows in enumerate(shards.slices()):  # this rank's micro-batches; DDP all-reduces on the last
            with ddp.no_sync(net, last=k == shards.accumulate - 1):
                loss = micro_loss(net, batch, rows) / shards.accumulate
                loss.backward()
            local += loss.item()
        step += 1
        value, elapsed = ddp.sync_scalars(local, elapsed + carry + time.perf_counter() - t0)
        t1 = time.perf_counter()
        if not math.isfinite(value):  # the same mean on every rank: every rank stops
            raise UserError(f"The loss became {value} at step {step}; the last good checkpoint in {out} is "
                            "intact. Lower train.lr.")
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        if ema is not None:
            update_ema(ema, trainable, min(tc.ema_decay, (1 + step) / (10 + step)) if tc.ema_warmup else tc.ema_decay)
        carry = time.perf_counter() - t1
        dt = time.perf_counter() - t0
        window.append(value)
        bar.update(1 if max_steps else min(dt, max(0.0, (max_seconds or 0) - bar.n)))
        if main and (step % tc.log_every == 0 or step == max_steps):
            now = time.perf_counter()
            row = dict(step=step, loss=sum(window) / len(window), lr=lr, img_per_s=len(window) * tc.batch_size /
                       (now - window_t), elapsed_s=round(elapsed, 2), epoch=round(step / batches.steps_per_epoch, 3))
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.4f}", step=step)
            window, window_t = [], time.perf_counter()
        if step % tc.checkpoint_every == 0:
            checkpoint()
        if main and fidelity_due(step, cc.fidelity_every):
            log_fidelity()
            window_t = time.perf_counter()
    bar.close()
    elapsed += carry
    checkpoint()
    return dict(steps=step, elapsed_s=elapsed, loss=value, img_per_s=step * tc.batch_size / max(elapsed, 1e-9),
                parameters=meta["parameters"], precision=meta["precision"], skipped=0)


def fidelity_due(step: int, every: int) -> bool:
    """Every `every` steps, and four times as often over the first 2 * every steps, where the sudden convergence
    happens (on the mnist base: between steps 50 and 100 at AdamW 1e-3)."""
    return bool(every) and (step % every == 0 or (step < 2 * every and step % max(1, every // 4) == 0))


def _with(model, ema_part):
    """The same kind of network as `model` with the EMA copy of its trainable part (sharing the frozen base)."""
    from ..models.controlnet import ConcatControl, ControlNet
    if isinstance(model, ControlNet):
        return ControlNet(model.base, ema_part)
    return ConcatControl(ema_part, model.image_channels, model.map_channels)
