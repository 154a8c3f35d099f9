"""Where latent sampling's time goes: one network call of a batch of B images (or latents) for the pixel preset's
net, the latent preset's net and variants of it, and one decoder call, each the median of `--repeats` calls after
a warm-up, under bf16 autocast where the CPU has bf16 units (as sampling runs). Weights are random: the cost of a
call does not depend on their values, so no trained run is needed.

    python -m benchmarks.latent_call_cost [--batch 64] [--repeats 30]

Best case for latent sampling at K NFE against pixels: (K * latent call + decode) / (K * pixel call).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tinydiffusion.config import get_preset
from tinydiffusion.device import use_bf16
from tinydiffusion.models import build_model

# (label, model name, in channels, side, overrides): the pixel preset's net, the latent preset's, variants of it
NETS = [
    ("pixel `mnist` net (unet-patch, 28 px)", "unet-patch", 1, 28, {}),
    ("latent `mnist-latent` net (7 x 7 x 4)", "unet-small", 4, 7, dict(channels=32, channel_mult=(1, 2), scale_shift=True)),
    ("  the same without attention at 4 px", "unet-small", 4, 7,
     dict(channels=32, channel_mult=(1, 2), scale_shift=True, attention_resolutions=())),
    ("  the same at 24 channels", "unet-small", 4, 7, dict(channels=24, channel_mult=(1, 2), scale_shift=True)),
    ("  dit-tiny on 7 x 7 tokens (patch 1)", "dit-tiny", 4, 7, dict(patch_size=1)),
]


def interleaved_median_ms(fns: list, repeats: int) -> list[float]:
    """Median ms per call of each fn, timed round-robin (one call of each per round) so that a shared machine's
    drifting load moves every row alike and the ratios between rows hold."""
    for fn in fns:
        for _ in range(3):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) * 1000 for ts in times]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--nfe", type=int, default=10)
    args = p.parse_args(argv)
    bf16 = use_bf16(get_preset("mnist-latent").train.precision, "cpu")
    torch.manual_seed(0)
    t = torch.rand(args.batch)
    calls, labels, params = [], [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for label, name, c, side, kw in NETS:
            net = build_model(name, c, side, **kw).eval()
            x = torch.randn(args.batch, c, side, side)  # (B, C, H, W)
            calls.append(lambda net=net, x=x: net(x, t))
            labels.append(label)
            params.append(sum(q.numel() for q in net.parameters()) / 1e6)
        ae = build_model("ae-f4c4", 1, 28).eval()
        z = torch.randn(args.batch, 4, 7, 7)  # (B, 4, 7, 7) latents
        calls.append(lambda: ae.decode(z))
        labels.append("ae-f4c4 decoder")
        params.append(sum(q.numel() for q in ae.decoder.parameters()) / 1e6)
        ms = interleaved_median_ms(calls, args.repeats)
    print(f"batch {args.batch}, bf16 autocast {bf16}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved rounds")
    for label, n, m in zip(labels, params, ms):
        print(f"{label:42s} {n:5.2f}M  {m:6.1f} ms per call")
    pixel, decode = ms[0], ms[-1]
    for label, m in zip(labels[1:-1], ms[1:-1]):
        print(f"best-case speed-up at {args.nfe} NFE, {label.strip()}: {args.nfe * pixel / (args.nfe * m + decode):.2f}x")

if __name__ == "__main__":
    main()
