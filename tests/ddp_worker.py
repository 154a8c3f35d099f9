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

OUT = Path(sys.argv[1]) if __name__ == "__main__" else None
RUNS = OUT / "runs" if OUT else None
written: list[str] = []


def config(steps: int, *extra, preset: str = "mnist-ddpm-class"):
    """The tiny runs of this launch (and of test_ddp.py's one-process references): no dropout, constant lr."""
    from conftest import tiny_config
    return tiny_config("model.dropout=0", "train.lr_decay=none", *extra, steps=steps, preset=preset)


def digits(folder: Path) -> Path:
    """256 training and 64 test digits as .npz files, so an autoencoder's encode-once pass takes no time."""
    import numpy as np
    from tinydiffusion.data import load_dataset
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 256), ("test", 64)):
        ds = load_dataset("mnist", split)
        np.savez(folder / f"{split}.npz", images=ds.images[:n].numpy(), labels=ds.labels[:n].numpy())
    return folder


def ae_config(folder: Path):
    from tinydiffusion.config import apply_overrides, get_preset
    return apply_overrides(get_preset("mnist-ae"), [
        f"data.name={folder}", "model.channels=4", "train.batch_size=16", "train.precision=fp32", "train.steps=2",
        "train.minutes=0", "train.lr_decay=none", "train.log_every=1", "train.checkpoint_every=1000"])


def latent_config(folder: Path, ae: Path):
    from tinydiffusion.config import apply_overrides, get_preset
    return apply_overrides(get_preset("mnist-latent"), [
        f"data.name={folder}", f"data.autoencoder={ae}", "model.channels=8", "train.batch_size=16",
        "train.precision=fp32", "train.steps=2", "train.minutes=0", "train.lr_decay=none", "train.log_every=1",
        "sample.steps=3"])


def control_config(base: Path):
    return config(2, f"control.base={base}", "control.fidelity_every=0", preset="mnist-controlnet")


def distill_cd(teacher: Path, out: Path):
    from tinydiffusion.train.distill import distill
    return distill(teacher, "cd", out, steps=2, N=6, overrides=["train.log_every=1"])


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
    cfg = config(4)
    train(cfg, RUNS / "full", device="cpu", quiet=True)
    distributed.barrier()
    held(RUNS / "full", "full")
    # 2. the same run for 2 steps, then resumed to 4 under DDP
    train(config(2), RUNS / "half", device="cpu", quiet=True)
    distributed.barrier()
    train(cfg, RUNS / "half", device="cpu", resume=True, quiet=True)
    distributed.barrier()
    held(RUNS / "half", "resumed")
    # 3. a run stopped at 2 steps, for the test to resume on one process (a changed world size)
    train(config(2), RUNS / "two", device="cpu", quiet=True)
    distributed.barrier()
    # 4. sharded sampling: 10 images in batches of 4 (3 batches, the last short), on both ranks
    x = sample_run(RUNS / "full", 10, batch_size=4, steps=3, seed=5)
    torch.save(x, mine / "samples.pt")
    # 5. the other trainers: an autoencoder, a ControlNet on the run of 1., a consistency distillation of it
    if rank == 0:
        digits(OUT / "digits")
    distributed.barrier()
    train(ae_config(OUT / "digits"), RUNS / "ae", device="cpu", quiet=True)
    distributed.barrier()
    train(latent_config(OUT / "digits", RUNS / "ae"), RUNS / "latent", device="cpu", quiet=True)
    train(control_config(RUNS / "full"), RUNS / "control", device="cpu", quiet=True)
    distill_cd(RUNS / "full", RUNS / "cd")
    distributed.barrier()
    # 6. the sample command under torchrun: rank 0 alone writes the file (the command ends the process group)
    world = distributed.world_size()
    code = cli(["sample", "--run", str(RUNS / "full"), "--n", "10", "--batch-size", "4", "--steps", "3",
                "--seed", "5", "--device", "cpu", "--out", str(RUNS / "cli.npz")])
    (mine / "report.json").write_text(json.dumps(dict(rank=rank, world=world, cli=code,
                                                      written=sorted(set(written)))))


if __name__ == "__main__":
    main()
