"""Latent vs pixel on this machine, alone: fd_classifier (n=1000, seeds 0-2) of the latent run, sampling time of 64
images at the runs' own sampler (10 NFE) for both, and the picture original | reconstruction | latent | pixel."""
import json, statistics, sys, time
import torch
from tinydiffusion.runs import sample_run
from tinydiffusion.data import load_dataset, to_model_range, to_unit_range
from tinydiffusion.eval.evaluate import evaluate_samples
from tinydiffusion.latent_space import load_latent_space
from tinydiffusion.viz.grids import save_grid

latent, pixel, ae = sys.argv[1:4]
out = {}
for name, run in (("latent", latent), ("pixel", pixel)):
    sample_run(run, 64, seed=9)  # warm-up (loads, oneDNN kernels)
    times = []
    for r in range(7):
        s = time.perf_counter(); sample_run(run, 64, seed=r); times.append(time.perf_counter() - s)
    out[name + "_s_per_64"] = statistics.median(times)
    print(name, "s per 64 (median of 7, loading included):", round(out[name + "_s_per_64"], 3), flush=True)
fds = []
for seed in range(3):
    x = sample_run(latent, 1000, seed=seed)
    fds.append(evaluate_samples(to_unit_range(x), dataset="mnist", metrics=("fd_classifier",))["fd_classifier"])
    print("latent fd seed", seed, fds[-1], flush=True)
out["latent_fd"] = fds
out["latent_fd_mean"], out["latent_fd_sd"] = statistics.mean(fds), statistics.stdev(fds)
space = load_latent_space(ae)
x = to_model_range(load_dataset("mnist", "test").images[:16])
rows = [x, space.decode(space.encode(x)).clamp(-1, 1), sample_run(latent, 16, seed=0), sample_run(pixel, 16, seed=0)]
save_grid(to_unit_range(torch.cat(rows)), "latent_vs_pixel.png", nrow=16, scale=3)
json.dump(out, open("results.json", "w"), indent=2)
print(out)
