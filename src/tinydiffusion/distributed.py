"""Many processes, one run: the process group that `torchrun` describes, and the few collectives the rest of
the package needs (who writes, averaging a number, gathering sampled batches in order).

Launched by `torchrun --nproc-per-node=N -m tinydiffusion ...` (or `tinydiffusion train --nproc N`), every
process reads RANK, LOCAL_RANK and WORLD_SIZE from its environment; `init()` joins the group on gloo (CPU) or
nccl (CUDA, one GPU per local rank). Without torchrun nothing here does anything: rank 0 of a world of 1.
Training's use of the group (DDP, shards of a batch) is in train/ddp.py.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from .errors import UserError


def launched() -> bool:
    """Was this process started by torchrun (or another launcher that sets WORLD_SIZE and RANK)?"""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (once) and return this rank's device: cuda:LOCAL_RANK on CUDA."""
    if not launched() or dist.is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise UserError(f"Local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                            "lower --nproc-per-node.")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    elif device.type != "cpu":
        raise UserError(f"Several processes need --device cpu (gloo) or cuda (nccl), not {device.type}.")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def mean(values: list[float]) -> list[float]:
    """The mean over ranks of each value (the same list on every rank); values as they are in a world of 1."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def gather(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (any picklable object: CPU tensors, dicts)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def my_batches(n_batches: int) -> range:
    """The batches j in [0, n_batches) this rank computes: j = rank, rank + world, ... (round robin)."""
    return range(rank(), n_batches, world_size())


def gather_batches(local: dict[int, torch.Tensor], n_batches: int) -> torch.Tensor:
    """Every rank's {batch j: tensor} -> all n_batches tensors concatenated in the order of j, on every rank: each
    batch exactly once, no padding, the same result as one process computing them all."""
    merged: dict[int, torch.Tensor] = {}
    for part in gather(local):
        merged.update(part)
    if sorted(merged) != list(range(n_batches)):
        raise RuntimeError(f"gathered batches {sorted(merged)} are not 0..{n_batches - 1}")
    return torch.cat([merged[j] for j in range(n_batches)])


def main_only():
    """A context that silences stdout on every rank but 0 (one progress line per run, not one per process)."""
    if is_main():
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(open(os.devnull, "w"))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
