"""`tinydiffusion distill`: a teacher run -> a few-step run (cd distils it into a consistency model, ct trains one from
scratch on its architecture and path, reflow retrains a flow run on its own couplings, lcm distils a class-conditional
run with guidance baked in); the result samples with `sample --run DIR --steps 1|2|4 [--guidance W]` like any run."""
from __future__ import annotations

from pathlib import Path


def add_distill(sub):
    p = sub.add_parser("distill", help="distil a trained run into a 1-4 step consistency model")
    p.add_argument("--teacher", type=Path, required=True, help="the trained run to distil")
    p.add_argument("--method", default="cd", help="cd (consistency distillation) | ct (consistency training) | reflow "
                   "(2-rectified flow) | lcm (latent consistency distillation, guidance as an input)")
    p.add_argument("--out", type=Path, required=True, help="the new run directory")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="distil for this many minutes of wall-clock")
    budget.add_argument("--steps", type=int, help="distil for this many optimiser steps")
    p.add_argument("--solver", default="heun", help="cd's teacher step: ddim | euler | heun | dpm-solver")
    p.add_argument("--N", type=int, default=18, help="cd: noise levels on the teacher's path (Song et al.: 18)")
    p.add_argument("--mu", type=float, default=0.95, help="cd: EMA decay of the target network")
    p.add_argument("--pairs", type=int, default=20_000,
                   help="reflow: (noise, teacher sample) couplings to generate and train on (default 20000)")
    p.add_argument("--guidance-range", default="1,4", metavar="WMIN,WMAX",
                   help="lcm: the guidance scales w the teacher steps use, drawn uniformly (default 1,4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the student's config, e.g. --set train.lr=1e-4 (repeatable)")
    p.set_defaults(func=run_distill)


def run_distill(args):
    from ..errors import UserError
    from ..train.distill import distill

    try:
        w_range = tuple(float(w) for w in args.guidance_range.split(","))
    except ValueError:
        w_range = ()
    if len(w_range) != 2:
        raise UserError(f"--guidance-range expects two numbers WMIN,WMAX like 1,4; got '{args.guidance_range}'.")

    s = distill(args.teacher, args.method, args.out, minutes=args.minutes or 0, steps=args.steps or 0,
                solver=args.solver, N=args.N, mu=args.mu, overrides=args.overrides, seed=args.seed,
                pairs=args.pairs, guidance_range=w_range)
    if "pair_seconds" in s:
        print(f"generated {s['pairs']} teacher couplings in {s['pair_seconds']:.0f} s")
    print(f"distilled ({args.method}) {s['steps']} steps in {s['elapsed_s'] / 60:.1f} min, last loss "
          f"{s['loss']:.4f}; run in {args.out} (sample with --steps 1, 2 or 4"
          + (", --guidance W" if args.method == "lcm" else "") + ")")
