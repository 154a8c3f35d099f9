"""`tinydiffusion bench`: runs benchmarks/bench.py from the source checkout (speed and quality, never in pytest)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ..errors import UserError

REPO = Path(__file__).resolve().parents[3]  # src/tinydiffusion/cli/bench.py -> the checkout


def add_bench(sub):
    p = sub.add_parser("bench", help="throughput per preset and quality vs wall-clock against peers (minutes to hours)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for bench.md, bench.json and the plot")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke version (tiny budgets, few samples)")
    p.add_argument("--recipes", default="mnist,mnist-ddpm,mnist-seed,diffusers",
                   help="comma-separated: presets and/or 'diffusers' (needs `pip install diffusers`)")
    p.add_argument("--minutes", default="2,5,10", help="wall-clock marks at which quality is measured")
    p.add_argument("--n", type=int, default=500, help="samples per quality measurement")
    p.add_argument("--n-slow", type=int, default=200,
                   help="samples for the 1000-step samplers, scored at the last mark only (1000 network calls each)")
    p.add_argument("--resume", action="store_true",
                   help="reuse what an interrupted bench left in --out: recipes whose training finished are not "
                        "trained again, rows already scored (quality.jsonl) are not scored again")
    p.add_argument("--variants", action="store_true",
                   help="instead: time variants of the mnist preset (precision, layout, width, patches) and profile "
                        "its training step; writes variants.md (a few minutes)")
    p.set_defaults(func=run_bench)


def load_bench(module: str = "bench"):
    if not (REPO / "benchmarks" / "bench.py").exists():
        raise UserError("`tinydiffusion bench` runs from a source checkout (it needs the benchmarks/ folder); "
                        "clone the repository and install it with scripts/install.sh.")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"benchmarks.{module}")


def run_bench(args):
    if args.variants:
        load_bench("variants").run_variants(args.out, quick=args.quick)
        print(f"variants written to {args.out}/variants.md")
        return
    try:
        marks = [float(m) for m in args.minutes.split(",") if m.strip()]
    except ValueError:
        raise UserError(f"--minutes takes comma-separated numbers, like 2,5,10; got '{args.minutes}'.") from None
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    out = load_bench().run_bench(args.out, quick=args.quick, recipes=recipes, marks=None if args.quick else marks,
                                 n=args.n, n_slow=args.n_slow, resume=args.resume)
    print(f"bench written to {out}/bench.md")
