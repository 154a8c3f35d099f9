"""Every config value checked before any work starts: one table of rules, one sentence per violation.

`check_values(cfg)` runs on the config alone (train, sample and eval call it through train.loop.check_config);
`check_fits(cfg, shape, n_images)` runs once the data is known: batch size against the dataset, and the network's
memory against the machine's, estimated on the meta device before anything is allocated.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from .errors import UserError

# (key, test, what the value must be). A None value (a model option left to the registry) is always allowed.
Rule = tuple[str, Callable[[object], bool], str]
RULES: list[Rule] = [
    ("model.channels", lambda v: v >= 1, "at least 1"),
    ("model.channel_mult", lambda v: len(v) >= 1 and all(m >= 1 for m in v), "one or more multipliers, each >= 1"),
    ("model.num_res_blocks", lambda v: v >= 1, "at least 1"),
    ("model.attention_resolutions", lambda v: all(r >= 1 for r in v), "resolutions of at least 1 pixel"),
    ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.patch_size", lambda v: v >= 1, "at least 1"),
    ("model.context_dim", lambda v: v >= 0, "0 (no text) or more"),  # a run's config.json pins 0 for no text
    ("model.depth", lambda v: v >= 1, "at least 1"),
    ("model.heads", lambda v: v >= 1, "at least 1"),
    ("diffusion.T", lambda v: 2 <= v <= 100_000, "between 2 and 100000"),
    ("diffusion.logit_std", lambda v: v > 0, "positive"),
    ("train.batch_size", lambda v: v >= 1, "at least 1"),
    ("train.lr", lambda v: 0 < v < 10, "positive (and below 10)"),
    ("train.adam_beta2", lambda v: 0 < v < 1, "in (0, 1)"),
    ("train.weight_decay", lambda v: v >= 0, "0 or more"),
    ("train.warmup_steps", lambda v: v >= 0, "0 or more"),
    ("train.grad_clip", lambda v: v >= 0, "0 (off) or more"),
    ("train.ema_decay", lambda v: 0 <= v < 1, "in [0, 1) (0 = no EMA)"),
    ("train.label_dropout", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("train.epochs", lambda v: v >= 0, "0 or more"),
    ("train.steps", lambda v: v >= 0, "0 or more"),
    ("train.minutes", lambda v: v >= 0, "0 or more"),
    ("train.log_every", lambda v: v >= 1, "at least 1"),
    ("train.checkpoint_every", lambda v: v >= 1, "at least 1"),
    ("train.keep_checkpoints", lambda v: v >= 1, "at least 1"),
    ("train.nan_policy", lambda v: v in ("stop", "skip"), "'stop' or 'skip'"),
    ("train.sample_every", lambda v: v >= 0, "0 (off) or more"),
    ("train.eval_every", lambda v: v >= 0, "0 (off) or more"),
    ("train.eval_n", lambda v: v >= 2, "at least 2"),
    ("train.snapshot_minutes", lambda v: all(m > 0 for m in v), "positive minutes"),
    ("sample.steps", lambda v: v >= 1, "at least 1"),
    ("sample.eta", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("sample.shift", lambda v: v > 0, "positive"),
    ("sample.variance", lambda v: v in ("small", "large"), "'small' or 'large'"),
    ("control.arch", lambda v: v in ("controlnet", "concat"), "'controlnet' or 'concat'"),
    ("control.hint_channels", lambda v: v >= 1, "at least 1"),
    ("control.drop_base", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("control.fidelity_every", lambda v: v >= 0, "0 (off) or more"),
    ("control.fidelity_n", lambda v: v >= 1, "at least 1"),
    ("seed", lambda v: 0 <= v < 2**63, "a non-negative integer"),
]


def _value(cfg, key: str):
    section, _, name = key.partition(".")
    return getattr(cfg, section) if not name else getattr(getattr(cfg, section), name)


def check_values(cfg, *, budget: bool = True) -> None:
    """Every rule of RULES, plus a training budget (epochs, steps or minutes above 0) when `budget`; all the
    violations in one UserError, one sentence per line."""
    bad = []
    for key, test, must in RULES:
        value = _value(cfg, key)
        ok = value is None or (not isinstance(value, float) or math.isfinite(value)) and test(value)
        if not ok:
            bad.append(f"{key} must be {must}, got {value!r}.")
    t = cfg.train
    if budget and not bad and not (t.epochs > 0 or t.steps > 0 or t.minutes > 0):
        bad.append("Give a training budget above 0: --minutes, --steps or --epochs (or train.minutes etc.).")
    if bad:
        raise UserError("\n".join(bad))


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(cfg, shape: tuple[int, int, int], n_images: int, num_classes: int = 0) -> int:
    """Refuse a batch larger than the dataset, and a network whose training state would not fit in memory:
    parameters counted on the meta device (nothing allocated), times 4 bytes for the weights, their gradient,
    Adam's two moments and the EMA copy. Returns the parameter count."""
    from .checkpoint import model_from_config

    if cfg.train.batch_size > n_images:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is larger than the dataset ({n_images} images); "
                        "lower it.")
    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in model_from_config(cfg, shape, num_classes).parameters())
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        raise UserError(f"Model '{cfg.model.name}' cannot be built with these options ({e}); check the model.* "
                        "values.") from None
    need, have = params * 4 * 5, available_bytes()
    if have is not None and need > have:
        raise UserError(f"The network has {params:,} parameters: training it needs about {need / 2**30:,.1f} GiB "
                        f"(weights, gradients, Adam moments, EMA) before activations, and this machine has "
                        f"{have / 2**30:.1f} GiB available; lower model.channels.")
    return params
