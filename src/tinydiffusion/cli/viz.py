"""`tinydiffusion viz ...`: the lessons' pictures, each one command writing a PNG (trajectory also a GIF)."""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import UserError


def _times(text: str | None) -> list[float] | None:
    """'100,300,600' -> [100.0, 300.0, 600.0] (steps of a DDPM path), '0.1,0.5' -> [0.1, 0.5] (continuous time)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--t expects comma-separated numbers like 100,300,600 (or 0.1,0.5 on a flow run); "
                        f"got '{text}'.") from None


def add_viz(sub):
    p = sub.add_parser("viz", help="draw the lessons' pictures (schedule, forward, diagnostic, trajectory, loss)")
    viz = p.add_subparsers(dest="figure", required=True)

    q = viz.add_parser("schedule", help="beta_t, alpha_bar_t (50%%-signal line) and log-SNR of the schedules")
    q.add_argument("--T", type=int, default=1000, help="number of diffusion steps (default 1000)")
    q.add_argument("--schedules", default="linear,cosine", help="comma-separated schedule names")
    q.set_defaults(func=run_schedule, default_out="schedule.png")

    q = viz.add_parser("forward", help="one real digit noised to several t with one fixed noise")
    q.add_argument("--T", type=int, default=1000)
    q.add_argument("--schedules", default="linear,cosine",
                   help="one row per schedule or path (linear, cosine, vp-cosine, flow; `tinydiffusion list paths`)")
    q.add_argument("--t", help="comma-separated steps (default the lesson's 0,100,250,500,750,999, scaled to T)")
    q.add_argument("--index", type=int, default=0, help="which test digit")
    q.add_argument("--dataset", default="mnist")
    q.set_defaults(func=run_forward, default_out="forward.png")

    q = viz.add_parser("diagnostic", help="noisy input, the model's one-step x0_hat, and the original")
    _run_args(q)
    q.add_argument("--t", help="comma-separated steps (default the lesson's 100,300,600,900, scaled to the run's T)")
    q.add_argument("--n", type=int, default=1, help="digits per cell (default 1)")
    q.add_argument("--index", type=int, default=0, help="first test digit")
    q.set_defaults(func=run_diagnostic, default_out="diagnostic.png")

    q = viz.add_parser("trajectory", help="x_t and x0_hat during sampling, as a strip and an animated GIF")
    _run_args(q)
    q.add_argument("--sampler", help="sampler name (default: the run's)")
    q.add_argument("--steps", type=int, help="number of sampler steps (default: the run's)")
    q.add_argument("--n", type=int, default=4, help="samples drawn (default 4)")
    q.add_argument("--gif", type=Path, help="GIF path (default: --out with .gif)")
    q.add_argument("--gif-frames", type=int, default=60, help="at most this many frames, evenly spaced (default 60)")
    q.set_defaults(func=run_trajectory, default_out="trajectory.png")

    q = viz.add_parser("loss", help="the training-loss curve and the loss per t-bin on held-out digits")
    _run_args(q)
    q.add_argument("--by-t-out", type=Path, help="PNG for the loss per t-bin (default: OUT_by_t.png)")
    q.add_argument("--no-by-t", action="store_true", help="only the training curve (no model evaluation)")
    q.add_argument("--bins", type=int, default=20, help="number of t-bins (default 20)")
    q.add_argument("--n-test", type=int, default=250, help="held-out test digits per bin (default 250)")
    q.set_defaults(func=run_loss, default_out="loss.png")

    q = viz.add_parser("control", help="a ControlNet run's fidelity to held-out maps over training (F1, labels)")
    q.add_argument("--run", type=Path, action="append", required=True,
                   help="a ControlNet run directory (repeat to compare runs on one plot)")
    q.set_defaults(func=run_control, default_out="control.png")

    for q in viz.choices.values():
        q.add_argument("--out", type=Path, help="PNG to write (default: NAME.png in the current folder)")
        q.add_argument("--seed", type=int, default=0)


def _run_args(q):
    q.add_argument("--run", type=Path, required=True, help="a run directory written by `tinydiffusion train`")
    q.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    q.add_argument("--device", default="auto")


def _out(args) -> Path:
    out = args.out or Path(args.default_out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png.")
    return out


def _load(args, pixels_only: str = ""):
    """The run of --run; pixels_only names a figure that noises real images, which a latent run cannot show."""
    from ..device import resolve_device
    from ..runs import load_run

    device = resolve_device(args.device)
    cfg, net, path, meta = load_run(args.run, use_ema=not args.raw, device=device)
    if pixels_only and meta.get("autoencoder"):
        raise UserError(f"viz {pixels_only} noises real images in pixel space, and {args.run} is a latent run; "
                        "`viz trajectory` shows a latent run's decoded steps.")
    return cfg, net, path, meta, device


def _schedules(names: str, T: int) -> dict:
    from ..schedules import make_schedule

    return {n.strip(): make_schedule(n.strip(), T) for n in names.split(",") if n.strip()}


def _paths(names: str, T: int) -> dict:
    """Schedule names (linear, cosine: their DDPM paths) or path names (flow, vp-cosine, ...) -> {name: Path}."""
    from ..paths import PATHS, make_path
    from ..schedules import SCHEDULES

    out = {}
    for n in (n.strip() for n in names.split(",") if n.strip()):
        out[n] = make_path(f"ddpm-{n}" if n in SCHEDULES and n not in PATHS else n, T)
    return out


def _test_digits(dataset: str, path: str, index: int, n: int, data_cfg=None):
    """n held-out test images from index on, (n, C, H, W) in [-1, 1], fitted like the run's data (data_cfg)."""
    from ..data import load_dataset, to_model_range

    fit = {k: getattr(data_cfg, k) for k in ("image_size", "channels") if getattr(data_cfg, k, 0)}
    data = load_dataset(dataset, "test", path, **fit)
    if not 0 <= index <= len(data) - n:
        raise UserError(f"--index must be between 0 and {len(data) - n} for {len(data)} test images.")
    return to_model_range(data.images[index:index + n])


def _done(path: Path, start: float):
    print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")


# ------------------------------------------------------------------------------------------- commands
def run_schedule(args):
    from ..viz.curves import schedule_figure
    from ..viz.grids import save_png

    start, out = time.perf_counter(), _out(args)
    save_png(schedule_figure(_schedules(args.schedules, args.T)), out)
    _done(out, start)


def run_forward(args):
    import torch

    from ..viz.figures import LESSON_FORWARD_T, check_times, forward_figure, lesson_times
    from ..viz.grids import save_png

    start, out = time.perf_counter(), _out(args)
    paths = _paths(args.schedules, args.T)
    times = check_times(_times(args.t) or lesson_times(LESSON_FORWARD_T, args.T), args.T)
    x0 = _test_digits(args.dataset, "", args.index, 1)  # (1, C, H, W)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed))
    what = "MNIST digit" if args.dataset == "mnist" else f"{args.dataset} test image"
    save_png(forward_figure(paths, x0, times, eps, args.T, what=what), out)
    _done(out, start)


def run_diagnostic(args):
    import torch

    from ..viz.figures import LESSON_DIAGNOSTIC_T, check_times, diagnostic_figure, lesson_times
    from ..viz.grids import save_png

    start, out = time.perf_counter(), _out(args)
    cfg, net, path, meta, _ = _load(args, "diagnostic")
    times = check_times(_times(args.t) or lesson_times(LESSON_DIAGNOSTIC_T, path.T), path.T)
    if args.n < 1:
        raise UserError("--n must be at least 1.")
    x0 = _test_digits(cfg.data.name, cfg.data.path, args.index, args.n, cfg.data)
    title = f"Denoising diagnostic: {args.run.name} after {meta.get('step', '?')} steps ({cfg.model.name})"
    fig, _ = diagnostic_figure(net, path, cfg.diffusion.prediction, x0, times,
                               torch.Generator().manual_seed(args.seed), title)
    save_png(fig, out)
    _done(out, start)


def run_trajectory(args):
    import math

    import torch

    from ..conditioning import Cond
    from ..latent_space import run_latent_space
    from ..viz.figures import (LESSON_TRAJECTORY_T, lesson_times, record_trajectory, sample_config_for,
                               trajectory_gif, trajectory_strip)
    from ..viz.grids import save_png

    start, out = time.perf_counter(), _out(args)
    gif = args.gif or out.with_suffix(".gif")
    if gif.suffix.lower() != ".gif":
        raise UserError(f"--gif {gif} must end in .gif.")
    if args.n < 1:
        raise UserError("--n must be at least 1.")
    cfg, net, path, meta, device = _load(args)
    sample_cfg = sample_config_for(cfg.sample, args.sampler, args.steps)
    k = int(meta.get("num_classes", 0))
    cond = Cond(labels=torch.arange(args.n) % k) if k else None  # conditional runs: one digit class per sample
    space = run_latent_space(meta, device)  # a latent run: every frame decoded
    frames, _ = record_trajectory(net, path, sample_cfg, cfg.diffusion.prediction, args.n, tuple(meta["shape"]),
                                  generator=torch.Generator().manual_seed(args.seed), device=device, cond=cond,
                                  decode=space.decode if space else None)
    nrow = math.ceil(math.sqrt(args.n))
    title = f"Sampling trajectory: {args.run.name}, {sample_cfg.sampler} sampler, {len(frames)} steps"
    save_png(trajectory_strip(frames, lesson_times(LESSON_TRAJECTORY_T, path.T), title, nrow,
                              sample_cfg.sampler), out)
    count = trajectory_gif(frames, gif, nrow, max_frames=args.gif_frames)
    _done(out, start)
    print(f"wrote {gif} ({count} frames)")


def run_loss(args):
    import torch

    from ..config import load_config
    from ..viz.curves import loss_by_t, loss_by_t_figure, loss_curve_figure, read_metrics
    from ..viz.grids import save_png

    start, out = time.perf_counter(), _out(args)
    rows = read_metrics(args.run)
    cfg = load_config(args.run / "config.json")
    save_png(loss_curve_figure(rows, cfg, args.run.name), out)
    _done(out, start)
    if args.no_by_t:
        return
    by_t_out = args.by_t_out or out.with_name(out.stem + "_by_t.png")
    cfg, net, path, _, _ = _load(args, "loss")
    if args.n_test < 1:
        raise UserError("--n-test must be at least 1.")
    g = torch.Generator().manual_seed(args.seed)
    x0 = _test_digits(cfg.data.name, cfg.data.path, 0, args.n_test, cfg.data)
    bins = loss_by_t(net, path, cfg.diffusion.prediction, x0, args.bins, g)
    save_png(loss_by_t_figure(bins, cfg.diffusion.prediction, args.n_test, args.run.name), by_t_out)
    _done(by_t_out, start)


def run_control(args):
    from ..viz.curves import fidelity_curve_figure, read_fidelity
    from ..viz.grids import save_png

    start, out = time.perf_counter(), _out(args)
    save_png(fidelity_curve_figure({r.name: read_fidelity(r) for r in args.run}), out)
    _done(out, start)
