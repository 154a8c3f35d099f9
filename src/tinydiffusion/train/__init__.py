"""Training: the diffusion loop `train(cfg)` (loop.py), the optimiser, learning-rate schedule, EMA and budget it
uses (optim.py), and the VAE baseline's loop (vae.py)."""
from .loop import check_config, train

__all__ = ["train", "check_config"]
