"""The sample page's control maps, for ControlNet runs: the map of a held-out test digit or one the learner drew,
its scale, guidance on the map, and afterwards how closely the samples follow it (eval/fidelity.py)."""
from __future__ import annotations

import base64
import io
from functools import lru_cache

import torch
from PIL import Image, UnidentifiedImageError

from ..conditioning.control import control_map, ink_bright, map_from_image
from ..data import load_dataset, to_model_range
from ..errors import UserError
from .images import grid_url
from .params import flag, number

MAX_SCALE = 10.0
FIELDS = ("control", "control_digit", "control_image", "control_scale", "drop_control")


@lru_cache(maxsize=2)
def _test_split(name: str, path: str, image_size: int, channels: int):
    return load_dataset(name, "test", path, image_size=image_size, channels=channels)


def drawn_map(data_url: str, size: tuple[int, int]) -> torch.Tensor:
    """The page's drawing (a PNG data URL, any size, ink bright or dark) as a map (1, 1, H, W) in {0, 1}."""
    try:
        raw = base64.b64decode(str(data_url).split(",", 1)[-1], validate=False)
        with Image.open(io.BytesIO(raw)) as im:
            gray = im.convert("L")
            x = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(1, gray.height, gray.width)
    except (ValueError, UnidentifiedImageError, OSError):
        raise UserError("The drawn control map is not an image the lab can read; draw it again.") from None
    return map_from_image(ink_bright(x.float() / 255), size)  # (1, 1, H, W)


def control_request(params: dict, cfg, meta: dict, n: int, guidance: float | None) -> dict:
    """The control arguments of a sample request: {} for a run without control maps (UserError if the request
    sends some); else control (n, 1, H, W) maps, control_scale, drop_control, control_labels ((n,) labels of the
    digit the map came from, or None) and the pictures the page shows (the map; the source digit)."""
    if not cfg.control.base:
        if any(flag(params, k) if k == "drop_control" else params.get(k) not in (None, "") for k in FIELDS):
            raise UserError("This run was not trained with control maps (train one with --preset mnist-controlnet); "
                            "leave the control fields empty.")
        return {}
    size, source, pictures, labels = tuple(meta["shape"][-2:]), str(params.get("control") or "digit"), {}, None
    if source == "digit":
        d = cfg.data
        test = _test_split(d.name, d.path, d.image_size, d.channels)
        index = number(params, "control_digit", int, 0)
        if not 0 <= index < len(test):
            raise UserError(f"control_digit must be between 0 and {len(test) - 1} ({d.name} test images), got {index}.")
        x = to_model_range(test.images[index:index + 1])  # (1, C, H, W) in [-1, 1]
        maps, pictures["control_source"] = control_map(cfg.control.kind, x), grid_url(x)
        labels = None if test.labels is None else test.labels[index:index + 1].repeat(n)
    elif source == "drawn":
        if not params.get("control_image"):
            raise UserError("Draw a control map first, or take a test digit's map.")
        maps = drawn_map(params["control_image"], size)
        if not maps.any():
            raise UserError("The drawn control map is empty: draw some strokes first.")
    else:
        raise UserError(f"control must be 'digit' (a test digit's map) or 'drawn', got '{source}'.")
    scale = number(params, "control_scale", float, cfg.control.scale)
    if not 0 <= scale <= MAX_SCALE:
        raise UserError(f"control_scale must be between 0 and {MAX_SCALE:g}, got {scale:g}.")
    drop = flag(params, "drop_control")
    if drop and guidance is None:
        raise UserError("Guidance on the map (drop_control) needs a guidance scale.")
    pictures["control_map"] = grid_url(maps * 2 - 1)
    return dict(control=maps.repeat(n, 1, 1, 1), control_scale=scale, drop_control=drop, control_labels=labels,
                control_kind=cfg.control.kind, dataset=cfg.data.name, pictures=pictures)


def follows(images: torch.Tensor, args: dict) -> dict:
    """How closely samples (n, C, H, W) in [-1, 1] follow their map: F1 at 1-pixel tolerance (and the share read
    as the source digit's class, for a test digit's map)."""
    from ..eval.fidelity import fidelity

    s = fidelity(images, args["control"], args["control_kind"], args["control_labels"], args["dataset"])
    return {k: s[k] for k in ("f1", "f1_exact", "label_accuracy", "n") if k in s}
