"""One torchrun launch of 2 CPU processes (gloo) that test_ddp.py inspects: run by
`python -m torch.distributed.run --standalone --nproc-per-node=2 tests/ddp_worker.py OUT`.

Each rank trains tiny runs, resumes one, samples one, and saves what it holds (weights, EMA, samples) under
OUT/rank{r}/; rank 1 also records every file it opened for writing inside OUT/runs (there must be none).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

OUT = Path(sys.argv[1])
RUNS = OUT / "runs"
written: list[str] = []


def audit(event, args):  # every open for writing, folder made or rename under OUT/runs, on this rank
    if not args or not isinstance(args[0], (str, Path)) or not str(args[0]).startswith(str(RUNS)):
        return
    if event == "open":
        mode, flags = args[1], args[2]
        if (mode and any(c in mode for c in "wax+")) or (flags and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            written.append(str(args[0]))
    elif event in ("os.mkdir", "os.rename", "os.remove", "shutil.rmtree"):
        written.append(f"{event} {args[0]}")


def main():
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny_config

    from tinydiffusion import distributed
    from tinydiffusion.checkpoint import latest, load_weights, state_tensors
    from tinydiffusion.cli import main as cli
    from tinydiffusion.runs import load_run, sample_run
    from tinydiffusion.train import train

    distributed.init(torch.device("cpu"))
    rank = distributed.rank()
    if rank == 1:
        sys.addaudithook(audit)
    mine = OUT / f"rank{rank}"
    mine.mkdir(parents=True, exist_ok=True)

    def held(run, name):
        """What this rank's trained run holds, as files: the newest checkpoint's model and EMA."""
        _, net, _, _ = load_run(run, use_ema=True)
        torch.save(state_tensors(net), mine / f"{name}-ema.pt")
        _, raw, _, _ = load_run(run, use_ema=False)
        torch.save(state_tensors(raw), mine / f"{name}-model.pt")

    # 1. a class-conditional run (label dropout, the null label) for 4 steps of a global batch of 8
    cfg = tiny_config("model.dropout=0", "train.lr_decay=none", steps=4, preset="mnist-ddpm-class")
    train(cfg, RUNS / "full", device="cpu", quiet=True)
    distributed.barrier()
    held(RUNS / "full", "full")
    # 2. the same run for 2 steps, then resumed to 4 under DDP
    train(tiny_config("model.dropout=0", "train.lr_decay=none", steps=2, preset="mnist-ddpm-class"), RUNS / "half", device="cpu", quiet=True)
    distributed.barrier()
    train(cfg, RUNS / "half", device="cpu", resume=True, quiet=True)
    distributed.barrier()
    held(RUNS / "half", "resumed")
    # 3. a run stopped at 2 steps, for the test to resume on one process (a changed world size)
    train(tiny_config("model.dropout=0", "train.lr_decay=none", steps=2, preset="mnist-ddpm-class"), RUNS / "two", device="cpu", quiet=True)
    distributed.barrier()
    # 4. sharded sampling: 10 images in batches of 4 (3 batches, the last short), on both ranks
    x = sample_run(RUNS / "full", 10, batch_size=4, steps=3, seed=5)
    torch.save(x, mine / "samples.pt")
    # 5. the sample command under torchrun: rank 0 alone writes the file (the command ends the process group)
    world = distributed.world_size()
    code = cli(["sample", "--run", str(RUNS / "full"), "--n", "10", "--batch-size", "4", "--steps", "3",
                "--seed", "5", "--device", "cpu", "--out", str(RUNS / "cli.npz")])
    (mine / "report.json").write_text(json.dumps(dict(rank=rank, world=world, cli=code,
                                                      written=sorted(set(written)))))


if __name__ == "__main__":
    main()
