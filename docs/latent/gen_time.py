import statistics, sys, time, torch
from tinydiffusion.runs import load_run
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.latent_space import run_latent_space
from tinydiffusion.device import use_bf16
for run in sys.argv[1:]:
    cfg, net, path, meta = load_run(run)
    space = run_latent_space(meta)
    d = denoiser_for(net, path, cfg.diffusion.prediction, cfg.sample)
    bf16 = use_bf16(cfg.train.precision, torch.device("cpu"))
    def once(seed):
        x = generate(d, cfg.sample, 64, tuple(meta["shape"]), generator=torch.Generator().manual_seed(seed), bf16=bf16)
        return space.decode(x) if space else x
    once(99)
    ts, dec = [], []
    for r in range(9):
        s = time.perf_counter(); once(r); ts.append(time.perf_counter() - s)
    if space:
        z = torch.randn(64, *meta["shape"])
        for r in range(9):
            s = time.perf_counter(); space.decode(z); dec.append(time.perf_counter() - s)
    print(run, cfg.sample.sampler, cfg.sample.steps, "s per 64 median", round(statistics.median(ts), 4), "min", round(min(ts), 4),
          "decode alone", round(statistics.median(dec), 4) if dec else "-")
