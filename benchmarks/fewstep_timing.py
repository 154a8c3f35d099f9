"""How long do 64 samples take at K consistency steps (1 step = 1 network evaluation)? Loads the run once, warms
up once, then reports the median of `--repeats` timed calls of `generate` (no file writes, no autoencoder).

    python -m benchmarks.fewstep_timing --run DIR [--steps 1] [--n 64] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from tinydiffusion.device import use_bf16
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.runs import load_run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    cfg, net, path, meta = load_run(args.run)
    sample_cfg = replace(cfg.sample, steps=args.steps)
    d = denoiser_for(net, path, cfg.diffusion.prediction, sample_cfg)
    bf16 = use_bf16(cfg.train.precision, "cpu")
    shape = tuple(meta["shape"])
    generate(d, sample_cfg, args.n, shape, batch_size=args.n, bf16=bf16)  # warm-up
    times = []
    for k in range(args.repeats):
        t0 = time.perf_counter()
        generate(d, sample_cfg, args.n, shape, batch_size=args.n, bf16=bf16, generator=torch.Generator().manual_seed(k))
        times.append(time.perf_counter() - t0)
    print(f"{args.n} samples, {cfg.sample.sampler} {args.steps} step(s): median {statistics.median(times):.4f} s "
          f"(min {min(times):.4f}, max {max(times):.4f}, {torch.get_num_threads()} threads, bf16={bf16})")


if __name__ == "__main__":
    main()
