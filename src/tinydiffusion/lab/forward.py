"""The forward-process page's answers: one digit noised to t with a fixed eps, the numbers at t, the curves."""
from __future__ import annotations

import base64
import io
import math
from functools import lru_cache

import torch
from PIL import Image, UnidentifiedImageError

from ..data import load_dataset, to_model_range
from ..errors import UserError
from ..paths import PATHS, Path, make_path, to_time
from ..process import q_sample
from .images import grid_url

MAX_T = 10_000
CURVE_POINTS = 400


def _int(params: dict, key: str, default: int, lo: int, hi: int) -> int:
    try:
        v = int(params.get(key, default))
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a whole number, got '{params.get(key)}'.") from None
    if not lo <= v <= hi:
        raise UserError(f"{key} must be between {lo} and {hi}, got {v}.")
    return v


@lru_cache(maxsize=16)
def _path(name: str, T: int) -> Path:
    return make_path(PATHS.check(name), T)


def path_of(params: dict) -> Path:
    """The path named by params (path, T); T = 2..10000 sizes a DDPM table."""
    return _path(str(params.get("path", "ddpm-linear")), _int(params, "T", 1000, 2, MAX_T))


@lru_cache(maxsize=4)
def _digits(split: str = "test") -> torch.Tensor:
    return load_dataset("mnist", split).images  # (N, 1, 28, 28) uint8


def digit(index: int) -> torch.Tensor:
    """Test digit `index` as (1, 1, 28, 28) in [-1, 1]."""
    images = _digits()
    if not 0 <= index < len(images):
        raise UserError(f"index must be between 0 and {len(images) - 1} (MNIST test digits), got {index}.")
    return to_model_range(images[index:index + 1])


def uploaded(data_url: str) -> torch.Tensor:
    """An uploaded picture (a data URL) as a (1, 1, 28, 28) grayscale image in [-1, 1], fitted like MNIST."""
    try:
        raw = base64.b64decode(data_url.split(",", 1)[-1], validate=False)
        img = Image.open(io.BytesIO(raw)).convert("L").resize((28, 28), Image.BILINEAR)
    except (ValueError, UnidentifiedImageError, OSError):
        raise UserError("The uploaded file is not an image the page can read; try a PNG or JPEG.") from None
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(1, 1, 28, 28)
    return to_model_range(x)


def user_time(path: Path, params: dict):
    """The slider's time: step k in {0..T-1} on a DDPM path, t in [0, 1] on a continuous one."""
    if path.T is not None:
        return _int(params, "t", path.T // 2, 0, path.T - 1)
    try:
        t = float(params.get("t", 0.5))
    except (TypeError, ValueError):
        raise UserError(f"t must be a number in [0, 1], got '{params.get('t')}'.") from None
    if not 0 <= t <= 1:
        raise UserError(f"t must be in [0, 1] on the {path.name} path, got {t}.")
    return t


def _finite(v: float):
    return v if math.isfinite(v) else None  # JSON has no inf: the page writes "inf" for None


def numbers(path: Path, t: float) -> dict:
    """alpha, sigma, alpha_bar = alpha^2, SNR = alpha^2 / sigma^2 and the formula with them plugged in."""
    a2, s2 = (float(v) for v in path.squares(t))
    alpha, sigma = math.sqrt(a2), math.sqrt(s2)
    snr = a2 / s2 if s2 > 0 else math.inf
    if path.variance_preserving:
        symbolic = "x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps"
    else:
        symbolic = "x_t = (1 - t) * x_0 + t * eps"
    return dict(alpha=alpha, sigma=sigma, alpha_bar=a2, snr=_finite(snr),
                log_snr=_finite(math.log(snr)) if snr > 0 else None, symbolic=symbolic,
                plugged=f"x_t = {alpha:.4f} * x_0 + {sigma:.4f} * eps",
                variance_preserving=path.variance_preserving)


def forward_view(params: dict) -> dict:
    """x0, eps and x_t = alpha(t) x0 + sigma(t) eps as pictures, with the numbers at t. The same seed gives the
    same eps, so moving t changes only the mix."""
    path = path_of(params)
    k = user_time(path, params)
    t = to_time(path, k)  # user-facing step -> continuous t (paths.py is the one place that converts)
    seed = _int(params, "seed", 0, 0, 2**31 - 1)
    x0 = uploaded(params["image"]) if params.get("image") else digit(_int(params, "index", 0, 0, 10**6))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))  # (1, 1, 28, 28), fixed by seed
    x_t = q_sample(path, x0, t, eps)
    return dict(path=path.name, T=path.T, k=k, t=t, **numbers(path, t), x0=grid_url(x0, pad=0),
                eps=grid_url(eps, pad=0), x_t=grid_url(x_t, pad=0))


def curves(params: dict) -> dict:
    """alpha_bar (alpha^2), sigma^2 and log-SNR against the slider's time, at up to CURVE_POINTS times."""
    path = path_of(params)
    if path.T is not None:
        xs = sorted({round(i * (path.T - 1) / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)}) \
            if path.T > CURVE_POINTS else list(range(path.T))
    else:
        xs = [i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)]
    ts = torch.tensor([to_time(path, k) for k in xs], dtype=torch.float64)
    a2, s2 = path.squares(ts)
    log_snr = (a2.log() - s2.log()).tolist()  # log(alpha^2 / sigma^2) = 2 lambda
    return dict(path=path.name, T=path.T, x=xs, alpha_bar=a2.tolist(), sigma2=s2.tolist(),
                log_snr=[_finite(v) for v in log_snr], xlabel="step k" if path.T is not None else "t",
                paths={n: PATHS.text(n) for n in PATHS})
