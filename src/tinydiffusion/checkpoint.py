"""Checkpoint files of a run directory: config.json, meta.json, model/EMA weights as safetensors, and a separate
training-state file (runs.py loads a run for sampling).

Every file is written atomically (io.atomic_write: temporary file, then rename), so an interrupted write never
destroys the previous checkpoint. Nothing is pickled: weights are safetensors; the training state holds only
tensors and numbers and is loaded with torch.load(weights_only=True).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import Config
from .errors import UserError
from .io import atomic_write, write_text
from .models import build_model, resolved_options

MODEL, EMA, STATE, CONFIG = "model.safetensors", "ema.safetensors", "train_state.pt", "config.json"
META = "meta.json"  # what the weights need beyond the config: image shape, classes, step


def state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: Path, cfg: Config, meta: dict, model, ema, optimizer, state: dict) -> None:
    """Weights (model, EMA), the training state (optimiser, step, RNG, ...), config.json and meta.json."""
    run_dir = Path(run_dir)
    atomic_write(run_dir / MODEL, lambda tmp: save_file(state_tensors(model), tmp))
    if ema is not None:
        atomic_write(run_dir / EMA, lambda tmp: save_file(state_tensors(ema), tmp))
    atomic_write(run_dir / STATE, lambda tmp: torch.save({**state, "optimizer": optimizer.state_dict()}, tmp))
    write_text(run_dir / CONFIG, cfg.to_json())
    write_text(run_dir / META, json.dumps(meta, indent=2))


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


def load_train_state(run_dir: Path) -> dict:
    path = Path(run_dir) / STATE
    if not path.exists():
        raise UserError(f"No training state in {run_dir}; cannot resume. Start a new run without --resume.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path} is corrupt or not a tinydiffusion training state ({type(e).__name__}).") from None


def load_meta(run_dir: Path) -> dict:
    try:
        meta = json.loads((Path(run_dir) / META).read_text())
        tuple(meta["shape"])
        return meta
    except FileNotFoundError:
        raise UserError(f"No checkpoint in {run_dir} (meta.json is missing); train first or pick another run.") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{Path(run_dir) / META} is damaged; it should list the image shape.") from None


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
