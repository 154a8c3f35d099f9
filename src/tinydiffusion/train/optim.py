"""What the training loops share beside the loop itself: the learning-rate schedule, the optimiser, the EMA of
the weights and the budget."""
from __future__ import annotations

import math

import torch

from ..config import Config
from ..errors import UserError
from ..registry import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.add("adam", torch.optim.Adam, "Adam (Kingma & Ba 2015); weight decay added to the gradient")
OPTIMIZERS.add("adamw", torch.optim.AdamW, "AdamW (Loshchilov & Hutter 2019): decoupled weight decay")


def lr_at(cfg, step: int, progress: float) -> float:
    """Linear warm-up over warmup_steps, then constant or cosine decay to 0 over the budget (progress in [0, 1])."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    decay = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) if cfg.lr_decay == "cosine" else 1.0
    return cfg.lr * warm * decay


def make_optimizer(tc, params, dev: torch.device) -> torch.optim.Optimizer:
    """Adam or AdamW, fused into one kernel where torch has it (CUDA; CPU from torch 2.4): on the mnist preset's
    1.1M parameters (166 tensors) the CPU step takes 3 ms fused against 15 ms in the per-tensor loop."""
    opt_cls = OPTIMIZERS.get(tc.optimizer)
    version = tuple(int(v) for v in torch.__version__.split(".")[:2])
    fused = dev.type == "cuda" or (dev.type == "cpu" and version >= (2, 4))
    return opt_cls(params, lr=tc.lr, betas=(0.9, tc.adam_beta2), weight_decay=tc.weight_decay,
                   **({"fused": True} if fused else {}))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BatchNorm statistics) are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def budget(cfg: Config, steps_per_epoch: int) -> tuple[int | None, float | None]:
    """(max steps, max seconds) from whichever of train.steps / epochs / minutes is set."""
    tc = cfg.train
    steps = tc.steps or (math.ceil(tc.epochs * steps_per_epoch) if tc.epochs else None)
    seconds = tc.minutes * 60 if tc.minutes else None
    if steps is None and seconds is None:
        raise UserError("No training budget: give --minutes, --steps or --epochs.")
    return steps, seconds
