"""Registry of denoisers. Every model is net(x, t, cond=None) -> tensor shaped like x (t: continuous time)."""
from __future__ import annotations

import inspect
from functools import partial

import torch.nn as nn

from ..errors import UserError
from ..registry import Registry
from .autoencoder import KLAutoencoder
from .dit import DiT
from .seed_unet import SeedUNet
from .unet import UNet

# name -> constructor taking (in_channels, image_size, num_classes, **overrides)
MODELS = Registry("model", " (see `tinydiffusion list models`)")
MODELS.add("seed-unet", lambda in_channels, image_size, num_classes=0, **kw: SeedUNet(in_channels, **kw),
           "the lesson's minimal Conv-BN-ReLU U-Net (~1.8M params), 28x28 only")
MODELS.add("unet-small", partial(UNet, channels=32, channel_mult=(1, 2, 2), num_res_blocks=1),
           "improved U-Net, 32 channels, 1 block per level (~1M params)")
MODELS.add("unet-patch", partial(UNet, channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, patch_size=2),
           "improved U-Net on 2x2 patches (28 px -> 14, 7, 4), 32 channels, 1 block per level (1.1M): "
           "the CPU preset's net, ~3x the img/s of unet-small")
MODELS.add("unet", partial(UNet, channels=64, channel_mult=(1, 2, 2), num_res_blocks=2),
           "improved U-Net, 64 channels x (1,2,2), 2 blocks per level, attention at 7/8 px")
MODELS.add("unet-large", partial(UNet, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, dropout=0.1),
           "improved U-Net, 128 channels x (1,2,2,2), dropout 0.1 (for GPUs, 32x32 colour)")
MODELS.add("dit-tiny", partial(DiT, channels=128, depth=4, heads=4, patch_size=2),
           "Diffusion Transformer, 4 blocks x 128 wide, 4 heads, 2x2 patches (196 tokens at 28 px), adaLN-Zero "
           "(1.2M: the same parameter count as unet-patch)")
MODELS.add("dit-s", partial(DiT, channels=384, depth=12, heads=6, patch_size=2),
           "DiT-S/2 (Peebles & Xie 2023): 12 blocks x 384 wide, 6 heads, 2x2 patches (~33M, for GPUs)")

# Autoencoders are not denoisers: net.encode(x) -> (mean, log_var), net.decode(z) -> x (models/autoencoder.py).
MODELS.add("ae-f4c4", partial(KLAutoencoder, latent_channels=4, channels=16, channel_mult=(1, 2, 4)),
           "KL autoencoder for latent diffusion: 28 x 28 x 1 -> 7 x 7 x 4 (f = 4, 196 numbers per digit, 4x fewer)")
MODELS.add("ae-f2c2", partial(KLAutoencoder, latent_channels=2, channels=16, channel_mult=(1, 2)),
           "KL autoencoder for latent diffusion: 28 x 28 x 1 -> 14 x 14 x 2 (f = 2, 392 numbers per digit, 2x fewer)")


def is_autoencoder(name: str) -> bool:
    return _backbone(name) is KLAutoencoder


def build_model(name: str, in_channels: int, image_size: int, num_classes: int = 0, **overrides) -> nn.Module:
    """The named denoiser for images of shape (in_channels, image_size, image_size)."""
    constructor = MODELS.get(name)
    if name == "seed-unet" and image_size != 28:
        raise UserError("seed-unet works on 28x28 images only; choose 'unet' for other sizes.")
    if _backbone(name) is UNet:
        overrides.setdefault("attention_resolutions", _lowest_resolution(image_size, overrides, name))
    try:
        return constructor(in_channels=in_channels, image_size=image_size, num_classes=num_classes, **overrides)
    except TypeError as e:
        cls = _backbone(name)
        if cls is not None:
            takes = set(inspect.signature(cls).parameters)
            foreign = sorted(k for k in overrides if k not in takes)
            if foreign:
                raise UserError(f"Model '{name}' ({cls.__name__}) has no option {', '.join(foreign)}; it takes "
                                f"{', '.join(sorted(takes - {'in_channels', 'image_size', 'num_classes'}))}.") from None
        raise UserError(f"Bad option for model '{name}': {e}.") from None


def _lowest_resolution(image_size: int, overrides: dict, name: str) -> tuple:
    """Attention goes at the lowest resolution unless the config says otherwise: 28 -> 7, 32 -> 8 (x1,2,2);
    with 2x2 patches 28 -> 14 -> 4."""
    defaults = MODELS[name].keywords
    levels = len(overrides.get("channel_mult", defaults["channel_mult"]))
    res = image_size // overrides.get("patch_size", defaults.get("patch_size", 1))
    for _ in range(levels - 1):
        res = (res + 1) // 2
    return (res,)


def resolved_options(name: str, image_size: int, overrides: dict) -> dict:
    """Every size option of a registered U-Net as it will be built (the registry's value unless overridden), for a
    run's config.json: the run then rebuilds the same network even if the registry's sizes change later."""
    cls = _backbone(name)
    if cls is None:
        return dict(overrides)
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}
    options = {**defaults, **MODELS[name].keywords, **overrides}
    if cls is UNet:
        options["attention_resolutions"] = overrides.get("attention_resolutions",
                                                         _lowest_resolution(image_size, overrides, name))
    return options


def _backbone(name: str):
    """The class a registered name builds with its sizes (UNet, DiT), or None (seed-unet, unknown names)."""
    entry = MODELS[name] if name in MODELS else None
    return entry.func if isinstance(entry, partial) else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
