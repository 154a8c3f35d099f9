"""Experiments: `tinydiffusion experiment NAME ...` writes a report folder (report.md + results.json + pictures).

Each experiment module defines `add_arguments(parser)` and `run(args) -> Path` (the report folder) and is
listed in EXPERIMENTS below with a one-line description.
"""
from __future__ import annotations

import importlib

# name -> (module under tinydiffusion.experiments, one-line description)
EXPERIMENTS: dict[str, tuple[str, str]] = {}


def load(name: str):
    """The module of experiment `name`."""
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name][0]}")
