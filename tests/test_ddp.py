"""DDP on CPU: 2 gloo processes launched by torch.distributed.run (ddp_worker.py) against one process.

Two ranks with half the batch each take the same steps as one process with the whole batch; parameters and
EMA agree across ranks; rank 0 alone writes; a resumed DDP run continues exactly, also on a changed world size;
sharded sampling returns the n images of one process, in order; gradient accumulation equals the whole batch.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinydiffusion import distributed
from tinydiffusion.checkpoint import state_tensors
from tinydiffusion.cli import main
from tinydiffusion.errors import UserError
from tinydiffusion.runs import load_run, sample_run
from tinydiffusion.train import ddp, train

from ddp_worker import ae_config, config, control_config, distill_cd, latent_config

HERE = Path(__file__).parent
TOL = dict(rtol=1e-4, atol=1e-5)  # all-reduced means against one batch's mean: float rounding, through Adam


def torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(HERE / "ddp_worker.py"), str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def weights(run: Path, ema: bool) -> dict:
    return state_tensors(load_run(run, use_ema=ema)[1])


def close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **(tol or TOL), msg=lambda m: f"{k}: {m}")


pytestmark = pytest.mark.distributed


def test_two_ranks_with_half_the_batch_match_one_process_with_all_of_it(ddp_out, tmp_path):
    train(config(4), tmp_path / "one", device="cpu", quiet=True)
    for ema in (False, True):
        close(weights(ddp_out / "runs" / "full", ema), weights(tmp_path / "one", ema))
    one = [json.loads(r) for r in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(r) for r in (ddp_out / "runs" / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two] == [r["step"] for r in one] == [2, 4]  # each row once: rank 0 writes
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5)  # the global batch's


def test_every_rank_holds_the_same_parameters_and_ema(ddp_out):
    for name in ("full-model", "full-ema", "resumed-model", "resumed-ema"):
        r0, r1 = (torch.load(ddp_out / f"rank{r}" / f"{name}.pt") for r in (0, 1))
        close(r0, r1, rtol=0, atol=0)


def test_only_rank_zero_writes(ddp_out):
    reports = [json.loads((ddp_out / f"rank{r}" / "report.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2] and [r["cli"] for r in reports] == [0, 0]
    assert reports[1]["written"] == []  # rank 1 opened nothing for writing, made and renamed nothing
    assert len(list((ddp_out / "runs" / "full" / "samples").glob("*.png"))) == 1


def test_a_resumed_ddp_run_continues_exactly(ddp_out):
    close(weights(ddp_out / "runs" / "half", False), weights(ddp_out / "runs" / "full", False), rtol=0, atol=0)
    close(weights(ddp_out / "runs" / "half", True), weights(ddp_out / "runs" / "full", True), rtol=0, atol=0)


def test_a_ddp_run_resumes_on_one_process(ddp_out, tmp_path):
    import shutil
    run = tmp_path / "two"
    shutil.copytree(ddp_out / "runs" / "two", run)
    train(config(4), run, device="cpu", resume=True, quiet=True)
    close(weights(run, False), weights(ddp_out / "runs" / "full", False))


def test_sharded_sampling_returns_the_n_images_of_one_process_in_order(ddp_out):
    import numpy as np
    one = sample_run(ddp_out / "runs" / "full", 10, batch_size=4, steps=3, seed=5)
    for r in (0, 1):
        torch.testing.assert_close(torch.load(ddp_out / f"rank{r}" / "samples.pt"), one, rtol=0, atol=1e-6)
    assert len({tuple(x.flatten()[:50].tolist()) for x in one}) == 10  # distinct: no batch twice
    with np.load(ddp_out / "runs" / "cli.npz") as f:
        assert f["images"].shape == (10, 1, 28, 28)


def test_the_other_trainers_on_two_ranks_match_one_process(ddp_out, tmp_path):
    """The autoencoder, a latent run on it, a ControlNet and consistency distillation shard the same way as train (train/ddp.py)."""
    runs = ddp_out / "runs"
    train(ae_config(ddp_out / "digits"), tmp_path / "ae", device="cpu", quiet=True)
    close(weights(runs / "ae", False), weights(tmp_path / "ae", False))
    train(latent_config(ddp_out / "digits", runs / "ae"), tmp_path / "latent", device="cpu", quiet=True)
    close(weights(runs / "latent", True), weights(tmp_path / "latent", True))
    train(control_config(runs / "full"), tmp_path / "control", device="cpu", quiet=True)
    for ema in (False, True):
        close(weights(runs / "control", ema), weights(tmp_path / "control", ema))
    distill_cd(runs / "full", tmp_path / "cd")
    for ema in (False, True):
        close(weights(runs / "cd", ema), weights(tmp_path / "cd", ema))


def test_train_nproc_launches_torchrun_and_trains(tmp_path, capsys):
    sets = [f"--set={s}" for s in ("model.name=unet-small", "model.channels=8", "diffusion.T=20",
                                   "train.batch_size=8", "train.precision=fp32", "train.log_every=1")]
    code = main(["train", "--preset", "mnist-ddpm", "--nproc", "2", "--steps", "2", "--device", "cpu",
                 "--quiet", "--out", str(tmp_path / "run"), *sets])
    assert code == 0
    meta = json.loads(next((tmp_path / "run" / "checkpoints").glob("step_*/meta.json")).read_text())
    assert meta["world_size"] == 2 and meta["step"] == 2


# one process: the shards, accumulation, and the sentences


def test_shards_are_disjoint_and_cover_the_global_batch(monkeypatch):
    for world, accumulate in ((1, 1), (2, 1), (2, 2), (4, 2)):
        rows = []
        for r in range(world):
            monkeypatch.setattr(distributed, "world_size", lambda: world)
            monkeypatch.setattr(distributed, "rank", lambda: r)
            shards = ddp.Shards(16, accumulate)
            assert len(shards.slices()) == accumulate
            rows += [i for s in shards.slices() for i in range(16)[s]]
        assert sorted(rows) == list(range(16))  # each row of the batch exactly once


def test_gradient_accumulation_equals_one_batch(tmp_path):
    train(config(3), tmp_path / "whole", device="cpu", quiet=True)
    train(config(3, "train.accumulate=2"), tmp_path / "acc", device="cpu", quiet=True)
    for ema in (False, True):
        close(weights(tmp_path / "acc", ema), weights(tmp_path / "whole", ema))


def test_a_batch_that_does_not_split_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not split into 1 process"):
        train(config(1, "train.accumulate=3"), tmp_path / "run", device="cpu", quiet=True)


def test_nproc_must_be_positive(tmp_path, capsys):
    assert main(["train", "--preset", "mnist", "--nproc", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--nproc must be at least 1" in capsys.readouterr().err


def test_fp16_without_cuda_is_one_sentence():
    from tinydiffusion.device import amp_dtype
    assert amp_dtype("fp32", "cpu") is None
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        amp_dtype("fp16", "cpu")
