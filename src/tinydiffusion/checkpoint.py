"""Checkpoints of a run directory, each one complete or invisible: config.json at the run's root and, per
checkpoint, a step-stamped folder checkpoints/step_0000100/ holding model.safetensors, ema.safetensors,
train_state.pt, meta.json and manifest.json (the step and a SHA-256 digest of every file). The folder is written
under a temporary name and made visible by one rename, so a process killed at any moment leaves either the new
checkpoint or none of it; the last `train.keep_checkpoints` are kept. `latest(run_dir)` is the newest checkpoint
whose digests verify, falling back to an older one with a note; run directories written before checkpoint
folders (the files flat at the root) load as they are.

Nothing is pickled: weights are safetensors; the training state holds only tensors and numbers and is loaded
with torch.load(weights_only=True). (runs.py loads a run for sampling.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import Config
from .errors import UserError
from .io import write_text
from .models import build_model, resolved_options

MODEL, EMA, STATE, CONFIG = "model.safetensors", "ema.safetensors", "train_state.pt", "config.json"
META = "meta.json"  # what the weights need beyond the config: image shape, classes, step
MANIFEST, CHECKPOINTS = "manifest.json", "checkpoints"


def state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_checkpoint(run_dir: Path, cfg: Config, meta: dict, model, ema, optimizer, state: dict, keep: int = 2) -> Path:
    """Write checkpoints/step_N/ (weights, EMA, training state, meta, manifest) as one unit, config.json at the
    root, then drop all but the newest `keep` checkpoints. A failed write (full disk, permissions, I/O) removes
    the partial folder, leaves the previous checkpoints as they were, and raises one sentence."""
    run_dir = Path(run_dir)
    step = int(state["step"])
    final = run_dir / CHECKPOINTS / f"step_{step:07d}"
    tmp = run_dir / CHECKPOINTS / f".step_{step:07d}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = {MODEL: lambda p: save_file(state_tensors(model), p),
                 STATE: lambda p: torch.save({**state, "optimizer": optimizer.state_dict()}, p),
                 META: lambda p: Path(p).write_text(json.dumps(meta, indent=2))}
        if ema is not None:
            files[EMA] = lambda p: save_file(state_tensors(ema), p)
        for name, write in files.items():
            write(str(tmp / name))
        manifest = dict(step=step, files={name: _digest(tmp / name) for name in files})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if final.exists():  # the same step saved again (the final checkpoint): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)  # 1. the checkpoint becomes visible, complete, in one step
        write_text(run_dir / CONFIG, cfg.to_json())
    except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError("... unexpected pos ...")
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"Could not write the checkpoint of step {step} to {final.parent} ({_reason(e)}); "
                        f"{_free(run_dir)} free there. The previous checkpoint is intact.") from None
    for old in complete_checkpoints(run_dir)[:-max(1, keep)]:  # 2. the oldest go, newest first kept
        shutil.rmtree(old, ignore_errors=True)
    return final


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0][:120]


def _free(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown space"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The step folders with a manifest, oldest first (their digests are checked by `latest`)."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if (p / MANIFEST).exists())


def verified(folder: Path) -> bool:
    """Every file the manifest names has its digest. The EMA weights alone may be missing (deleted to save
    space): the run then samples from the raw weights, and runs.load_run says so."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return all(_digest(folder / name) == digest for name, digest in manifest["files"].items()
                   if name != EMA or (folder / EMA).exists())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def latest(run_dir: Path, quiet: bool = False) -> Path:
    """The folder holding the newest complete checkpoint's files: checkpoints/step_N/, or the run directory itself
    for runs written before checkpoint folders. A newest checkpoint that fails its digests falls back to the one
    before it, with a note on stderr; none complete is one sentence."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINTS).is_dir():
        return run_dir  # the flat layout of older runs
    folders = complete_checkpoints(run_dir)
    for k, folder in enumerate(reversed(folders)):
        if verified(folder):
            if k and not quiet:
                print(f"note: the newest checkpoint in {run_dir} is incomplete or damaged; using {folder.name}.",
                      file=sys.stderr)
            return folder
    raise UserError(f"No complete checkpoint in {run_dir / CHECKPOINTS} (every one is missing files or damaged); "
                    "train again, or resume from a copy.")


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file into module, with one clear sentence for a missing, corrupt or foreign file."""
    if not Path(path).exists():
        raise UserError(f"No checkpoint at {path}; train first (`tinydiffusion train ... --out {Path(path).parent}`).")
    try:
        module.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors checkpoint ({e}).") from None
    except RuntimeError:
        raise UserError(f"{path} does not match the model in {Path(path).parent / CONFIG} "
                        "(different architecture or size).") from None


def load_train_state(folder: Path) -> dict:
    """The training state in a checkpoint folder (see `latest`)."""
    path = Path(folder) / STATE
    if not path.exists():
        raise UserError(f"No training state in {folder}; cannot resume. Start a new run without --resume.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path} is corrupt or not a tinydiffusion training state ({type(e).__name__}).") from None


def load_meta(run_dir: Path, folder: Path | None = None) -> dict:
    """meta.json of the run's newest complete checkpoint (or of `folder`, a checkpoint folder)."""
    try:
        folder = folder or latest(run_dir, quiet=True)
        meta = json.loads((Path(folder) / META).read_text())
        tuple(meta["shape"])
        return meta
    except FileNotFoundError:
        raise UserError(f"No checkpoint in {run_dir} (meta.json is missing); train first or pick another run.") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{Path(folder) / META} is damaged; it should list the image shape.") from None


def pin_model_config(cfg: Config, shape: tuple[int, int, int]) -> Config:
    """cfg with every size option of its model written out (channels, levels, attention, ...), so that the
    config.json of a run rebuilds its network whatever the registry's defaults become."""
    known = {f.name for f in dataclasses.fields(cfg.model)}
    options = resolved_options(cfg.model.name, shape[1], cfg.model.overrides())
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{k: v for k, v in options.items()
                                                                             if k in known}))


def model_from_config(cfg: Config, shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    C, H, _ = shape
    return build_model(cfg.model.name, C, H, num_classes, **cfg.model.overrides())
