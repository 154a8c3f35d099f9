"""`tinydiffusion sample`: images from a run, as an .npz file or a PNG grid; classes, prompts, guidance."""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import UserError
from .common import add_sampling_args
from .control import add_control_args, control_request, print_fidelity


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
    add_control_args(p)
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

    from ..data import to_unit_range, write_samples
    from ..device import resolve_device
    from ..runs import sample_conditional
    from ..viz.grids import save_grid, save_labelled_grid

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
    control, source_labels, n = control_request(args, n)
    start = time.perf_counter()
    images, labels = sample_conditional(
        args.run, n, sampler=args.sampler, steps=args.steps, spacing=args.spacing, seed=args.seed,
        batch_size=args.batch_size, device=resolve_device(args.device), use_ema=not args.raw, labels=labels,
        prompts=prompts, guidance=args.guidance, guidance_rescale=args.guidance_rescale, control=control,
        control_scale=args.control_scale, drop_control=args.drop_control)
    seconds = time.perf_counter() - start
    from .. import distributed
    if not distributed.is_main():  # under torchrun every rank holds the gathered images; rank 0 writes them
        return
    labels = source_labels if labels is None else labels  # --control-from: the digits the maps came from
    if rows and args.out.suffix == ".png":
        save_labelled_grid(to_unit_range(images), args.out, [str(r) for r in rows])
    elif args.out.suffix == ".png":
        save_grid(to_unit_range(images), args.out)
    else:
        write_samples(args.out, to_unit_range(images), labels)
    print(f"wrote {n} samples to {args.out} in {seconds:.2f} s ({seconds / n * 1000:.1f} ms/image)")
    if args.control_from:
        print_fidelity(images, control, source_labels, args.run)
