"""Training on N processes with PyTorch's DistributedDataParallel (the engine DiT, EDM and accelerate use).

The global batch stays what the config says (train.batch_size = B). Each step every rank builds the same global
batch from the deterministic batch order and draws its randomness (t, noise, label dropout, flips) for all B
examples from one generator seeded by the run's seed, identical on every rank; the batch is then cut into
world x accumulate equal micro-batches and rank r computes micro-batches r*K .. r*K + K - 1. Each micro-batch
loss is its mean / K, DDP averages gradients over ranks, so the update is the gradient of the mean over the
global batch: 2 ranks x B/2, or 1 process with K = 2 micro-batches of B/2, take the same step as 1 process with
B (to float rounding). Drawing the whole batch's noise on every rank costs B x C x H x W normals, negligible
beside a forward pass, and buys a run that does not depend on the world size: resuming on a different number
of processes continues the same run.

What this means for the loop (loop.py): the network is wrapped by `wrap` (DDP on a world of > 1, as it is
otherwise); the EMA reads the unwrapped model on every rank and is never wrapped; `sync_scalars` averages the
loss and the elapsed time over ranks, so every rank takes the same decision to skip a step or stop; rank 0
alone writes (distributed.is_main).
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..errors import UserError


class Shards:
    """This rank's micro-batches of a global batch of `batch_size`: `accumulate` slices of equal size."""

    def __init__(self, batch_size: int, accumulate: int = 1):
        world = distributed.world_size()
        if accumulate < 1:
            raise UserError(f"train.accumulate must be at least 1, not {accumulate}.")
        if batch_size % (world * accumulate):
            raise UserError(f"train.batch_size {batch_size} does not split into {world} process(es) x "
                            f"{accumulate} micro-batch(es) of equal size; choose a batch size divisible by "
                            f"{world * accumulate}.")
        self.world, self.rank, self.accumulate = world, distributed.rank(), accumulate
        self.micro = batch_size // (world * accumulate)

    def slices(self) -> list[slice]:
        """Rows of the global batch this rank computes, one slice per micro-batch (disjoint across ranks and
        together covering the batch)."""
        first = self.rank * self.accumulate
        return [slice((first + k) * self.micro, (first + k + 1) * self.micro) for k in range(self.accumulate)]


def unused_parameters(model: torch.nn.Module, loss_of) -> list[str]:
    """Names of trainable parameters that get no gradient from loss_of(copy of model) (e.g. a branch a network
    skips): DDP must then look for them every step (find_unused_parameters, which costs a graph traversal)."""
    probe = copy.deepcopy(model)
    loss_of(probe).backward()
    return [name for name, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def wrap(model: torch.nn.Module, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """DDP around the model on a world of > 1 processes; the model itself otherwise."""
    if distributed.world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def no_sync(net: torch.nn.Module, last: bool):
    """DDP's no_sync on every micro-batch but the last: gradients add up locally, one all-reduce per step."""
    ddp = getattr(net, "_orig_mod", net)  # under torch.compile
    if last or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


def sync_scalars(loss: float, elapsed: float) -> tuple[float, float]:
    """(mean loss, mean elapsed seconds) over ranks: the same numbers on every rank, so that a non-finite loss
    anywhere is skipped everywhere and a --minutes budget ends every rank at the same step."""
    loss, elapsed = distributed.mean([loss, elapsed])
    return loss, elapsed


def rng_states() -> list[torch.Tensor]:
    """Every rank's torch RNG state (dropout draws from it, seeded per rank), for the checkpoint."""
    return distributed.gather(torch.get_rng_state())


def restore_rng(states, seed: int, step: int) -> None:
    """This rank's torch RNG state from a checkpoint: its own when the world size is unchanged (exact resume),
    else a fresh stream seeded by (seed, rank, step); old checkpoints hold one state, not a list."""
    if isinstance(states, torch.Tensor):
        states = [states]
    r = distributed.rank()
    if len(states) == distributed.world_size():
        torch.set_rng_state(states[r])
    else:
        torch.manual_seed(seed * 1_000_003 + r * 7919 + step)
