"""`tinydiffusion experiment NAME ...`: one subcommand per registered experiment (experiments/__init__.py)."""
from __future__ import annotations


def add_experiment(sub):
    from ..experiments import EXPERIMENTS, load

    p = sub.add_parser("experiment", help="run an experiment and write a report folder")
    exp = p.add_subparsers(dest="experiment", required=True)
    for name in EXPERIMENTS:
        q = exp.add_parser(name, help=EXPERIMENTS.text(name))
        load(name).add_arguments(q)
        q.set_defaults(func=lambda a, name=name: print(f"report written to {load(name).run(a)}/report.md"))
