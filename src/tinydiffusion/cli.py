"""The `tinydiffusion` command. It only maps flags onto configs and calls the library; errors a user can fix
are printed as one sentence with exit code 2."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from .cli_data import add_data
from .cli_viz import add_viz
from .cli_bench import add_bench
from .cli_eval import add_eval
from .errors import UserError


# ------------------------------------------------------------------------------------------------ train
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
    p.set_defaults(func=run_train)


def run_train(args):
    from .config import apply_overrides, get_preset, load_config
    from .train import train

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


# ----------------------------------------------------------------------------------------------- sample
def add_sampling_args(p, n: int, n_help: str) -> None:
    """The flags every command that samples from a run shares (sample, eval --run)."""
    p.add_argument("--n", type=int, default=n, help=n_help)
    p.add_argument("--sampler", help="sampler name (default: the run's; see `tinydiffusion list samplers`)")
    p.add_argument("--steps", type=int, help="number of denoising steps (NFE budget; default: the run's)")
    p.add_argument("--spacing", help="which time steps the sampler visits: uniform, trailing, quadratic, karras, "
                                     "logsnr (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")


def add_sample(sub):
    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("--run", type=Path, required=True, help="a run directory written by `train`")
    add_sampling_args(p, n=64, n_help="number of images (with --classes/--prompt: spread over rows)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--class", dest="class_", type=int, metavar="C", help="draw class C (conditional runs)")
    what.add_argument("--classes", metavar="SPEC", help="a grid with one row per class, e.g. 0-9 or 1,4,7")
    what.add_argument("--prompt", action="append", metavar="TEXT",
                      help='a text prompt (text runs), e.g. "a thin seven"; repeat for one row per prompt')
    p.add_argument("--guidance", type=float, metavar="W",
                   help="classifier-free guidance scale: 1 = plain conditional, 0 = unconditional, >1 = stronger")
    p.add_argument("--guidance-rescale", type=float, default=0.0, metavar="PHI",
                   help="guidance rescale (Lin et al. 2024) in [0, 1] against over-saturation; 0 = off")
    p.add_argument("--out", type=Path, required=True, help="FILE.npz (images in [0, 1]) or FILE.png (a grid)")
    p.set_defaults(func=run_sample)


def parse_classes(spec: str) -> list[int]:
    """'0-9' -> [0..9]; '1,4,7' -> [1, 4, 7]; '0-2,7' -> [0, 1, 2, 7]."""
    out = []
    try:
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise UserError(f"--classes {spec}: expected a range like 0-9 or a list like 1,4,7.") from None
    if not out:
        raise UserError(f"--classes {spec} names no class.")
    return out


def run_sample(args):
    import torch

    from .generate import sample_conditional, save_labelled_grid, save_samples
    from .device import resolve_device

    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1.")
    if args.out.suffix not in (".npz", ".png"):
        raise UserError(f"--out {args.out} must end in .npz (arrays) or .png (a grid).")
    if args.guidance_rescale and args.guidance is None:
        raise UserError("--guidance-rescale only applies with --guidance W.")
    rows = parse_classes(args.classes) if args.classes else args.prompt  # one grid row per class or prompt
    n = max(1, args.n // len(rows)) * len(rows) if rows else args.n
    labels = prompts = None
    if args.class_ is not None:
        labels = torch.full((n,), args.class_)
    elif args.classes:
        labels = torch.tensor(rows).repeat_interleave(n // len(rows))  # (rows,) -> (n,): row-major grid
    elif args.prompt:
        prompts = [p for p in rows for _ in range(n // len(rows))]
    start = time.perf_counter()
    images, labels = sample_conditional(
        args.run, n, sampler=args.sampler, steps=args.steps, spacing=args.spacing, seed=args.seed,
        batch_size=args.batch_size, device=resolve_device(args.device), use_ema=not args.raw, labels=labels,
        prompts=prompts, guidance=args.guidance, guidance_rescale=args.guidance_rescale)
    seconds = time.perf_counter() - start
    if rows and args.out.suffix == ".png":
        save_labelled_grid(images, args.out, [str(r) for r in rows])
    else:
        save_samples(images, args.out, labels)
    print(f"wrote {n} samples to {args.out} in {seconds:.2f} s ({seconds / n * 1000:.1f} ms/image)")


# ---------------------------------------------------------------------------------------------- listing
def add_lists(sub):
    p = sub.add_parser("presets", help="list the training presets")
    p.set_defaults(func=lambda a: _print_rows({k: v[0] for k, v in _registries()["presets"].items()}))
    p = sub.add_parser("list", help="list the registered models, samplers, schedules, datasets or presets")
    p.add_argument("kind", choices=["models", "samplers", "schedules", "datasets", "presets"])
    p.set_defaults(func=run_list)


def _registries():
    from .config import PRESETS
    from .data import DATASETS
    from .models import DESCRIPTIONS
    from .samplers import SAMPLERS
    from .schedules import SCHEDULES

    def first_line(f):
        return (f.__doc__ or "").strip().splitlines()[0] if f.__doc__ else ""

    return {"presets": PRESETS, "models": DESCRIPTIONS,
            "samplers": {k: first_line(f) for k, f in SAMPLERS.items()},
            "schedules": {k: first_line(f) for k, f in SCHEDULES.items()},
            "datasets": {k: first_line(f) for k, f in DATASETS.items()}}


def run_list(args):
    items = _registries()[args.kind]
    _print_rows({k: v[0] if isinstance(v, tuple) else v for k, v in items.items()})


def _print_rows(rows: dict):
    width = max(map(len, rows)) + 2
    for name, text in rows.items():
        print(f"{name:<{width}}{text}")


# ------------------------------------------------------------------------------------------- experiment
def add_experiment(sub):
    from .experiments import EXPERIMENTS, load

    p = sub.add_parser("experiment", help="run an experiment and write a report folder")
    exp = p.add_subparsers(dest="experiment", required=True)
    for name, (_, description) in EXPERIMENTS.items():
        q = exp.add_parser(name, help=description)
        load(name).add_arguments(q)
        q.set_defaults(func=lambda a, name=name: print(f"report written to {load(name).run(a)}/report.md"))


# ------------------------------------------------------------------------------------------------- main
# Each entry adds one subcommand; later capabilities put theirs in their own module and list it here.
COMMANDS = [add_train, add_sample, add_lists, add_experiment, add_viz, add_data, add_eval, add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinydiffusion", description="Diffusion models from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; a training run continues with `tinydiffusion train --out DIR --resume`.",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
