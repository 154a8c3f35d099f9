"""Does a training killed with SIGKILL at random moments, and resumed each time, end bit-identical to one that was
never interrupted? Trains a tiny run through the real CLI in a subprocess, kills it `--kills` times at random
moments (during steps, evaluation or a checkpoint write alike), resumes it with `train --resume`, and compares
every tensor of the final weights, EMA and optimiser state with an uninterrupted run of the same config.

    python -m benchmarks.kill_resume [--kills 5] [--steps 400] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tinydiffusion.checkpoint import STATE, latest

TINY = ["model.name=unet-small", "model.channels=8", "train.batch_size=16", "train.precision=fp32",
        "train.checkpoint_every=25", "train.log_every=5", "sample.steps=2"]


WALL_CLOCK = {f"{STATE}.elapsed"}  # seconds trained so far: differs between any two runs, killed or not


def command(out: Path, steps: int, resume: bool) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    head = ["--resume"] if resume else ["--preset", "mnist", "--steps", str(steps), *sets]
    return [sys.executable, "-m", "tinydiffusion", "train", *head, "--out", str(out), "--device", "cpu", "--quiet"]


def rows(run: Path) -> int:
    """Lines in the run's metrics.jsonl (0 before it exists)."""
    log = run / "metrics.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def flatten(prefix: str, value, out: dict) -> dict:
    """Every leaf (tensor, number, string) of a nested dict/list, keyed by its path."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = value
    return out


def same(a, b) -> bool:
    return a.equal(b) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else a == b


def tensors(run: Path) -> dict:
    """Weights, EMA and the training state (optimiser moments, step, generator states) of the newest checkpoint."""
    folder = latest(run, quiet=True)
    out = {f"{f.name}:{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    state = torch.load(folder / STATE, weights_only=False)  # our own file, written a moment ago
    return flatten(STATE, state, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        straight, killed = Path(tmp) / "straight", Path(tmp) / "killed"
        subprocess.run(command(straight, args.steps, False), check=True)
        resume, kills = False, []
        for _ in range(args.kills):
            logged = rows(killed)
            proc = subprocess.Popen(command(killed, args.steps, resume), start_new_session=True)
            while proc.poll() is None and rows(killed) <= logged:  # wait until it trains (past start-up)
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 4.0))  # then a random moment: a step, a log line or a checkpoint write
            if proc.poll() is not None:
                break  # it finished before this kill
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append(latest(killed, quiet=True).name if list((killed / "checkpoints").glob("step_*")) else "none")
            resume = (killed / "config.json").exists()
        subprocess.run(command(killed, args.steps, resume), check=True)
        a, b = tensors(straight), tensors(killed)
        differ = sorted(set(a) ^ set(b)) + [k for k in a if k in b and k not in WALL_CLOCK and not same(a[k], b[k])]
        print(f"{len(kills)} SIGKILLs (newest complete checkpoint after each: {', '.join(kills)}), then resumed to "
              f"step {args.steps}: {len(a)} values (weights, EMA, optimiser, RNG states; elapsed seconds aside), "
              + ("bit-identical to the uninterrupted run" if not differ else f"DIFFERENT: {differ[:5]}"))
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
