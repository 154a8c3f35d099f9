"""The training loop: the loss falls, checkpoints and logs are written, resume continues exactly; the optimiser,
learning-rate schedule, EMA and label dropout."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tinydiffusion.checkpoint import latest
from tinydiffusion.conditioning import NULL_LABEL
from tinydiffusion.config import TrainConfig
from tinydiffusion.data import load_dataset, to_model_range
from tinydiffusion.models import build_model
from tinydiffusion.objectives import diffusion_loss
from tinydiffusion.paths import make_path
from tinydiffusion.train import train
from tinydiffusion.train.optim import lr_at, make_optimizer, update_ema

from conftest import tiny_config


def test_a_tiny_model_learns_to_predict_the_noise():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x0 = to_model_range(load_dataset("mnist", "test").images[:64])
    net = build_model("unet-small", 1, 28, channels=16)
    schedule = make_path("ddpm-linear", 1000)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = diffusion_loss(net, schedule, x0, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 0.7  # an untrained net predicting ~0 has MSE ~1 against unit noise
    assert last < 0.5 * first


def test_the_optimizer_is_adamw_with_the_configured_beta2_and_fused_steps_match_the_reference():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)
    b.load_state_dict(a.state_dict())
    opt = make_optimizer(TrainConfig(lr=1e-2, adam_beta2=0.99, weight_decay=0.1), a.parameters(), torch.device("cpu"))
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, foreach=False)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.99)
    x = torch.randn(16, 6)
    for _ in range(3):
        for net, o in ((a, opt), (b, ref)):
            o.zero_grad()
            net(x).square().mean().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_training_writes_the_run_directory(tiny_run):
    assert (tiny_run / "config.json").exists() and (tiny_run / "metrics.jsonl").exists()
    assert not (tiny_run / ".lock").exists()  # released at the end
    folders = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
    assert folders == ["step_0000000", "step_0000004"]  # the last keep_checkpoints = 2, nothing half-written
    ckpt = latest(tiny_run)
    assert ckpt.name == "step_0000004"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["step"] == 4 and set(manifest["files"]) == {"meta.json", "model.safetensors", "ema.safetensors",
                                                                 "train_state.pt"}
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(set(r) >= {"step", "loss", "lr", "img_per_s"} and math.isfinite(r["loss"]) for r in rows)
    assert json.loads((ckpt / "meta.json").read_text())["shape"] == [1, 28, 28]
    assert list((tiny_run / "samples").glob("step_0000004.png"))
    state = torch.load(ckpt / "train_state.pt", weights_only=True)
    assert state["step"] == 4


def test_resume_continues_at_the_saved_step_with_the_same_weights(tmp_path, monkeypatch):
    straight, split = tmp_path / "straight", tmp_path / "split"
    cfg = tiny_config("train.checkpoint_every=3", steps=6)
    train(cfg, straight, quiet=True)

    import tinydiffusion.train.loop as train_module

    calls = []

    def interrupted_ema(*args):  # the user presses Ctrl-C during step 4, after the step-3 checkpoint
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        update_ema(*args)

    monkeypatch.setattr(train_module, "update_ema", interrupted_ema)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, split, quiet=True)
    monkeypatch.setattr(train_module, "update_ema", update_ema)
    assert torch.load(latest(split) / "train_state.pt", weights_only=True)["step"] == 3
    summary = train(cfg, split, resume=True, quiet=True)
    assert summary["steps"] == 6
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(latest(straight) / name), load_file(latest(split) / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # the row for step 2 is kept once, rows after the checkpoint are rewritten


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, lr_decay="cosine")
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 100, 0.5) == pytest.approx(5e-4)
    assert lr_at(cfg, 100, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(TrainConfig(lr=1e-3), 100, 0.9) == 1e-3


def test_ema_update_is_a_convex_combination():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    before = a.weight.detach().clone()
    update_ema(a, b, decay=0.9)
    torch.testing.assert_close(a.weight, 0.9 * before + 0.1 * b.weight)


def test_label_dropout_hits_its_rate(tmp_path, monkeypatch):
    """Train a class run with a spy loss: the fraction of null labels it sees is train.label_dropout."""
    import tinydiffusion.train.loop as train_module

    seen = []

    def spy(model, schedule, x0, *, cond=None, **kw):
        seen.append(cond.labels.clone())
        return sum(p.sum() for p in model.parameters()) * 0 + torch.ones(x0.shape[0])

    monkeypatch.setattr(train_module, "diffusion_loss", spy)
    cfg = tiny_config("train.batch_size=500", "train.label_dropout=0.1", steps=12, preset="mnist-ddpm-class")
    train_module.train(cfg, tmp_path / "run", device="cpu", quiet=True)
    labels = torch.cat(seen)  # 6000 labels; the binomial std of the rate is 0.004
    assert abs((labels == NULL_LABEL).float().mean().item() - 0.1) < 0.02
    assert set(labels.tolist()) == set(range(10)) | {NULL_LABEL}
