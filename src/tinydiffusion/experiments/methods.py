"""Experiment `methods`: every method's preset trained for the same wall-clock minutes on this machine, then sampled
at each NFE with each of its candidate samplers; one table per method and NFE with the best sampler's fd_classifier
(mean and spread over sampling seeds, n images each), precision/recall, ms per image and training img/s, a grid per
row and a plot of quality vs NFE. Class-conditional runs draw n / 10 images of each class at guidance scale --guidance
(default 1: no unconditional branch); classifier-free guidance at another w costs two network evaluations per step,
counted in the NFE, except on an LCM run, which takes w as an input. The floor is the same metric for real training
digits (held out from the test split the metric compares against) at the same n.

Latent rows diffuse on one autoencoder (--autoencoder RUN, or `mnist-ae` trained first for --ae-minutes); few-step
rows distil a teacher (--teacher RUN, or the teacher method's row). Both prior runs' minutes are shown apart, not
counted in the row's. Later methods add themselves to METHODS, as DiT, latent and few-step did.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import common
from .report import describe, machine, table, write_report
from ..data import to_unit_range
from ..device import resolve_device
from ..errors import UserError
from ..registry import Registry
from ..samplers import nfe as nfe_of


@dataclass(frozen=True)
class Method:
    """A row group of the harness: the preset it trains and the samplers (and grid spacing) it is judged with."""

    preset: str
    samplers: tuple[str, ...]  # candidates: "sampler" on `spacing`, or "sampler@spacing" on its own grid
    spacing: str | None = None  # None: the preset's
    distill: str | None = None  # a few-step row: `tinydiffusion distill --method` of the teacher method's run
    teacher: str | None = None  # the method whose run is the teacher (or --teacher RUN)
    latent: bool = False  # diffuses on the harness's autoencoder (--autoencoder RUN, or one trained first)

    def candidates(self) -> list[tuple[str, str, str | None]]:
        """(label, sampler, spacing) of every candidate."""
        return [(c, c.partition("@")[0], c.partition("@")[2] or self.spacing) for c in self.samplers]


METHODS = Registry("method", " (see `tinydiffusion experiment methods --help`)")
METHODS.add("ddpm", Method("mnist-ddpm", ("dpm++2m-sde", "dpm++2m", "ddim"), "trailing"),
            "the `mnist-ddpm` preset: DDPM linear path, v-prediction, min-SNR; DPM-Solver++ samplers")
METHODS.add("flow", Method("mnist", ("euler", "heun", "dpm++2m", "dpm++2m@shifted", "dpm++2m-sde"), "uniform"),
            "the `mnist` preset: rectified flow, velocity target, logit-normal t; Euler, Heun, DPM-Solver++ "
            "(2M also on SD3's shifted grid; 2M SDE)")
METHODS.add("cd", Method("mnist", ("consistency",), "uniform", distill="cd", teacher="flow"),
            "consistency distillation of the flow row's run (or --teacher RUN) for the same minutes, Heun teacher "
            "steps (Song et al. 2023); teacher minutes shown separately")
METHODS.add("ct", Method("mnist", ("consistency",), "uniform", distill="ct", teacher="flow"),
            "improved consistency training from scratch on the flow preset's network (Song & Dhariwal 2023)")
METHODS.add("reflow", Method("mnist", ("euler", "heun"), "uniform", distill="reflow", teacher="flow"),
            "2-rectified flow of the flow row's run (or --teacher RUN) retrained for the same minutes on 20k of its "
            "own (noise, sample) couplings, generated first (their time is in the run's meta.json, not in the "
            "minutes); Euler / Heun (Liu et al. 2023)")
METHODS.add("flow-class", Method("mnist-class", ("euler", "heun", "dpm++2m", "dpm++2m@shifted"), "uniform"),
            "the `mnist-class` preset: the flow row with class labels (10 % dropped), sampled per class at --guidance")
METHODS.add("lcm", Method("mnist-class", ("consistency",), "uniform", distill="lcm", teacher="flow-class"),
            "latent consistency distillation of the flow-class row's run (or --teacher RUN, class-conditional) with "
            "guidance w ~ U[1, 4] baked in, sampled at --guidance with one call per step (Luo et al. 2023)")
METHODS.add("latent", Method("mnist-latent", ("euler", "heun", "dpm++2m", "dpm++2m@shifted", "dpm++2m-sde"), "uniform",
                            latent=True),
            "the `mnist-latent` preset: the flow recipe on the 7x7x4 latents of the harness's autoencoder (--autoencoder "
            "RUN, or `mnist-ae` trained first for --ae-minutes, shown apart), decoded before the metric and in the time")
METHODS.add("latent-class", Method("mnist-latent-class", ("euler", "heun", "dpm++2m", "dpm++2m@shifted"), "uniform",
                                  latent=True),
            "the `mnist-latent-class` preset: the latent row with class labels, sampled per class at --guidance")
METHODS.add("latent-cd", Method("mnist-latent", ("consistency",), "uniform", distill="cd", teacher="latent", latent=True),
            "consistency distillation of the latent row's run (or --teacher RUN, a latent run) on its cached latents, "
            "decoded like the latent row; teacher minutes shown separately")
METHODS.add("latent-lcm", Method("mnist-latent-class", ("consistency",), "uniform", distill="lcm",
                                 teacher="latent-class", latent=True),
            "LCM as its paper has it: the lcm row's distillation on the latent-class row's run (or --teacher RUN)")
METHODS.add("dit", Method("mnist-dit", ("euler", "heun", "dpm++2m", "dpm++2m@shifted", "dpm++2m-sde"), "uniform"),
            "the `mnist-dit` preset: the `mnist` flow recipe on a Diffusion Transformer (dit-tiny, 4x4 patches)")


def add_arguments(p):
    common.add_common(p, minutes=10.0, n=1000, sample_steps=None)
    p.add_argument("--methods", default="ddpm,flow", help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--nfe", default="1,2,4,10,20", help="network evaluations per image to compare at")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds for the best sampler of each row")
    p.add_argument("--teacher", type=Path, help="cd/ct rows: distil this trained run instead of the flow row's")
    p.add_argument("--autoencoder", type=Path, help="latent rows: this trained autoencoder run (default: train one)")
    p.add_argument("--ae-minutes", type=float, default=3.0,
                   help="latent rows without --autoencoder: the autoencoder's budget, shown apart (default 3)")
    p.add_argument("--guidance", type=float, default=1.0, metavar="W",
                   help="class-conditional rows (flow-class, lcm): the guidance scale they sample at (default 1)")


def steps_for(sampler: str, nfe: int) -> int | None:
    """The most steps whose network evaluations fit in nfe (heun: 2K - 1), or None if none do."""
    fits = [k for k in range(1, nfe + 1) if nfe_of(sampler, k) <= nfe]
    return max(fits) if fits else None


def run(args) -> Path:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        METHODS.check(m)
    try:
        budgets = sorted({int(k) for k in args.nfe.split(",") if k.strip()})
    except ValueError:
        raise UserError(f"--nfe takes comma-separated whole numbers like 1,2,4,10; got '{args.nfe}'.") from None
    if not methods or not budgets or budgets[0] < 1 or args.seeds < 1:
        raise UserError("Give at least one method, NFE budgets of 1 or more, and --seeds of 1 or more.")
    common.check_sizes(args)
    out = common.out_dir(args, "methods")
    floor = floor_rows(args)
    rows, all_rows = [], []
    jobs = [(name, METHODS.get(name)) for name in methods]
    if args.teacher is not None:  # the given teacher judged beside its students, with the flow row's samplers
        jobs.insert(0, ("teacher", METHODS.get("flow")))
    ae_dir, ae_minutes = autoencoder(args, out) if any(m.latent for _, m in jobs) else (None, 0.0)
    for name, method in jobs:
        args.preset = method.preset
        cfg = common.variant_config(args, [f"data.autoencoder={ae_dir}"] if method.latent else [])
        run_dir = Path(args.teacher) if name == "teacher" else out / "runs" / name
        if name == "teacher":
            trained = common.train_variant(argparse.Namespace(**{**vars(args), "reuse": True}), cfg, run_dir)
        else:
            trained = distilled(args, out, method, run_dir, ae_dir) if method.distill else \
                common.train_variant(args, cfg, run_dir)
        for k in budgets:
            best, tried = judge(args, run_dir, method, k)
            if best is None:
                print(f"{name:>6} NFE {k:3d}: no sampler fits (guidance {args.guidance:g} costs 2 per step)")
                continue
            all_rows += tried
            grid = common.save_samples_grid(best.pop("images"), out / "grids" / f"{name}_nfe{k}.png")
            rows.append(dict(method=name, nfe=k, **best, train_img_s=round(trained["img_s"], 1), train_steps=trained["steps"],
                             teacher_minutes=round(trained.get("teacher_minutes", 0.0), 1),
                             ae_minutes=round(ae_minutes, 1) if method.latent else 0.0, grid=f"grids/{grid}"))
            print(f"{name:>6} NFE {k:3d}: {best['sampler']} fd {best['fd_mean']:.2f} +- {best['fd_sd']:.2f}")
    from ..viz.plot import line_plot

    series = {m: [(r["nfe"], r["fd_mean"]) for r in rows if r["method"] == m] for m, _ in jobs}
    series["real digits (floor)"] = [(k, floor["fd_mean"]) for k in budgets]
    line_plot(series, "network evaluations per image (NFE)", f"fd_classifier at n = {args.n} (lower is better)",
              out / "quality_vs_nfe.png", logx=True, logy=True, title=f"Methods at {args.minutes:g} minutes of training")
    return write_report(out, f"Methods at equal wall-clock ({args.minutes:g} minutes)", body(args, rows, all_rows, floor),
                        dict(rows=rows, tried=all_rows, floor=floor, n=args.n, seeds=args.seeds,
                             minutes=args.minutes))


def autoencoder(args, out: Path) -> tuple[Path, float]:
    """The latent rows' autoencoder run and its training minutes: --autoencoder, or `mnist-ae` trained into
    out/runs/ae for --ae-minutes (or --steps) with the user's data.* and train.* overrides (model.*, diffusion.* and
    sample.* ones are the rows')."""
    given = args.autoencoder is not None
    if given and not (Path(args.autoencoder) / "config.json").exists():
        raise UserError(f"--autoencoder {args.autoencoder} is not a run directory (no config.json).")
    if not given and not args.ae_minutes > 0:
        raise UserError(f"--ae-minutes must be positive, got {args.ae_minutes:g}.")
    run_dir = Path(args.autoencoder) if given else out / "runs" / "ae"
    ae_args = argparse.Namespace(**{**vars(args), "preset": "mnist-ae", "minutes": args.ae_minutes,
                                    "reuse": args.reuse or given,
                                    "overrides": [o for o in args.overrides if o.startswith(("data.", "train."))]})
    return run_dir, common.train_variant(ae_args, common.variant_config(ae_args), run_dir)["minutes"]


def distilled(args, out: Path, method: Method, run_dir: Path, ae_dir: Path | None = None) -> dict:
    """A few-step row's run: the teacher (--teacher, or the teacher method's run, trained here if missing, on ae_dir
    if it is a latent method) distilled for args.minutes into run_dir. Returns steps, img_s and the teacher's own
    minutes (shown apart)."""
    from ..train.distill import distill
    from ..viz.curves import read_metrics

    teacher = args.teacher
    if teacher is None:
        teacher_method = METHODS.get(method.teacher)
        teacher = out / "runs" / method.teacher
        if not (teacher / "config.json").exists():
            args.preset = teacher_method.preset
            extra = [f"data.autoencoder={ae_dir}"] if teacher_method.latent else []
            common.train_variant(args, common.variant_config(args, extra), teacher)
    if (run_dir / "config.json").exists() and not args.reuse:
        raise UserError(f"{run_dir} already holds a run from an earlier experiment; pass --reuse to use it, "
                        "or choose another --out.")
    if not (run_dir / "config.json").exists():
        distill(teacher, method.distill, run_dir, minutes=0 if args.steps else args.minutes, steps=args.steps or 0,
                seed=args.seed)
    rows, teacher_rows = read_metrics(run_dir), read_metrics(teacher)
    steps, seconds = rows[-1]["step"], rows[-1]["elapsed_s"]
    from ..config import load_config
    batch = load_config(run_dir / "config.json").train.batch_size
    return dict(steps=steps, img_s=steps * batch / seconds, teacher_minutes=teacher_rows[-1]["elapsed_s"] / 60)


def drawer(args, run_dir: Path):
    """(draw(sampler, steps, spacing, seed) -> images, network evaluations per sampler NFE): unconditional runs
    sample as they are; class runs n / 10 per class at args.guidance, where classifier-free guidance (w not 0 or 1,
    on a network that does not read w) evaluates both branches: 2 per step."""
    from ..checkpoint import CONFIG, load_meta
    from ..config import load_config
    from ..runs import sample_conditional, sample_run

    device = resolve_device(args.device)
    k = int(load_meta(run_dir).get("num_classes", 0))
    if not k:
        return (lambda sampler, steps, spacing, seed: sample_run(run_dir, args.n, sampler=sampler, steps=steps,
                                                                spacing=spacing, seed=seed, device=device)), 1
    labels = torch.arange(args.n) % k
    reads_w = bool(load_config(run_dir / CONFIG).model.guidance_embedding)  # an LCM student (models/condition.py)
    cost = 1 if args.guidance in (0.0, 1.0) or reads_w else 2
    return (lambda sampler, steps, spacing, seed: sample_conditional(
        run_dir, args.n, sampler=sampler, steps=steps, spacing=spacing, seed=seed, device=device, labels=labels,
        guidance=args.guidance)[0]), cost


def judge(args, run_dir: Path, method: Method, k: int) -> tuple[dict, list[dict]]:
    """Every candidate sampler at NFE k on seed 0, then the best of them on all seeds. Returns (best row with
    its seed-0 images, rows of every candidate on seed 0); (None, []) if no candidate fits in k."""
    draw, cost = drawer(args, run_dir)
    tried, images, grids = [], {}, {}
    for label, sampler, spacing in method.candidates():
        steps = steps_for(sampler, k // cost)
        if steps is None:
            continue
        start = time.perf_counter()
        x = draw(sampler, steps, spacing, 0)
        ms = (time.perf_counter() - start) / args.n * 1000
        images[label], grids[label] = x, (sampler, spacing)
        tried.append(dict(sampler=label, steps=steps, nfe=cost * nfe_of(sampler, steps), ms_per_image=round(ms, 2),
                          **common.project_metric(to_unit_range(x))))
    if not tried:  # classifier-free guidance at NFE 1: no step fits
        return None, []
    best = min(tried, key=lambda r: r["fd_classifier"])
    fds, precision, recall = [best["fd_classifier"]], [best["precision"]], [best["recall"]]
    sampler, spacing = grids[best["sampler"]]
    for seed in range(1, args.seeds):
        x = draw(sampler, best["steps"], spacing, seed)
        m = common.project_metric(to_unit_range(x))
        fds.append(m["fd_classifier"]), precision.append(m["precision"]), recall.append(m["recall"])
    row = dict(sampler=best["sampler"], steps=best["steps"], fd_mean=statistics.mean(fds),
               fd_sd=statistics.stdev(fds) if len(fds) > 1 else 0.0, fd_seeds=[round(f, 2) for f in fds],
               precision=statistics.mean(precision), recall=statistics.mean(recall), ms_per_image=best["ms_per_image"],
               images=images[best["sampler"]])
    return row, [dict(nfe_budget=k, **r) for r in tried]


def floor_rows(args) -> dict:
    """fd_classifier of `seeds` random sets of n real training digits against the test split: the best a model
    can read at this n."""
    from ..config import get_preset

    fds = [common.project_metric(to_unit_range(common.real_images(get_preset("mnist"), args.n, seed=s, split="train")))
           ["fd_classifier"] for s in range(args.seeds)]
    return dict(fd_mean=statistics.mean(fds), fd_min=min(fds), fd_max=max(fds), fd_seeds=[round(f, 2) for f in fds])


def body(args, rows: list[dict], tried: list[dict], floor: dict) -> str:
    shown = [{**{k: v for k, v in r.items() if k not in ("grid", "fd_seeds")}, "fd_seeds": " / ".join(map(str, r["fd_seeds"])),
              "times_floor": round(r["fd_mean"] / floor["fd_mean"], 2), "grid": f"[png]({r['grid']})"} for r in rows]
    return f"""
Each method's preset trained for {args.minutes:g} minutes of wall-clock on this machine ({describe(machine())}),
alone. At each NFE every candidate sampler draws n = {args.n} images with seed 0; the best by fd_classifier is then
drawn with seeds 0..{args.seeds - 1} and its mean and standard deviation are reported (choosing on seed 0 favours the
chosen sampler slightly on that seed). The floor: {args.seeds} random sets of {args.n} real **training** digits (held
out from the test split the metric compares against): fd {floor['fd_mean']:.2f} ({floor['fd_min']:.2f}-{floor['fd_max']:.2f}).
ms_per_image: sampling the {args.n} images in batches of 256, per image (a latent row's decoding included).
teacher_minutes / ae_minutes: the training of a few-step row's teacher / a latent row's autoencoder, not counted in
the row's minutes.

{table(shown, list(shown[0]))}

![quality vs NFE](quality_vs_nfe.png)

## Every candidate, seed 0

{table(tried, list(tried[0]))}
"""
