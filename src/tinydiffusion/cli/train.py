"""`tinydiffusion train`: a preset, --set overrides and a budget -> a run directory."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import UserError


def add_train(sub):
    p = sub.add_parser("train", help="train a denoiser from a preset")
    p.add_argument("--preset", help="a preset name (see `tinydiffusion presets`); not needed with --resume")
    p.add_argument("--out", type=Path, help="run directory (default runs/PRESET)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="train for this many minutes of wall-clock")
    budget.add_argument("--steps", type=int, help="train for this many optimiser steps")
    budget.add_argument("--epochs", type=float, help="train for this many passes over the data")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N processes (DDP): runs `torchrun --standalone --nproc-per-node=N -m "
                        "tinydiffusion train ...` with the other flags; one GPU per process on CUDA, gloo on CPU")
    p.set_defaults(func=run_train)


def launch(argv: list[str], nproc: int) -> int:
    """Run this command again under torchrun on nproc local processes (without --nproc); its exit status."""
    import subprocess
    import sys

    rest, skip = [], False
    for a in argv:  # drop "--nproc N" / "--nproc=N"
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tinydiffusion", *rest]
    print("running:", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd)


def run_train(args):
    from .. import distributed
    from ..config import apply_overrides, get_preset, load_config
    from ..train import train

    if args.nproc is not None:
        if args.nproc < 1:
            raise UserError("--nproc must be at least 1.")
        if distributed.launched():
            raise UserError("--nproc launches torchrun itself; under torchrun, drop it.")
        if args.nproc > 1:
            code = launch(args.argv, args.nproc)
            if code:  # the ranks have said why
                raise SystemExit(code)
            return

    if args.resume:
        if args.out is None:
            raise UserError("--resume needs --out DIR, the run to continue.")
        cfg = load_config(args.out / "config.json")
    else:
        if not args.preset:
            raise UserError("Give --preset NAME (see `tinydiffusion presets`), or --resume with --out DIR.")
        cfg = get_preset(args.preset)
    cfg = apply_overrides(cfg, args.overrides)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if any(v is not None for v in (args.minutes, args.steps, args.epochs)):
        cfg = replace(cfg, train=replace(cfg.train, minutes=args.minutes or 0, steps=args.steps or 0,
                                         epochs=args.epochs or 0))
    out = args.out or Path("runs") / args.preset
    summary = train(cfg, out, device=args.device, resume=args.resume, quiet=args.quiet)
    print(f"trained {summary['steps']} steps in {summary['elapsed_s'] / 60:.1f} min "
          f"({summary['img_per_s']:.0f} img/s in {summary['precision']}, {summary['parameters'] / 1e6:.2f}M params), "
          f"last loss {summary['loss']:.4f}; run in {out}")
