"""`tinydiffusion list KIND` and `tinydiffusion presets`: every registry's names with their one-line descriptions."""
from __future__ import annotations

import importlib

# kind -> (module, registry name); imported when listed, so `tinydiffusion --help` stays fast
KINDS = {
    "models": ("tinydiffusion.models", "MODELS"),
    "samplers": ("tinydiffusion.samplers", "SAMPLERS"),
    "spacings": ("tinydiffusion.timesteps", "SPACINGS"),
    "paths": ("tinydiffusion.paths", "PATHS"),
    "schedules": ("tinydiffusion.schedules", "SCHEDULES"),
    "predictions": ("tinydiffusion.denoiser", "PREDICTIONS"),
    "weightings": ("tinydiffusion.objectives", "WEIGHTINGS"),
    "time-samplings": ("tinydiffusion.objectives", "T_SAMPLINGS"),
    "precisions": ("tinydiffusion.device", "PRECISIONS"),
    "devices": ("tinydiffusion.device", "DEVICES"),
    "optimizers": ("tinydiffusion.train.optim", "OPTIMIZERS"),
    "norms": ("tinydiffusion.models.layers", "NORMS"),
    "datasets": ("tinydiffusion.data", "DATASETS"),
    "metrics": ("tinydiffusion.eval.evaluate", "METRICS"),
    "presets": ("tinydiffusion.config", "PRESETS"),
    "experiments": ("tinydiffusion.experiments", "EXPERIMENTS"),
    "control-maps": ("tinydiffusion.conditioning.control", "CONTROL_MAPS"),
}


def registry(kind: str):
    module, name = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def add_lists(sub):
    p = sub.add_parser("presets", help="list the training presets")
    p.set_defaults(func=lambda a: print_rows(registry("presets").descriptions()))
    p = sub.add_parser("list", help="list what can be named: " + ", ".join(KINDS))
    p.add_argument("kind", choices=list(KINDS))
    p.set_defaults(func=lambda a: print_rows(registry(a.kind).descriptions()))


def print_rows(rows: dict[str, str]) -> None:
    width = max(map(len, rows)) + 2
    for name, text in rows.items():
        print(f"{name:<{width}}{text}")
