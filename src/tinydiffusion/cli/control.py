"""The control flags of `tinydiffusion sample` (ControlNet runs): a map the user drew, or maps computed from given
images, the control scale, and guidance on the map."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def add_control_args(p) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--control", type=Path, metavar="MAP.png",
                      help="a control map drawn by the user (any size: resized to the run's images and binarised; "
                           "dark strokes on a light background are inverted)")
    what.add_argument("--control-from", metavar="FILE.npz|test",
                      help="maps computed from these images (an .npz or a folder of PNGs; 'test': random test-split "
                           "digits of the run's dataset), one per sample; prints the fidelity of the samples to them")
    p.add_argument("--control-scale", type=float, metavar="S",
                   help="multiplier of the ControlNet's residuals (0 = the base alone; default: the run's, 1)")
    p.add_argument("--drop-control", action="store_true",
                   help="with --guidance: the unconditional branch drops the map (guidance on the map itself)")


def control_request(args, n: int):
    """(maps (n', 1, H, W) in {0, 1} or None, the source images' labels or None, n') for the sample command."""
    import torch

    from ..checkpoint import load_meta
    from ..config import load_config

    if args.control is None and args.control_from is None:
        if args.control_scale is not None:
            raise UserError("--control-scale applies with --control MAP.png or --control-from FILE.")
        return None, None, n
    cfg, meta = load_config(args.run / "config.json"), load_meta(args.run)
    if not cfg.control.base:
        raise UserError(f"{args.run} was not trained with control maps (train one with --preset mnist-controlnet); "
                        "drop --control and --control-from.")
    shape = tuple(meta["shape"])
    if args.control is not None:
        from ..conditioning.control import map_from_image
        return map_from_image(read_map(args.control), shape[-2:]).repeat(n, 1, 1, 1), None, n  # (n, 1, H, W)
    images, labels = source_images(args.control_from, cfg, meta, n, args.seed)
    if tuple(images.shape[1:]) != shape:
        raise UserError(f"{args.control_from} holds images of shape {tuple(images.shape[1:])}; this run makes "
                        f"{shape}.")
    from ..conditioning.control import control_map
    return control_map(cfg.control.kind, images * 2 - 1), labels, len(images)


def read_map(path: Path):
    """A PNG (or any image PIL reads) as (1, h, w) in [0, 1], ink bright; one sentence if it is not an image."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise UserError(f"No control map at {path}.")
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=np.float32) / 255
    except (UnidentifiedImageError, OSError, ValueError):
        raise UserError(f"{path} is not an image; draw the control map as a PNG (light strokes on black, or dark "
                        "strokes on white).") from None
    from ..conditioning.control import ink_bright
    return ink_bright(torch.from_numpy(a)[None])  # (1, h, w)


def source_images(spec: str, cfg, meta: dict, n: int, seed: int):
    """(images (n', C, H, W) in [0, 1], labels or None): the first n of a samples file, or n random test digits."""
    from ..data import load_samples, to_unit_range

    if spec == "test":
        from ..train.controlnet import held_out_maps
        x, _, labels = held_out_maps(cfg, n, seed)
        return to_unit_range(x), labels
    images, labels = load_samples(spec)
    return images[:n], None if labels is None else labels[:n]


def print_fidelity(images, maps, labels, run: Path) -> None:
    """One line: how closely the samples follow the maps they were given."""
    from ..config import load_config
    from ..eval.fidelity import fidelity

    cfg = load_config(run / "config.json")
    s = fidelity(images, maps, cfg.control.kind, labels, cfg.data.name)
    acc = f", label accuracy {s['label_accuracy']:.3f}" if "label_accuracy" in s else ""
    print(f"control fidelity ({cfg.control.kind}, n = {s['n']}, 1-pixel tolerance): F1 {s['f1']:.3f}, IoU "
          f"{s['iou']:.3f}, precision {s['precision']:.3f}, recall {s['recall']:.3f}, F1 without tolerance "
          f"{s['f1_exact']:.3f}{acc}")
