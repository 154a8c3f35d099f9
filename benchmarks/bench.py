"""`tinydiffusion bench`: speed and quality of the presets on this machine, side by side with peers.

(a) Throughput: training img/s (forward + backward at the preset's batch size and precision) and sampling
    img*NFE/s (one denoiser call on a batch of 64) for every model preset and the diffusers peer.
(b) Quality vs wall-clock: one run per recipe for the longest budget, with the EMA weights (raw weights for
    recipes without EMA) saved at each mark; each snapshot is sampled and scored with `fd_classifier`
    against the MNIST test split. Reference: real training digits, same sample count.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from tinydiffusion.checkpoint import load_meta, load_weights, model_from_config
from tinydiffusion.config import PRESETS, apply_overrides, get_preset
from tinydiffusion.data import load_dataset, to_model_range, to_unit_range
from tinydiffusion.device import autocast, use_bf16
from tinydiffusion.errors import UserError
from tinydiffusion.experiments.report import describe, machine, table
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.io import write_text
from tinydiffusion.models import count_parameters
from tinydiffusion.paths import make_path
from tinydiffusion.train import train
from tinydiffusion.train.optim import make_optimizer
from tinydiffusion.viz.plot import line_plot

from . import peers

MNIST_PRESETS = ["mnist", "mnist-ddpm", "mnist-seed", "mnist-class"]


def _time(fn, repeats: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def throughput(name: str, repeats: int) -> dict:
    """Training img/s and sampling img*NFE/s of a preset's model (or of the diffusers peer)."""
    if name == "diffusers":
        net, fwd = peers.forward_fn()
        return dict(recipe=name, **measure(net, fwd, batch=128, bf16=False, repeats=repeats, integer_t=True))
    cfg = get_preset(name)
    net = model_from_config(cfg, (1, 28, 28), 10 if cfg.data.conditional else 0)
    return dict(recipe=name, **measure(net, net, cfg.train.batch_size, use_bf16(cfg.train.precision, "cpu"), repeats,
                                       make_opt=timing_optimizer(cfg.train)))


def timing_optimizer(tc):
    """params -> the recipe's optimiser (its kind and fused kernel) at lr 1e-6. The timed steps fit random targets:
    at the preset's lr 3e-3 the weights run away and the step became erratic, 3-100x slower (measured on the Xeon)."""
    still = replace(tc, lr=1e-6)
    return lambda params: make_optimizer(still, params, torch.device("cpu"))


def measure(net, fwd, batch: int, bf16: bool, repeats: int, channels_last: bool = False,
            integer_t: bool = False, make_opt=lambda params: torch.optim.AdamW(params, lr=1e-6)) -> dict:
    """Time a training step (MSE on random targets; make_opt(params): the recipe's optimiser, default AdamW) at
    `batch`, and one network call on 64 images. fwd(x, t): t is continuous time in [0, 1], or the integer step for
    integer_t (the diffusers peer)."""
    g = torch.Generator().manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    x = to_model_range(load_dataset("mnist", "test").images[:batch]).contiguous(memory_format=layout)
    x64 = torch.randn(64, 1, 28, 28, generator=g).contiguous(memory_format=layout)
    opt = make_opt(net.parameters())

    def times(n):
        t = torch.randint(0, 1000, (n,), generator=g)
        return t if integer_t else (t.float() + 1) / 1000  # continuous time of the integer step

    def train_step():
        with autocast("cpu", bf16):
            loss = (fwd(x, times(batch)).float() - torch.randn(x.shape, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def nfe():
        with autocast("cpu", bf16):
            fwd(x64, times(64))

    net.train()
    s_train = _time(train_step, repeats)
    net.eval()
    s_nfe = _time(nfe, repeats * 2)
    return dict(params_M=round(count_parameters(net) / 1e6, 2), batch=batch, bf16=bf16,
                train_img_s=round(batch / s_train, 1), sample_img_nfe_s=round(64 / s_nfe, 1))


def _score(images01: torch.Tensor) -> float:
    from tinydiffusion.eval.evaluate import evaluate_samples
    return evaluate_samples(images01, dataset="mnist", metrics=("fd_classifier",))["fd_classifier"]


def _evaluate_ours(run: Path, mark: float, n: int, sampler: str, steps: int) -> dict:
    """Score the snapshot of `run` at `mark` minutes with (sampler, steps)."""
    from tinydiffusion.checkpoint import load_meta
    from tinydiffusion.config import load_config

    cfg, meta = load_config(run / "config.json"), load_meta(run)
    net = model_from_config(cfg, tuple(meta["shape"]), 0)
    load_weights(net, run / "snapshots" / f"{mark:g}min.safetensors")
    net.eval()
    path = make_path(cfg.diffusion.path, cfg.diffusion.T)
    start = time.perf_counter()
    sample_cfg = replace(cfg.sample, sampler=sampler, steps=steps)
    x = generate(denoiser_for(net, path, cfg.diffusion.prediction, sample_cfg), sample_cfg, n, (1, 28, 28),
                 generator=torch.Generator().manual_seed(0), bf16=use_bf16(cfg.train.precision, "cpu"))
    return dict(images=to_unit_range(x), seconds=time.perf_counter() - start)


def _samplers(recipe: str, default: tuple[str, int], quick: bool) -> list[tuple[str, int]]:
    """The preset's own sampler; the 1000-step recipes are also scored with DDIM, 50 steps."""
    if recipe in ("mnist", "mnist-ddpm"):
        return [default]
    return [("ddim", 5 if quick else 50), ("ddpm", 10 if quick else 1000) if recipe == "diffusers" else default]


def _plan(recipe: str, samplers, marks: list[float], n: int, n_slow: int) -> list[tuple]:
    """(sampler, steps, mark, samples) to score. DDPM's 1000 steps, and every sampler of the 18.5M diffusers
    peer (71 img*NFE/s here), cost too much for n samples at every mark: they get n_slow samples, DDPM at the
    last mark only. Our preset is also scored at n_slow at the last mark, for an equal-n comparison."""
    plan = []
    for sampler, steps in samplers:
        slow = sampler == "ddpm" or recipe == "diffusers"
        plan += [(sampler, steps, m, n_slow if slow else n) for m in (marks[-1:] if sampler == "ddpm" else marks)]
    if recipe == "mnist" and n_slow != n:
        plan.append((*samplers[0], marks[-1], n_slow))
    return plan


def _trained(run: Path, recipe: str, marks: list[float]) -> int | None:
    """Steps of a finished earlier training of this recipe in `run` (all mark snapshots on disk), else None."""
    snaps = [run / (f"{m:g}min.pt" if recipe == "diffusers" else f"snapshots/{m:g}min.safetensors") for m in marks]
    if not all(s.exists() for s in snaps):
        return None
    if recipe == "diffusers":
        return json.loads((run / "train.json").read_text())["steps"] if (run / "train.json").exists() else None
    try:
        return load_meta(run)["step"]  # the newest complete checkpoint
    except UserError:
        return None


def _config(recipe: str, marks: list[float], quick: bool):
    """The preset, trained for the longest mark with a snapshot at every mark."""
    cfg = apply_overrides(get_preset(recipe), [f"train.minutes={max(marks)}", "train.steps=0", "train.epochs=0",
                                               f"train.snapshot_minutes={','.join(map(str, marks))}"])
    return apply_overrides(cfg, ["train.checkpoint_every=100000", "sample.steps=10"]) if quick else cfg


def _train(run: Path, recipe: str, marks: list[float], quick: bool) -> int:
    if recipe == "diffusers":
        return peers.train_peer(run, max(marks), marks)["steps"]
    return train(_config(recipe, marks, quick), run, device="cpu", quiet=True)["steps"]


def quality_vs_time(out: Path, recipes: list[str], marks: list[float], n: int, n_slow: int, quick: bool,
                    resume: bool = False) -> list[dict]:
    """Train each recipe once for max(marks) minutes, snapshotting at each mark, and score the snapshots
    (see _plan for which, and on how many samples; the table gives the real-data floor at both sizes).
    Every scored row is kept in out/quality.jsonl; with `resume`, rows already scored are reused, a recipe
    whose training finished earlier is not trained again, and one whose rows are all scored needs no weights
    (an interrupted bench picks up where it stopped; to bench a changed recipe again, delete its rows and its run folder)."""
    log = out / "quality.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if resume and log.exists() else []
    rows = []
    for recipe in recipes:
        run = out / "runs" / recipe
        sample = None if recipe == "diffusers" else _config(recipe, marks, quick).sample
        default = sample and (sample.sampler, sample.steps)
        keys = [dict(recipe=recipe, minutes=mark, sampler=f"{sampler}-{steps}", n=size)
                for sampler, steps, mark, size in _plan(recipe, _samplers(recipe, default, quick), marks, n, n_slow)]
        cached = [next((r for r in done if all(r[k] == v for k, v in key.items())), None) for key in keys]
        if all(cached):  # every row of this recipe was scored before: no need for its weights
            rows += cached
            continue
        steps_done = _trained(run, recipe, marks) if resume else None
        if steps_done is None:
            steps_done = _train(run, recipe, marks, quick)
            done = [r for r in done if r["recipe"] != recipe]  # rows of an earlier training are stale
            cached = [None] * len(keys)
        for key, row in zip(keys, cached):
            if row is not None:
                rows.append(row)
                continue
            sampler, steps = key["sampler"].rsplit("-", 1)
            mark, size, steps = key["minutes"], key["n"], int(steps)
            if recipe == "diffusers":
                start = time.perf_counter()
                images = peers.sample_peer(run / f"{mark:g}min.pt", size, sampler, steps)
                result = dict(images=images, seconds=time.perf_counter() - start)
            else:
                result = _evaluate_ours(run, mark, size, sampler, steps)
            rows.append(dict(key, fd_classifier=round(_score(result["images"]), 2),
                             s_per_64=round(result["seconds"] / size * 64, 2), train_steps=steps_done))
            done.append(rows[-1])
            write_text(log, "".join(json.dumps(r) + "\n" for r in done))
            print(rows[-1], flush=True)
    return rows


def metric_scale(n: int, n_slow: int) -> dict[str, float]:
    """fd_classifier of reference image sets, so the table's numbers have a scale: real training digits (the
    floor a perfect model reaches at that sample count), one class only (no diversity), uniform noise."""
    real = load_dataset("mnist", "train")
    ones = real.images[real.labels == 1]
    noise = torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    scale = {f"real training digits (n={size})": _score(real.images[:size].float() / 255) for size in sorted({n, n_slow})}
    scale[f"one class: training ones (n={n})"] = _score(ones[:n].float() / 255)
    scale[f"uniform noise (n={n})"] = _score(noise)
    return {k: round(v, 2) for k, v in scale.items()}


def run_bench(out: Path, quick: bool = False, recipes: list[str] | None = None, marks: list[float] | None = None,
              n: int = 500, n_slow: int = 200, resume: bool = False) -> Path:
    out = Path(out)
    recipes = recipes or ["mnist", "mnist-ddpm", "mnist-seed", "diffusers"]
    marks = marks or ([0.05, 0.1] if quick else [2, 5, 10])
    n, n_slow = (32, 16) if quick else (n, min(n, n_slow))
    info = machine()
    print(f"bench on {describe(info)}")
    speed = [throughput(name, 1 if quick else 5) for name in
             ([r for r in recipes if r in PRESETS] + (["diffusers"] if "diffusers" in recipes else []))]
    print(table(speed))
    scale = metric_scale(n, n_slow)
    floor = {size: scale[f"real training digits (n={size})"] for size in (n, n_slow)}
    quality = quality_vs_time(out, recipes, marks, n, n_slow, quick, resume)
    print(table(quality))
    series = {}
    for r in quality:
        label = f"{r['recipe']} {r['sampler']}" + (f" (n={r['n']})" if r["n"] != n else "")
        series.setdefault(label, []).append((r["minutes"], r["fd_classifier"]))
    series[f"real digits (floor, n={n})"] = [(m, floor[n]) for m in marks]
    line_plot(series, "minutes of training (2-core CPU)" if not quick else "minutes", "fd_classifier (lower is better)",
              out / "quality_vs_minutes.png", title=f"MNIST quality vs training wall-clock, n={n} samples", logy=True)
    md = (f"# tinydiffusion bench\n\nMachine: {describe(info)}\n\n"
          f"## Throughput\n\n{table(speed)}\n\n## Quality vs wall-clock (fd_classifier vs the MNIST test split; "
          f"real training digits score {floor[n]} at n={n} and {floor[n_slow]} at n={n_slow})\n\n"
          f"Each row scores the weights snapshotted at its mark; train_steps counts the steps of the whole "
          f"{max(marks):g}-minute run.\n\n{table(quality)}\n\n![quality](quality_vs_minutes.png)\n\n"
          f"## The metric's scale\n\n"
          f"{table([dict(images=k, fd_classifier=v) for k, v in scale.items()])}\n")
    write_text(out / "bench.md", md)
    write_text(out / "bench.json", json.dumps(dict(machine=info, throughput=speed, quality=quality, floor=floor, scale=scale,
                                                   n=n, marks=marks), indent=2))
    return out
