"""Typed, frozen run configurations, the named presets, and `--set section.key=value` overrides."""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UserError
from .registry import Registry


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"  # a registered dataset (see `tinydiffusion list datasets`), or a path
    path: str = ""  # where a dataset that does not ship in a package lives on disk
    hflip: bool = False  # random horizontal flips (not for digits)
    conditional: bool = False  # give the model the class labels
    text: bool = False  # give the model captions made from the data, as MiniLM token states (see captions.py)
    image_size: int = 0  # resize (shorter side) + centre-crop to this; 0 = native (32 for image folders)
    channels: int = 0  # 1 = grayscale, 3 = RGB, 0 = as stored (folders: RGB unless every file is gray)
    autoencoder: str = ""  # latent diffusion: the run directory of a trained autoencoder (train --preset mnist-ae)
    latents: str = "mean"  # latent diffusion: mean = the posterior mean of each image | sample = z ~ q(z | x) per draw


@dataclass(frozen=True)
class ModelConfig:
    name: str = "unet"  # a registered denoiser (see `tinydiffusion list models`)
    # Optional overrides of the registered size; None keeps the registry's value.
    channels: int | None = None
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int | None = None
    attention_resolutions: tuple[int, ...] | None = None
    dropout: float | None = None
    norm_kind: str | None = None
    patch_size: int | None = None  # 2: the U-Net sees 2x2 patches as channels (28 px -> 14 px; 4x fewer pixels)
    scale_shift: bool | None = None  # the time embedding scales and shifts normalised features (AdaGN)
    context_dim: int | None = None  # text models: width of the token states cross-attention reads (384)
    depth: int | None = None  # DiT: transformer blocks
    heads: int | None = None  # attention heads (U-Net: 4; DiT: the registered size's)
    latent_channels: int | None = None  # autoencoders: channels of the latent grid
    decoder_blocks: int | None = None  # autoencoders: Blocks per decoder level
    guidance_embedding: bool | None = None  # LCM students: the guidance scale w is an input (condition.py)

    def overrides(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name" and v is not None}


@dataclass(frozen=True)
class DiffusionConfig:
    path: str = "ddpm-linear"  # `tinydiffusion list paths`: ddpm-linear | ddpm-cosine | vp-cosine | flow
    T: int = 1000  # steps of a DDPM path's table (continuous paths ignore it)
    prediction: str = "eps"  # `list predictions`: eps | x0 | v | u (the velocity)
    weighting: str = "none"  # `list weightings`: none | min-snr
    t_sampling: str = "uniform"  # `list time-samplings`: uniform | importance | lognormal | logit-normal
    logit_mean: float = 0.0  # logit-normal t sampling: t = sigmoid(N(logit_mean, logit_std)) (SD3: 0, 1)
    logit_std: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    optimizer: str = "adamw"  # `list optimizers`: adam | adamw
    lr: float = 2e-4
    adam_beta2: float = 0.999  # second-moment decay; 0.99 adapts faster in short runs
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_decay: str = "none"  # none | cosine (over the budget, by steps or by minutes)
    grad_clip: float = 1.0  # 0 = off
    ema_decay: float = 0.9999  # 0 = no EMA (sample from the raw weights)
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + step) / (10 + step))
    precision: str = "auto"  # `list precisions`: auto = bf16 autocast where the hardware has it (see device.py)
    channels_last: bool = False
    label_dropout: float = 0.1  # conditional models: fraction of labels replaced by the null label
    epochs: float = 0  # budget: whichever of epochs, steps, minutes is set (the CLI flags override)
    steps: int = 0
    minutes: float = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2  # the newest K checkpoint folders are kept (checkpoint.py)
    nan_policy: str = "stop"  # a non-finite loss: stop (last good checkpoint intact) | skip (the step; 10 in a row stop)
    sample_every: int = 0  # 0 = a grid at each checkpoint only
    eval_every: int = 0  # sample-quality metrics (eval/evaluate.py) every K steps; 0 = off (minutes per eval on a CPU)
    eval_n: int = 1000  # samples per evaluation
    snapshot_minutes: tuple[float, ...] = ()  # also save the (EMA) weights at these minutes of training
    accumulate: int = 1  # micro-batches per step (gradient accumulation); the step's batch is still batch_size
    compile: bool = False  # wrap the network in torch.compile (train/ddp.py, README "Beyond one machine")
    kl_weight: float = 1e-4  # autoencoders: loss = sum |x - x_hat| + kl_weight * KL(q(z|x) || N(0, I)), per image


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "ddpm"  # `tinydiffusion list samplers`
    steps: int = 1000
    spacing: str = "uniform"  # `list spacings`: uniform | trailing | quadratic | karras | logsnr | shifted
    shift: float = 3.0  # the shifted spacing's s (SD3: 3.0); 1 = uniform
    variance: str = "small"  # ddpm: small = beta_tilde (posterior), large = beta
    eta: float = 0.0  # ddim: 0 = deterministic, 1 = ancestral (DDPM's posterior noise)
    clip_x0: bool = True


@dataclass(frozen=True)
class ControlConfig:
    """ControlNet (models/controlnet.py, train/controlnet.py): a frozen base run steered by control maps."""
    base: str = ""  # the run directory of the trained base; "" = not a control run
    kind: str = "edges"  # the control map (`tinydiffusion list control-maps`): edges | skeleton | sketch
    arch: str = "controlnet"  # controlnet (trainable copy of the base's encoder) | concat (the base's net from scratch, map as an input channel)
    zero_init: bool = True  # the ControlNet's zero convolutions (false: PyTorch's default init, the ablation)
    hint_channels: int = 16  # width of the hint encoder from the map to the first feature resolution
    drop_base: float = 0.5  # probability that the base's condition (labels, prompt) is dropped for a training image
    scale: float = 1.0  # the control scale `sample` uses unless --control-scale says otherwise
    fidelity_every: int = 100  # log fidelity on held-out test maps every K steps, every K/4 over the first 2K (0 = off)
    fidelity_n: int = 32  # held-out maps per fidelity check


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        try:
            sections = {f.name: _build(f.type, d.get(f.name, {})) for f in dataclasses.fields(cls) if f.name != "seed"}
            return cls(**sections, seed=int(d.get("seed", 0)))
        except (TypeError, ValueError) as e:
            raise UserError(f"The run's config.json does not match this version of tinydiffusion ({e}).") from None


def _build(section_type, values: dict):
    cls = {c.__name__: c for c in (DataConfig, ModelConfig, DiffusionConfig, TrainConfig, SampleConfig,
                                          ControlConfig)}[
        section_type if isinstance(section_type, str) else section_type.__name__]
    hints = typing.get_type_hints(cls)
    if cls is TrainConfig and "bf16" in values:  # runs written before train.precision replaced train.bf16
        values = dict(values, precision="auto" if values["bf16"] else "fp32")
    if cls is DiffusionConfig and "schedule" in values and "path" not in values:  # runs written before paths.py
        values = dict(values, path=f"ddpm-{values['schedule']}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in hints})


def load_config(path: Path) -> Config:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"No config.json in {Path(path).parent}; is it a tinydiffusion run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; the run directory is damaged.") from None
    try:
        return Config.from_dict(values)
    except (TypeError, AttributeError, KeyError, ValueError):
        raise UserError(f"{path} is JSON but not a tinydiffusion config; the run directory is damaged.") from None


# --------------------------------------------------------------------------------------------- presets
# Why each preset is what it is (the trials behind the choices) is in docs/presets.md.
PRESETS = Registry("preset", " (see `tinydiffusion presets`)")
PRESETS.add("mnist-seed", Config(
    model=ModelConfig(name="seed-unet"),
    train=TrainConfig(optimizer="adam", lr=2e-4, grad_clip=0.0, ema_decay=0.0, epochs=20),
    sample=SampleConfig(sampler="ddpm", steps=1000, variance="large", clip_x0=False)),
    "the lesson's recipe exactly: seed-unet, linear T=1000, Adam 2e-4, batch 128, 20 epochs, 1000-step ancestral "
    "sampling with sigma^2 = beta")
_DDPM = PRESETS.add("mnist-ddpm", Config(
    model=ModelConfig(name="unet-patch", scale_shift=True),
    diffusion=DiffusionConfig(prediction="v", weighting="min-snr", t_sampling="importance"),
    train=TrainConfig(batch_size=64, lr=3e-3, adam_beta2=0.99, warmup_steps=200, lr_decay="cosine", ema_decay=0.999,
                      minutes=10, checkpoint_every=1000),
    sample=SampleConfig(sampler="dpm++2m-sde", steps=10, spacing="trailing", clip_x0=False)),
    "DDPM for a 2-core CPU (the default until flow matching matched it at 10 NFE and beat it below): a 32-channel "
    "U-Net on 2x2 patches with scale-shift time conditioning, predicting v, min-SNR-5 loss weights with t drawn in "
    "proportion to them, batch 64, AdamW 3e-3 (beta2 0.99) with warm-up and cosine decay, EMA, 10 minutes; sampled "
    "with DPM-Solver++(2M) SDE, 10 steps on the trailing grid (999, 899, ..., 99)")


def _with_labels(base: Config) -> Config:
    """base trained on class labels (10 % dropped, train.label_dropout) for classifier-free guidance. Guidance
    extrapolates x0_hat past the data range, so a guided preset clips it (pixels only: standardised latents have no
    fixed range)."""
    return replace(base, data=replace(base.data, conditional=True),
                   sample=replace(base.sample, clip_x0=not base.data.autoencoder))


def _with_text(base: Config) -> Config:
    """base trained on generated captions read by MiniLM (384-d token states) through cross-attention; guided
    sampling clips x0_hat as in _with_labels."""
    return replace(base, data=replace(base.data, text=True), model=replace(base.model, context_dim=384),
                   sample=replace(base.sample, clip_x0=not base.data.autoencoder))


PRESETS.add("mnist-ddpm-class", _with_labels(_DDPM),
            "'mnist-ddpm' with class labels: label embedding + 10 % label dropout, for classifier-free guidance")
PRESETS.add("mnist-ddpm-text", _with_text(_DDPM),
            "'mnist-ddpm' with generated captions (label, thickness, slant, size) read by MiniLM; cross-attention at "
            "the 7 and 4 px levels, 10 % empty prompts for classifier-free guidance")
_MNIST = PRESETS.add("mnist", replace(
    _DDPM, diffusion=DiffusionConfig(path="flow", prediction="u", weighting="none", t_sampling="logit-normal"),
    sample=SampleConfig(sampler="dpm++2m", steps=10, spacing="shifted", clip_x0=False)),
    "the project's default for a 2-core CPU: rectified flow, x_t = (1 - t) x0 + t eps, on mnist-ddpm's network and "
    "optimiser (a 32-channel U-Net on 2x2 patches, AdamW 3e-3, EMA, 10 minutes), the velocity u = eps - x0 as the "
    "target, t ~ logit-normal(0, 1) (SD3); sampled with DPM-Solver++(2M), 10 steps on SD3's shifted grid (shift 3)")
PRESETS.add("mnist-class", _with_labels(_MNIST),
            "'mnist' with class labels (10 % label dropout) for classifier-free guidance")
PRESETS.add("mnist-text", _with_text(_MNIST),
            "'mnist' with generated captions read by MiniLM (cross-attention at 7 and 4 px), for classifier-free "
            "guidance on prompts")
_DIT = PRESETS.add("mnist-dit", replace(
    _MNIST, model=ModelConfig(name="dit-tiny", patch_size=4), train=replace(_MNIST.train, lr=6e-3)),
    "'mnist' with a Diffusion Transformer instead of the U-Net: dit-tiny (4 blocks x 128 wide, 4 heads, adaLN-Zero, "
    "1.27M parameters like the U-Net) on 4x4 patches (49 tokens; 2x2 patches, 196 tokens, trained 5x slower on a CPU), AdamW 6e-3")
PRESETS.add("mnist-dit-class", _with_labels(_DIT),
            "'mnist-dit' with class labels (10 % label dropout) for classifier-free guidance")
PRESETS.add("mnist-dit-text", _with_text(_DIT),
            "'mnist-dit' with generated captions read by MiniLM through cross-attention in every block, for "
            "classifier-free guidance on prompts")
_AE = PRESETS.add("mnist-ae", Config(
    model=ModelConfig(name="ae-f4c4"),
    train=TrainConfig(batch_size=64, lr=2e-3, adam_beta2=0.99, warmup_steps=100, lr_decay="cosine", ema_decay=0.0,
                      minutes=3, kl_weight=1e-4, checkpoint_every=1000)),
    "the latent-diffusion autoencoder: 28 x 28 x 1 -> 7 x 7 x 4 (ae-f4c4), L1 + 1e-4 KL per image, AdamW 2e-3 with "
    "warm-up and cosine decay, batch 64, 3 minutes; writes the latent cache, statistics and reconstruction ceiling")
_LATENT = PRESETS.add("mnist-latent", replace(
    _MNIST, data=DataConfig(autoencoder="runs/mnist-ae"),
    model=ModelConfig(name="unet-small", channels=32, channel_mult=(1, 2), scale_shift=True)),
    "latent diffusion: 'mnist''s flow recipe on the 7 x 7 x 4 standardised latents of the autoencoder in "
    "runs/mnist-ae (train it first: `tinydiffusion train --preset mnist-ae`; or --set data.autoencoder=RUN), "
    "a 32-channel U-Net at 7 and 4 px (0.76M, 0.029 GFLOPs per call: 3.4x fewer than the pixel preset's), decoded "
    "once per sample")
PRESETS.add("mnist-latent-class", _with_labels(_LATENT),
            "'mnist-latent' with class labels (10 % label dropout) for classifier-free guidance")
PRESETS.add("mnist-controlnet", replace(
    _MNIST, train=replace(_MNIST.train, lr=1e-3, warmup_steps=50, checkpoint_every=500),
    control=ControlConfig(base="runs/mnist", kind="edges")),
    "ControlNet (Zhang et al. 2023) on the trained 'mnist' run in runs/mnist (or --set control.base=RUN), frozen: a "
    "trainable copy of its encoder and middle reads Sobel edge maps of the digits (--set control.kind=skeleton or "
    "sketch) through zero-initialised convolutions, AdamW 1e-3, 10 minutes; edge fidelity on held-out test maps "
    "logged every 100 steps (every 25 over the first 200)")
PRESETS.add("fashion", replace(_DDPM, data=DataConfig(name="fashion")),
            "the mnist-ddpm recipe on Fashion-MNIST (Debian's dataset-fashion-mnist): small U-Net, 10 minutes on a 2-core CPU")
PRESETS.add("fashion-gpu", _with_labels(replace(
    _MNIST, data=DataConfig(name="fashion"), model=ModelConfig(name="unet", channels=128),
    train=replace(_MNIST.train, batch_size=256, lr=2e-4, adam_beta2=0.999, warmup_steps=1000, lr_decay="none",
                  ema_decay=0.9999, minutes=60, checkpoint_every=5000, log_every=100))),
    "one GPU hour on Fashion-MNIST, class-conditional: 'mnist''s flow recipe on the 128-channel unet at 28 px, "
    "batch 256, AdamW 2e-4 with 1000 warm-up steps, EMA 0.9999, 60 minutes; sized for one GPU, or torchrun on N "
    "(the global batch stays 256). CPU: far too slow (README, Beyond one machine)")
PRESETS.add("cifar10", Config(
    data=DataConfig(name="cifar10", hflip=True), model=ModelConfig(name="unet", channels=128),
    diffusion=DiffusionConfig(path="ddpm-cosine"), train=TrainConfig(lr=2e-4, epochs=100, checkpoint_every=5000),
    sample=SampleConfig(sampler="ddpm", steps=1000)),
    "the lesson's Part B, sized for a GPU: CIFAR-10 (data.path or CIFAR10_DIR), unet with 128 channels, cosine "
    "schedule, flips, Adam 2e-4, batch 128, 100 epochs (39k steps). CPU: ~26 s/step on 2 idle cores "
    "(52 core-s per batch), ~12 days: run it on a GPU")
PRESETS.add("cifar10-ddpm", Config(
    data=DataConfig(name="cifar10", hflip=True),
    model=ModelConfig(name="unet-large", attention_resolutions=(16,), dropout=0.1),
    diffusion=DiffusionConfig(path="ddpm-linear", T=1000),
    train=TrainConfig(lr=2e-4, batch_size=128, warmup_steps=5000, ema_decay=0.9999, steps=800_000,
                      checkpoint_every=10_000),
    sample=SampleConfig(sampler="ddpm", steps=1000, variance="large")),  # sigma^2 = beta, as the paper's model
    "the DDPM paper's CIFAR-10 run (Ho et al. 2020): 35.7M unet-large, attention at 16x16, dropout 0.1, linear "
    "T=1000, Adam 2e-4, batch 128, warm-up 5000, EMA 0.9999, flips, 800k steps. CPU: ~40 s/step on 2 idle "
    "cores (~80 core-s per batch), ~1 year (the paper: 10.6 h on a TPU v3-8)")


def get_preset(name: str) -> Config:
    return PRESETS.get(name)


def _parse(value: str, tp, key: str):
    """Parse a --set value by the field's annotation: int, float, bool, str, tuple[int, ...], or X | None."""
    args = typing.get_args(tp)
    if type(None) in args:
        if value.lower() in ("none", "null", ""):
            return None
        tp = next(a for a in args if a is not type(None))
    try:
        if typing.get_origin(tp) is tuple:
            element = typing.get_args(tp)[0]  # tuple[int, ...] or tuple[float, ...]
            return tuple(element(v) for v in value.replace("(", "").replace(")", "").split(",") if v.strip())
        if tp is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        return tp(value)
    except ValueError:
        name = getattr(tp, "__name__", str(tp))
        raise UserError(f"--set {key}={value}: expected a value of type {name}.") from None


def apply_overrides(cfg: Config, assignments: list[str]) -> Config:
    """Apply ["train.lr=1e-3", "model.channels=48", "seed=3"] to cfg, validating every name and type."""
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects key=value (like train.lr=1e-3), got '{item}'.")
        if key == "seed":
            cfg = replace(cfg, seed=_parse(value, int, key))
            continue
        section, _, name = key.partition(".")
        sections = [f.name for f in dataclasses.fields(cfg) if f.name != "seed"]
        if section not in sections:
            raise UserError(f"--set {key}: unknown section '{section}'; choose one of: {', '.join(sections)}, seed.")
        sub = getattr(cfg, section)
        hints = typing.get_type_hints(type(sub))
        if name not in hints:
            raise UserError(f"--set {key}: '{section}' has no key '{name}'; it has: {', '.join(hints)}.")
        cfg = replace(cfg, **{section: replace(sub, **{name: _parse(value, hints[name], key)})})
    return cfg
