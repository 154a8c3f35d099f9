"""Experiment `timing`: the lesson's stopwatch. One training step (one forward + backward + update on a batch)
against generating 64 images with the full chain (64 x 1000 network passes for T = 1000), measured on this
machine, then extrapolated (and labelled so) to 512 x 512 images and an ~860M-parameter network."""
from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from .report import table, write_report
from ..conditioning import Cond
from ..data import load_dataset, to_model_range
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..models import count_parameters
from ..objectives import diffusion_loss, objective_options
from ..device import autocast, resolve_device, use_bf16
from ..runs import load_run

BIG_SIDE, BIG_PARAMS = 512, 860e6  # the lesson's comparison: 512 x 512 images, an ~860M-parameter U-Net


def add_arguments(p):
    p.add_argument("--run", type=Path, required=True, help="a trained run directory")
    p.add_argument("--out", type=Path, help="report folder (default reports/timing)")
    p.add_argument("--n", type=int, default=64, help="images to generate (default 64, as in the lesson)")
    p.add_argument("--steps", type=int, help="sampler steps per image (default T: the full chain, 1000 in the lesson)")
    p.add_argument("--repeats", type=int, default=5, help="training steps timed after 2 warm-up steps (median)")
    p.add_argument("--precision", choices=["run", "fp32", "bf16"], default="run",
                   help="run: the run's train.precision (auto = bf16 where the hardware has it), for both the "
                        "training step and generation")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)


def _sync(dev: torch.device):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_train_step(cfg, net, path, images_uint8, dev, bf16: bool, repeats: int, seed: int) -> float:
    """Median seconds of one optimiser step (forward, backward, update) on one batch of the run's batch size."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(images_uint8), (cfg.train.batch_size,), generator=g)
    x0 = to_model_range(images_uint8[idx]).to(dev)  # (B, C, H, W) in [-1, 1]
    opt_cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(net.parameters(), lr=cfg.train.lr)
    net.train()
    times = []
    for k in range(2 + repeats):  # the first two steps allocate optimiser state and warm caches
        _sync(dev)
        start = time.perf_counter()
        with autocast(dev, bf16):
            loss = diffusion_loss(net, path, x0, **objective_options(cfg), generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if k >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args) -> Path:
    if args.n < 1 or args.repeats < 1:
        raise UserError("--n and --repeats must be at least 1.")
    out = Path(args.out) if args.out else Path("reports") / "timing"
    dev = resolve_device(args.device)
    cfg, net, path, meta = load_run(args.run, use_ema=False, device=dev)
    if meta.get("autoencoder"):
        raise UserError("The timing lesson measures pixel diffusion; for a latent run, `tinydiffusion experiment "
                        "latent-vs-pixel` times sampling and training beside a pixel run.")
    bf16 = use_bf16(cfg.train.precision if args.precision == "run" else args.precision, dev)
    steps = args.steps or path.T or 1000  # the DDPM chain's T steps; 1000 on a continuous path
    if not 1 <= steps <= (path.T or 10**6):
        raise UserError(f"--steps must be between 1 and the run's T={path.T}, got {steps}.")
    shape = tuple(meta["shape"])

    # 1. one training step
    fit = {k: getattr(cfg.data, k) for k in ("image_size", "channels") if getattr(cfg.data, k, 0)}
    data = load_dataset(cfg.data.name, "train", cfg.data.path, **fit)
    step_s = time_train_step(cfg, net, path, data.images, dev, bf16, args.repeats, args.seed)

    # 2. generating n images with `steps` sequential network passes each (batched: steps calls on n images)
    net.eval()
    sample_cfg = replace(cfg.sample, steps=steps)
    k = int(meta.get("num_classes", 0))
    cond = Cond(labels=torch.arange(args.n) % k) if k else None
    g = torch.Generator().manual_seed(args.seed)
    denoiser = denoiser_for(net, path, cfg.diffusion.prediction, sample_cfg)
    generate(denoiser, replace(sample_cfg, steps=1), min(args.n, 8), shape, generator=g, device=dev,
             cond=None if cond is None else cond[:8], bf16=bf16)  # warm-up
    _sync(dev)
    start = time.perf_counter()
    generate(denoiser, sample_cfg, args.n, shape, batch_size=args.n, generator=g, device=dev, cond=cond, bf16=bf16)
    _sync(dev)
    gen_s = time.perf_counter() - start

    # 3. derived numbers; the last two are extrapolations, not measurements
    per_image = gen_s / args.n
    params = count_parameters(net)
    pixel_ratio = BIG_SIDE**2 / (shape[1] * shape[2])
    r = dict(run=str(args.run), model=cfg.model.name, parameters=params, image_shape=list(shape), device=str(dev),
             bf16=bf16, batch_size=cfg.train.batch_size, train_step_s=step_s, n_images=args.n,
             sampler=cfg.sample.sampler,
             sampler_steps=steps, forward_passes=args.n * steps, generate_s=gen_s, ratio=gen_s / step_s,
             per_image_s=per_image, time_1000_images_s=per_image * 1000, pixel_ratio_512=pixel_ratio,
             per_image_ratio=per_image / (step_s / cfg.train.batch_size),
             extrapolated_per_image_512_s=per_image * pixel_ratio,
             extrapolated_per_image_512_860M_s=per_image * pixel_ratio * BIG_PARAMS / params)
    measured = [
        dict(quantity=f"one training step (forward + backward + update, batch {cfg.train.batch_size})",
             value=_t(step_s)),
        dict(quantity=f"generating {args.n} images x {steps} steps ({args.n * steps:,} network passes)",
             value=_t(gen_s)),
        dict(quantity="ratio generation / training step", value=f"{gen_s / step_s:,.0f}x"),
        dict(quantity="per image", value=_t(per_image)),
        dict(quantity="1000 images", value=_t(per_image * 1000)),
    ]
    extrapolated = [
        dict(quantity=f"per image at 512 x 512 ({pixel_ratio:.0f}x the pixels), same network",
             value=_t(r["extrapolated_per_image_512_s"])),
        dict(quantity=f"per image at 512 x 512, ~860M-parameter network ({BIG_PARAMS / params:,.0f}x the parameters)",
             value=_t(r["extrapolated_per_image_512_860M_s"])),
        dict(quantity="1000 such images", value=_t(r["extrapolated_per_image_512_860M_s"] * 1000)),
    ]
    body = f"""
Run `{args.run}`: {cfg.model.name} ({params / 1e6:.2f}M parameters), images {shape[1]}x{shape[2]}, {cfg.sample.sampler}
sampler, device {dev}, {'bfloat16 autocast' if bf16 else 'float32'}. Training needs one network pass per image per
step; sampling needs {steps} sequential passes per image, and they cannot run in parallel because each step starts
from the previous one.

## Measured on this machine

{table(measured, ["quantity", "value"])}

Why the ratio is not simply {steps}: generation is {steps} sequential network calls on a batch of {args.n}; a training
step is one call plus its backward pass (about two more calls' worth) on a batch of {cfg.train.batch_size}. Where the
time of a call grows with the batch (CPUs), counting passes predicts about {steps} x {args.n}/{cfg.train.batch_size} / 3
= {steps * args.n / cfg.train.batch_size / 3:,.0f}x; on a GPU, where small batches cost about the same as large ones,
the ratio approaches {steps} / 3 or more. Per image, generating costs {r['per_image_ratio']:,.0f}x what training on
it once costs.

## Extrapolation (not measured)

Assumes time grows linearly with the pixel count (true for convolutions; attention grows faster) and with the
parameter count. Real ~860M-parameter models (e.g. Stable Diffusion's U-Net) denoise a 64 x 64 x 4 latent instead of
512 x 512 pixels, run on GPUs, and use 20-50 sampler steps: latent diffusion and fast samplers exist because of
numbers like these.

{table(extrapolated, ["quantity", "value"])}
"""
    return write_report(out, "Timing: training step vs generation", body, r)


def _t(seconds: float) -> str:
    """Seconds in the unit a reader grasps: ms, s, min, h or days."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds * 1000:.3g} ms"
