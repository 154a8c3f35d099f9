"""Training throughput of one process against N DDP processes on this machine, same preset, steps and global
batch: `tinydiffusion train` with --threads-per-process T x 1 process against torchrun with N processes of
1 thread each (gloo on CPU, nccl on GPUs). Each arm trains into a fresh run directory; img/s is read from the
run's metrics.jsonl over the logged windows after the first (the first holds start-up and warm-up).

    python -m benchmarks.ddp_throughput [--preset mnist] [--steps 300] [--nproc 2] [--device cpu] [--set K=V ...]

Run it alone: on a shared 2-core machine anything else running makes both arms meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def arm(out: Path, nproc: int, threads: int, args) -> dict:
    train = ["-m", "tinydiffusion", "train", "--preset", args.preset, "--steps", str(args.steps),
             "--device", args.device, "--quiet", "--out", str(out), "--set", f"train.log_every={args.log_every}",
             *[f"--set={s}" for s in args.set]]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *train]
    else:
        cmd = [sys.executable, *train]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(cmd, check=True, env=env)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r]
    rates = [r["img_per_s"] for r in rows if "img_per_s" in r][1:]
    return dict(processes=nproc, threads_each=threads, img_per_s=statistics.median(rates), windows=len(rates),
                elapsed_s=rows[-1]["elapsed_s"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="threads of the single process (default: nproc)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        one = arm(Path(tmp) / "one", 1, args.threads or args.nproc, args)
        many = arm(Path(tmp) / "many", args.nproc, 1, args)
    for r in (one, many):
        print(f"{r['processes']} process(es) x {r['threads_each']} thread(s): {r['img_per_s']:.0f} img/s "
              f"(median of {r['windows']} windows of {args.log_every} steps; {r['elapsed_s']:.0f} s of training)")
    print(f"DDP / one process: {many['img_per_s'] / one['img_per_s']:.2f}x ({args.preset}, {args.steps} steps, "
          f"global batch as the preset says)")


if __name__ == "__main__":
    main()
