"""What `--set train.compile=true` costs and buys: one training step of a preset (the real loss, AdamW, the
preset's batch and precision) eager against torch.compile. Reports the compiled arm's first step (the compile
time), and the median step time of each arm over --steps steps after --warmup more.

    python -m benchmarks.compile_speedup [--preset mnist] [--steps 30] [--warmup 3] [--device cpu] [--mode default]

Run it alone: the two arms are timed one after the other on the same cores.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tinydiffusion.checkpoint import model_from_config
from tinydiffusion.config import get_preset
from tinydiffusion.device import amp_dtype, autocast, resolve_device
from tinydiffusion.objectives import diffusion_loss, objective_options
from tinydiffusion.paths import make_path
from tinydiffusion.train.optim import make_optimizer


def arm(cfg, dev, compiled: bool, args) -> dict:
    torch.manual_seed(0)
    shape = (cfg.data.channels or 1, 28, 28)
    model = model_from_config(cfg, shape, 0).to(dev)
    net = torch.compile(model, mode=args.mode) if compiled else model
    opt = make_optimizer(cfg.train, model.parameters(), dev)
    path, amp = make_path(cfg.diffusion.path, cfg.diffusion.T), amp_dtype(cfg.train.precision, dev)
    x0 = torch.randn(cfg.train.batch_size, *shape, device=dev)
    g = torch.Generator().manual_seed(0)

    def step() -> float:
        t0 = time.perf_counter()
        with autocast(dev, amp):
            loss = diffusion_loss(net, path, x0, **objective_options(cfg), generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    first = step()
    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    return dict(first=first, median=statistics.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", default="default", help="torch.compile mode: default | reduce-overhead | max-autotune")
    args = p.parse_args(argv)
    cfg, dev = get_preset(args.preset), resolve_device(args.device)
    eager, comp = arm(cfg, dev, False, args), arm(cfg, dev, True, args)
    B = cfg.train.batch_size
    print(f"{args.preset} on {dev} ({torch.get_num_threads()} threads), batch {B}, precision {cfg.train.precision}:")
    print(f"  eager:    {eager['median'] * 1e3:.1f} ms/step ({B / eager['median']:.0f} img/s)")
    print(f"  compiled: {comp['median'] * 1e3:.1f} ms/step ({B / comp['median']:.0f} img/s), first step "
          f"{comp['first']:.1f} s (compiling); speed-up {eager['median'] / comp['median']:.2f}x")


if __name__ == "__main__":
    main()
