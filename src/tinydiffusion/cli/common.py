"""What several commands share: the flags of every command that samples from a run (sample, eval --run, ...)."""
from __future__ import annotations


def add_sampling_args(p, n: int, n_help: str) -> None:
    """The flags every command that samples from a run shares (sample, eval --run)."""
    p.add_argument("--n", type=int, default=n, help=n_help)
    p.add_argument("--sampler", help="sampler name (default: the run's; see `tinydiffusion list samplers`)")
    p.add_argument("--steps", type=int, help="number of denoising steps (NFE budget; default: the run's)")
    p.add_argument("--spacing", help="which times the sampler visits: uniform, trailing, quadratic, karras, "
                                     "logsnr, shifted (`tinydiffusion list spacings`; default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
