"""The training loop: the loss falls, checkpoints and logs are written, resume continues exactly."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tinydiffusion.config import TrainConfig
from tinydiffusion.data import load_dataset, to_model_range
from tinydiffusion.errors import UserError
from tinydiffusion.models import build_model
from tinydiffusion.models.layers import ResBlock, SelfAttention
from tinydiffusion.objectives import diffusion_loss
from tinydiffusion.schedules import make_schedule
from tinydiffusion.train import train
from tinydiffusion.train.optim import lr_at, make_optimizer, update_ema

from conftest import tiny_config


def test_a_tiny_model_learns_to_predict_the_noise():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x0 = to_model_range(load_dataset("mnist", "test").images[:64])
    net = build_model("unet-small", 1, 28, channels=16)
    schedule = make_schedule("linear", 1000)
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


@pytest.mark.parametrize("name", ["unet-small", "unet-patch"])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_unets_map_images_to_their_own_shape_with_attention_at_the_lowest_resolution(name, channels, size):
    net = build_model(name, channels, size, channels=8).eval()
    x = torch.randn(2, channels, size, size)
    # the output conv starts at zero: perturb it so the shape check sees real values
    torch.nn.init.normal_(net.out[-1].weight)
    y = net(x, torch.rand(2))
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().sum() > 0
    seen = []
    net.mid[1].register_forward_hook(lambda m, inp, out: seen.append(out.shape[-1]))
    net(x, torch.rand(2))
    assert isinstance(net.mid[1], SelfAttention)
    # 28 -> 14 -> 7 with full-resolution levels; 28 -> 14 (patches) -> 7 -> 4 with 2x2 patches
    assert seen == [{("unet-small", 28): 7, ("unet-small", 32): 8, ("unet-patch", 28): 4, ("unet-patch", 32): 4}
                    [(name, size)]]


def test_scale_shift_multiplies_the_normalised_features_and_adds_the_shift():
    torch.manual_seed(0)
    block = ResBlock(8, 8, emb_dim=4, scale_shift=True)
    torch.nn.init.normal_(block.conv2.weight)  # zero-initialised: make the residual branch visible
    with torch.no_grad():  # scale = -1 and shift = 0.7 for any embedding: h = norm(h) * 0 + 0.7
        block.emb.weight.zero_()
        block.emb.bias.copy_(torch.cat([-torch.ones(8), 0.7 * torch.ones(8)]))
    x1, x2, emb = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5), torch.randn(2, 4)
    r1, r2 = block(x1, emb) - x1, block(x2, emb) - x2
    torch.testing.assert_close(r1, r2)  # the branch no longer sees x: only the shift reaches conv2
    plain = ResBlock(8, 8, emb_dim=4)
    assert plain.emb.out_features == 8 and block.emb.out_features == 16


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


def test_a_patch_size_that_does_not_divide_the_image_is_refused():
    with pytest.raises(UserError, match="patch_size 2 does not divide the image size 27"):
        build_model("unet-patch", 1, 27)


def test_training_writes_the_run_directory(tiny_run):
    for name in ("config.json", "meta.json", "model.safetensors", "ema.safetensors", "train_state.pt", "metrics.jsonl"):
        assert (tiny_run / name).exists(), name
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(set(r) >= {"step", "loss", "lr", "img_per_s"} and math.isfinite(r["loss"]) for r in rows)
    assert json.loads((tiny_run / "meta.json").read_text())["shape"] == [1, 28, 28]
    assert list((tiny_run / "samples").glob("step_0000004.png"))
    state = torch.load(tiny_run / "train_state.pt", weights_only=True)
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
    assert torch.load(split / "train_state.pt", weights_only=True)["step"] == 3
    summary = train(cfg, split, resume=True, quiet=True)
    assert summary["steps"] == 6
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(straight / name), load_file(split / name)
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


def test_precision_auto_uses_bf16_only_where_the_hardware_has_it(monkeypatch):
    from tinydiffusion import device
    from tinydiffusion.config import Config

    assert device.use_bf16("fp32", "cpu") is False and device.use_bf16("bf16", "cpu") is True
    for native in (False, True):
        monkeypatch.setattr(device, "native_bf16", lambda dev, native=native: native)
        assert device.use_bf16("auto", "cpu") is native
    with pytest.raises(UserError, match="precision"):
        device.use_bf16("fp16", "cpu")
    # Runs written before train.precision existed said train.bf16: true -> auto, false -> fp32.
    assert Config.from_dict({"train": {"bf16": True}}).train.precision == "auto"
    assert Config.from_dict({"train": {"bf16": False}}).train.precision == "fp32"


def test_importance_time_sampling_keeps_the_weighted_objective_in_expectation():
    """E_{t ~ w/sum w}[mean(w) mse_t] = E_{t ~ U}[w_t mse_t]: with a net whose error depends only on t, the
    two estimates agree to Monte-Carlo error."""
    schedule = make_schedule("linear", 1000)
    x0 = torch.zeros(4096, 1, 2, 2)

    def net(x_t, t, cond=None):  # v-prediction error grows with t: target v plus (t / T) everywhere
        alpha, sigma = schedule.sqrt_alpha_bar, schedule.sqrt_one_minus_alpha_bar
        k = (t.double() * 1000 - 1).round().long()  # continuous time back to the integer step
        eps = x_t.double() / sigma[k].view(-1, 1, 1, 1)  # x0 = 0, so x_t = sigma eps
        return (alpha[k].view(-1, 1, 1, 1) * eps + t.double().view(-1, 1, 1, 1)).float()

    losses = {kind: diffusion_loss(net, schedule, x0, prediction="v", weighting="min-snr", t_sampling=kind,
                                   generator=torch.Generator().manual_seed(0)).mean().item()
              for kind in ("uniform", "importance")}
    assert losses["importance"] == pytest.approx(losses["uniform"], rel=0.05), losses


def test_config_json_pins_the_network_so_registry_changes_do_not_break_old_runs(tiny_run, monkeypatch):
    from functools import partial

    from tinydiffusion import models
    from tinydiffusion.runs import load_run
    from tinydiffusion.models.unet import UNet

    saved = json.loads((tiny_run / "config.json").read_text())["model"]
    assert saved["name"] == "unet-small" and saved["channels"] == 8  # the tiny config's override
    assert saved["channel_mult"] == [1, 2, 2] and saved["num_res_blocks"] == 1 and saved["attention_resolutions"] == [7]
    monkeypatch.setitem(models.MODELS._entries, "unet-small", partial(UNet, channels=48, channel_mult=(1, 2), num_res_blocks=2))
    _, net, _, _ = load_run(tiny_run)  # rebuilt from config.json, not from the changed registry
    assert net(torch.zeros(2, 1, 28, 28), torch.rand(2)).shape == (2, 1, 28, 28)
