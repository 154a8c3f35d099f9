"""Shared fixtures: tiny, fast training configurations and one tiny trained run per session."""
import zlib

import numpy as np
import pytest
import torch

from tinydiffusion.conditioning import Cond, text_encoder
from tinydiffusion.config import apply_overrides, get_preset
from tinydiffusion.data import load_dataset
from tinydiffusion.train import train

# The networks in tests are tiny: one thread is faster than two and immune to oversubscription when the
# machine is busy (two threads on a loaded 2-core machine ran tests 20-50x slower).
torch.set_num_threads(1)

# A model and chain small enough that a few steps take about a second on 2 CPU cores.
TINY = ["model.name=unet-small", "model.channels=8", "diffusion.T=20", "train.batch_size=8", "train.precision=fp32",
        "train.log_every=2", "train.checkpoint_every=1000", "sample.steps=5", "sample.clip_x0=true"]


def tiny_config(*extra: str, steps: int = 4, preset: str = "mnist-ddpm"):
    cfg = apply_overrides(get_preset(preset), TINY + list(extra) + [f"train.steps={steps}", "train.minutes=0"])
    return cfg


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run directory trained for 4 steps (checkpoint, EMA, metrics, a sample grid)."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    train(tiny_config(), out, device="cpu", quiet=True)
    return out


@pytest.fixture(scope="module")
def control_run(tmp_path_factory, tiny_run):
    """A ControlNet (edge maps) trained for 2 steps on a copy of the tiny base run."""
    import shutil

    root = tmp_path_factory.mktemp("control")
    base = root / "base"
    shutil.copytree(tiny_run, base)
    cfg = tiny_config(f"control.base={base}", "control.fidelity_every=2", "control.fidelity_n=4", steps=2,
                      preset="mnist-controlnet")
    train(cfg, root / "ctrl", device="cpu", quiet=True)
    return root / "ctrl"


def wake(net: torch.nn.Module) -> torch.nn.Module:
    """Randomise the zero-initialised layers: at init every block is the identity and ignores conditions."""
    torch.manual_seed(0)
    for p in net.parameters():
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.1)
    return net


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    from tinydiffusion.train import train

    out = tmp_path_factory.mktemp("class_run") / "run"
    train(tiny_config(steps=2, preset="mnist-ddpm-class"), out, device="cpu", quiet=True)
    return out


class StubEncoder:
    """A fast stand-in for MiniLM: each word is a fixed random 384-d vector (tests of plumbing, not language)."""

    calls, vectors = 0, {}

    def encode(self, prompts):
        StubEncoder.calls += 1
        words = [p.split() for p in prompts]
        L = max([len(w) for w in words] + [0])
        tokens, mask = torch.zeros(len(prompts), L, 384), torch.zeros(len(prompts), L, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                if w not in self.vectors:
                    self.vectors[w] = torch.randn(384, generator=torch.Generator().manual_seed(zlib.crc32(w.encode())))
                tokens[i, j] = self.vectors[w]
                mask[i, j] = True
        return Cond(tokens=tokens, mask=mask)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from tinydiffusion.train import train

    mp = pytest.MonkeyPatch()
    mp.setattr(text_encoder, "get_encoder", lambda device="cpu": StubEncoder())
    out = tmp_path_factory.mktemp("text_run") / "run"
    train(tiny_config(steps=2, preset="mnist-ddpm-text"), out, device="cpu", quiet=True)
    yield out
    mp.undo()


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """A folder with train.npz (256 MNIST digits) and test.npz (64), so encoding the training set takes no time."""
    folder = tmp_path_factory.mktemp("digits")
    for split, n in (("train", 256), ("test", 64)):
        ds = load_dataset("mnist", split)
        np.savez(folder / f"{split}.npz", images=ds.images[:n].numpy(), labels=ds.labels[:n].numpy())
    return folder
