"""Experiment `controlnet`: how well samples follow control maps (Zhang et al. 2023), on a trained base run.

Three arms train for the same wall-clock minutes on the same base: the ControlNet (zero-initialised convolutions),
the same with PyTorch's default init instead of zeros (the paper's ablation, sec. 4.3), and the baseline: the
base's architecture trained from scratch with the map concatenated to its input. Each arm samples one fixed set
of maps from held-out test digits with the same starting noise; we report the map's F1 and IoU (1-pixel
tolerance), the F1 without tolerance and label accuracy. The ControlNet is also swept over control scales; scale 0
is the frozen base alone: its unconditioned samples are the chance level. Pictures: map | samples per scale, and
each arm's fidelity over training (the "sudden convergence" of sec. 4.4).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from ..conditioning.control import control_cond
from ..data import to_unit_range
from ..device import resolve_device, use_bf16
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..runs import load_run
from ..viz.curves import fidelity_curve_figure, read_fidelity
from ..viz.grids import grid_array, save_png, titled, to_pil
from .common import train_variant, variant_config
from .report import table, write_report

# the baseline trains all its weights from scratch, so it gets the base preset's recipe (mnist: AdamW 3e-3, 200 warm-up steps)
ARMS = {"controlnet": [], "random-init": ["control.zero_init=false"],
        "concat-scratch": ["control.arch=concat", "train.lr=3e-3", "train.warmup_steps=200"]}


def add_arguments(p):
    p.add_argument("--base", type=Path, required=True, help="the trained base run (e.g. train --preset mnist)")
    p.add_argument("--out", type=Path, help="report folder (default reports/controlnet)")
    p.add_argument("--preset", default="mnist-controlnet", help="the control recipe (default mnist-controlnet)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=2.0, help="training minutes per arm (default 2)")
    budget.add_argument("--steps", type=int, help="training steps per arm instead")
    p.add_argument("--kind", default="edges", help="the control map: edges | skeleton | sketch (default edges)")
    p.add_argument("--scales", default="0,0.25,0.5,1,1.5,2", help="control scales for the sweep (default 0,...,2)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"which arms to train (default {','.join(ARMS)})")
    p.add_argument("--n", type=int, default=256, help="held-out test maps per measurement (default 256)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every arm, e.g. --set control.fidelity_every=50 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--reuse", action="store_true", help="reuse arms already trained in the report folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise UserError(f"--scales expects comma-separated numbers like 0,0.5,1; got '{text}'.")
    return values


@torch.no_grad()
def sample_maps(run_dir: Path, maps: torch.Tensor, scale: float, seed: int, device) -> tuple[torch.Tensor, float]:
    """(samples (n, C, H, W) in [-1, 1], ms per image) of a control run for maps at `scale`, noise from `seed`."""
    cfg, net, path, meta = load_run(run_dir, device=device)
    start = time.perf_counter()
    x = generate(denoiser_for(net, path, cfg.diffusion.prediction, cfg.sample), cfg.sample, len(maps),
                 tuple(meta["shape"]), generator=torch.Generator().manual_seed(seed), device=device,
                 cond=control_cond(maps, scale), bf16=use_bf16(cfg.train.precision, device))
    return x.clamp(-1, 1), (time.perf_counter() - start) / len(maps) * 1000


def run(args) -> Path:
    from ..eval.fidelity import fidelity
    from ..train.controlnet import held_out_maps

    scales, arms = _numbers(args.scales), [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise UserError(f"Unknown arm(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ARMS)}.")
    if args.n < 1 or ((args.minutes is None or args.minutes <= 0) and not args.steps):
        raise UserError("Give --n >= 1 and a positive --minutes or --steps budget.")
    out, device = Path(args.out or Path("reports") / "controlnet"), resolve_device(args.device)
    shared = [f"control.base={Path(args.base).resolve()}", f"control.kind={args.kind}"]
    rows, runs = [], {}
    for arm in arms:
        cfg = variant_config(args, shared + ARMS[arm])
        runs[arm] = out / "runs" / arm
        trained = train_variant(args, cfg, runs[arm])
        rows.append(dict(arm=arm, train_steps=trained["steps"], train_minutes=trained["minutes"],
                         last_loss=trained["loss"], img_s=trained["img_s"]))
    cfg, _, _, meta = load_run(runs[arms[0]])
    _, maps, labels = held_out_maps(replace(cfg, control=replace(cfg.control, kind=args.kind)), args.n, seed=1)
    for row in rows:
        x, ms = sample_maps(runs[row["arm"]], maps, 1.0, args.seed, device)
        row.update(fidelity(x, maps, args.kind, labels, cfg.data.name), ms_per_image=ms,
                   trainable_parameters=load_run(runs[row["arm"]])[3]["parameters"])
        print(f"{row['arm']}: F1 {row['f1']:.3f}, label accuracy {row.get('label_accuracy', float('nan')):.3f}")

    sweep, columns = [], [to_unit_range(maps[:8] * 2 - 1)]
    sweep_arm = "controlnet" if "controlnet" in runs else arms[0]
    for s in scales:
        x, ms = sample_maps(runs[sweep_arm], maps, s, args.seed, device)
        sweep.append(dict(scale=s, **fidelity(x, maps, args.kind, labels, cfg.data.name)))
        columns.append(to_unit_range(x[:8]))
        print(f"scale {s:g}: F1 {sweep[-1]['f1']:.3f}, label accuracy {sweep[-1].get('label_accuracy', 0):.3f}")
    picture = torch.stack(columns, 1).flatten(0, 1)  # (8, 1 + S, C, H, W) -> (8 (1 + S), C, H, W): row per map
    names = " | ".join(["map"] + [f"scale {s:g}" for s in scales])
    save_png(titled(to_pil(grid_array(picture, nrow=1 + len(scales), scale=3)), f"{args.kind} map | samples",
                    f"columns: {names}. Scale 0 is the frozen base without the map; same noise in every column."),
             out / "scales.png")
    curves = {arm: read_fidelity(path) for arm, path in runs.items() if _has_fidelity(path)}
    if curves:
        save_png(fidelity_curve_figure(curves, "Fidelity to held-out maps over training"), out / "curve.png")

    cols = ["arm", "train_minutes", "train_steps", "trainable_parameters", "f1", "iou", "f1_exact", "label_accuracy",
            "ms_per_image"]
    scols = ["scale", "f1", "iou", "precision", "recall", "f1_exact", "label_accuracy"]
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    body = f"""
Base run `{args.base}` ({meta['dataset']}, frozen), control map `{args.kind}`, each arm trained for {budget} of
wall-clock; {args.n} maps from held-out test digits, sampled with the base's sampler ({cfg.sample.sampler},
{cfg.sample.steps} steps) and the same starting noise for every arm and scale.

## Arms at control scale 1

{table(rows, cols, floatfmt=".3f")}

`controlnet`: the trainable copy of the base's encoder with zero convolutions; `random-init`: the same with
PyTorch's default init of those convolutions; `concat-scratch`: the base's architecture trained from scratch with
the map as an extra input channel (all its parameters train). F1 / IoU: the `{args.kind}` map of each sample
against its map, a pixel matching within one pixel; `f1_exact` without tolerance; label accuracy: the project's
classifier reads the sample as the test digit the map came from.

## Control scale ({sweep_arm})

{table(sweep, scols, floatfmt=".3f")}

Scale 0 is the base's unconditioned samples, the chance level.

![map | samples per scale](scales.png)
""" + ("\n![fidelity over training](curve.png)\n" if curves else "")
    return write_report(out, "ControlNet: fidelity to control maps", body,
                        dict(base=str(args.base), kind=args.kind, budget=budget, n=args.n, arms=rows, scales=sweep))


def _has_fidelity(run_dir: Path) -> bool:
    try:
        return bool(read_fidelity(run_dir))
    except UserError:
        return False
