"""Experiment `guidance`: the classifier-free guidance dial (Ho & Salimans 2022) on a trained conditional run.

For each w the same starting noise and the same labels (n per class) are sampled; we measure label accuracy
under the project's classifier, precision / recall, within-class diversity (mean pairwise pixel distance
between samples of one class, as a fraction of the test set's) and pixel saturation, and draw a grid per w.
Text runs are prompted with "a handwritten {digit}".
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..data import load_dataset, to_unit_range
from ..errors import UserError
from ..generate import denoiser_for, generate
from ..latent_space import to_pixels
from ..runs import conditioning, load_run
from ..viz.grids import hstack, save_labelled_grid, save_png, titled
from .report import table, write_report

EXTREME = 1 / 255  # a pixel within one 8-bit level of black or white counts as saturated


def add_arguments(p):
    p.add_argument("--run", type=Path, required=True, help="a class- or text-conditional run directory")
    p.add_argument("--out", type=Path, help="report folder (default reports/guidance)")
    p.add_argument("--weights", default="0,1,2,3,5,8", help="guidance scales w, comma-separated (default 0,1,2,3,5,8)")
    p.add_argument("--n-per-class", type=int, default=20, help="samples per class and w (default 20)")
    p.add_argument("--sampler", help="sampler (default: the run's)")
    p.add_argument("--sample-steps", type=int, help="sampler steps (default: the run's)")
    p.add_argument("--rescale", type=float, default=0.0, help="guidance rescale phi for every w > 1 (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")


def diversity(images01: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images of the same class, averaged over classes."""
    per_class = []
    for c in labels.unique():
        x = images01[labels == c].flatten(1)  # (n_c, C*H*W)
        if len(x) > 1:
            d = torch.cdist(x, x)
            per_class.append(d.sum() / (len(x) * (len(x) - 1)))
    return float(torch.stack(per_class).mean())


def saturation(images01: torch.Tensor) -> dict:
    """Fraction of all pixels at the extremes, and of ink pixels (> 0.5) that are pure white."""
    ink = images01 > 0.5
    return dict(saturated=float(((images01 <= EXTREME) | (images01 >= 1 - EXTREME)).float().mean()),
                white_ink=float((images01 >= 1 - EXTREME)[ink].float().mean()) if ink.any() else 0.0)


def run(args) -> Path:
    from ..eval.evaluate import evaluate_samples  # lazy: it loads (or trains once) the project's classifier
    from ..device import resolve_device, use_bf16

    try:
        weights = [float(w) for w in args.weights.split(",") if w.strip()]
    except ValueError:
        raise UserError(f"--weights expects comma-separated numbers like 0,1,3; got '{args.weights}'.") from None
    if not weights or args.n_per_class < 2 or (args.sample_steps is not None and args.sample_steps < 1):
        raise UserError("Give at least one --weights value, --n-per-class >= 2 and --sample-steps >= 1.")
    out = Path(args.out) if args.out else Path("reports") / "guidance"
    device = resolve_device(args.device)
    cfg, net, path, meta = load_run(args.run, device=device)
    k = int(meta.get("num_classes", 0)) or 10
    labels = torch.arange(k).repeat_interleave(args.n_per_class)  # (k * n,) grouped by class: grid rows
    cond, _ = conditioning(cfg, meta, labels=labels, guidance=1.0)
    sample_cfg = replace(cfg.sample, sampler=args.sampler or cfg.sample.sampler,
                         steps=args.sample_steps or cfg.sample.steps)

    test = load_dataset(meta.get("dataset", "mnist"), "test")
    real = test.images[:len(labels)].float() / 255  # a reference of the same size for the pixel statistics
    rows = [dict(w="test data", diversity=1.0, **saturation(real))]
    real_div = diversity(real, test.labels[:len(labels)])
    grids = []
    for w in weights:
        g = torch.Generator().manual_seed(args.seed)  # the same noise for every w: a paired comparison
        denoiser = denoiser_for(net, path, cfg.diffusion.prediction, sample_cfg, guidance=w,
                                guidance_rescale=args.rescale if w > 1 else 0.0)
        x = to_pixels(meta, generate(denoiser, sample_cfg, len(labels), tuple(meta["shape"]), batch_size=args.batch_size,
                                     generator=g, device=device, cond=cond, bf16=use_bf16(cfg.train.precision, device)),
                      device)
        x01 = to_unit_range(x)
        scores = evaluate_samples(x01, labels, dataset=meta.get("dataset", "mnist"))
        rows.append(dict(w=f"{w:g}", **{m: scores[m] for m in ("label_accuracy", "fd_classifier", "precision", "recall")
                                 if m in scores},
                         diversity=diversity(x01, labels) / real_div, **saturation(x01)))
        show = x01.reshape(k, args.n_per_class, *x.shape[1:])[:, :8].reshape(-1, *x.shape[1:])  # 8 per class
        name = f"grid_w{w:g}.png"
        save_labelled_grid(show, out / name, [str(c) for c in range(k)])
        grids.append((w, name))
        print(f"w={w:g}: " + ", ".join(f"{m}={v:.3f}" for m, v in rows[-1].items() if isinstance(v, float)))
    from PIL import Image

    panels = [titled(Image.open(out / name), f"w = {w:g}", size=16) for w, name in grids]
    lines = [hstack(panels[i:i + 3]) for i in range(0, len(panels), 3)]  # three scales per line
    page = Image.new("RGB", (max(p.width for p in lines), sum(p.height for p in lines)), "white")
    for i, line in enumerate(lines):
        page.paste(line, (0, sum(p.height for p in lines[:i])))
    save_png(page, out / "sweep.png")
    best = max(rows[1:], key=lambda r: r.get("label_accuracy", 0.0))
    cols = ["w", "label_accuracy", "fd_classifier", "precision", "recall", "diversity", "saturated", "white_ink"]
    body = f"""
Run `{args.run}`; {args.n_per_class} samples per class for each guidance scale w, the same starting noise for
every w, {sample_cfg.sampler} with {sample_cfg.steps} steps{f', guidance rescale {args.rescale:g} for w > 1' if args.rescale else ''}.
w = 0 is the unconditional model, w = 1 plain conditional sampling, w > 1 pushes further along (cond - uncond).

{table([{c: r.get(c, "") for c in cols} for r in rows], cols, floatfmt=".3f")}

label_accuracy: fraction classified as the requested class by the project's classifier. diversity: mean pairwise
pixel distance between samples of one class, relative to the test set's (1.0). saturated: fraction of pixels
within one 8-bit level of black or white; white_ink: fraction of ink pixels (> 0.5) that are pure white.
Best label accuracy: w = {best['w']} ({best.get('label_accuracy', float('nan')):.3f}).

![the sweep](sweep.png)
"""
    return write_report(out, "Classifier-free guidance sweep", body,
                        dict(run=str(args.run), weights=weights, n_per_class=args.n_per_class,
                             sampler=sample_cfg.sampler, steps=sample_cfg.steps, rescale=args.rescale, rows=rows))
