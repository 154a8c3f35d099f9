"""models/controlnet.py, train/controlnet.py and control runs: a fresh ControlNet is its base bit for bit, and so is
any ControlNet at control scale 0; only the branch trains; guidance keeps or drops the map; the commands train,
sample from maps (drawn, of the wrong size, or computed from images) and refuse bad input in one sentence."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, tiny_config, wake
from tinydiffusion.cli.main import main
from tinydiffusion.conditioning import Cond
from tinydiffusion.conditioning.control import control_cond, edges
from tinydiffusion.denoiser import Denoiser
from tinydiffusion.errors import UserError
from tinydiffusion.guidance import ClassifierFreeGuidance
from tinydiffusion.models import build_model
from tinydiffusion.models.controlnet import ConcatControl, ControlBranch, ControlNet
from tinydiffusion.paths import make_path
from tinydiffusion.runs import load_run
from tinydiffusion.train import train


@pytest.fixture(autouse=True, scope="module")
def loaded_once():
    """Each control training loads MNIST's train and test splits (1 s each here): read them once per module."""
    import functools

    from tinydiffusion.train import controlnet as trainer

    mp = pytest.MonkeyPatch()
    mp.setattr(trainer, "load_dataset", functools.lru_cache(maxsize=8)(trainer.load_dataset))
    yield
    mp.undo()


def nets(name="unet-patch", num_classes=0):
    torch.manual_seed(0)
    base = wake(build_model(name, 1, 28, num_classes, channels=8)).eval()  # a "trained" base: no zero layers
    return base, ControlNet(base, ControlBranch(base, hint_channels=4))


def batch(B=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 1, 28, 28, generator=g)
    return x, torch.rand(B, generator=g), (torch.rand(B, 1, 28, 28, generator=g) > 0.8).float()


@pytest.mark.parametrize("name", ["unet-patch", "unet-small"])
def test_a_fresh_controlnet_is_its_base_bit_for_bit(name):
    base, net = nets(name)
    x, t, maps = batch()
    with torch.no_grad():
        assert torch.equal(net(x, t, control_cond(maps, 1.0)), base(x, t))
        assert torch.equal(net(x, t, control_cond(maps, 3.0)), base(x, t))
        assert torch.equal(net(x, t, None), base(x, t))


def test_any_controlnet_at_scale_zero_is_its_base_bit_for_bit():
    base, net = nets(num_classes=10)
    wake(net.branch)  # a trained branch: the zero convs are no longer zero
    x, t, maps = batch()
    labels = Cond(labels=torch.tensor([1, 2, -1]))
    with torch.no_grad():
        assert torch.equal(net(x, t, control_cond(maps, 0.0, labels)), base(x, t, labels))
        assert not torch.equal(net(x, t, control_cond(maps, 1.0, labels)), base(x, t, labels))
        mixed = control_cond(maps, 1.0, labels)  # a per-row scale: row 1 at 0 is the base's row
        mixed = Cond(labels=mixed.labels, control=mixed.control, control_scale=torch.tensor([1.0, 0.0, 1.0]))
        assert torch.equal(net(x, t, mixed)[1], base(x, t, labels)[1])


def test_only_controlnet_parameters_receive_gradients():
    base, net = nets()
    x, t, maps = batch()
    net(x, t, control_cond(maps, 1.0)).square().mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in base.parameters())
    branch = dict(net.branch.named_parameters())
    assert all(p.requires_grad for p in branch.values())
    assert net.trainable_parameters() == sum(p.numel() for p in branch.values()) > 0
    # the zero convs learn first (their input is the copy's features); everything behind them waits for them
    assert all(branch[f"zero_skips.{i}.weight"].grad.abs().sum() > 0 for i in range(len(net.branch.zero_skips)))
    assert branch["zero_mid.weight"].grad.abs().sum() > 0
    assert branch["hint.6.weight"].grad.abs().sum() == 0  # behind zero convs: no signal yet (Zhang et al., sec. 3.1)
    for _ in range(2):  # two steps (the zero convs, then the hint's last conv) open the way to every parameter
        with torch.no_grad():
            for p in branch.values():
                p -= 0.1 * p.grad
                p.grad = None
        net(x, t, control_cond(maps, 1.0)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.values())
    assert all(p.grad is None for p in base.parameters())


def test_the_copy_starts_as_the_base_encoder_and_a_dit_base_is_refused():
    base, net = nets()
    for k, v in net.branch.copy.state_dict().items():
        assert torch.equal(v, base.state_dict()[k])
    assert not any(k.startswith(("up.", "out.")) for k in net.branch.copy.state_dict())
    with pytest.raises(UserError, match="needs a U-Net base"):
        ControlBranch(build_model("dit-tiny", 1, 28, channels=32, depth=1))


def test_guidance_keeps_the_map_in_both_branches_unless_told_to_drop_it():
    base, net = nets(num_classes=10)
    wake(net.branch)
    path = make_path("flow")
    x, t, maps = batch()
    cond = control_cond(maps, 1.0, Cond(labels=torch.tensor([3, 4, 5])))
    d, d_base = Denoiser(net, path, "u"), Denoiser(base, path, "u")
    with torch.no_grad():
        keep = ClassifierFreeGuidance(d, 0.0)(x, t, cond)[0]  # w = 0: the unconditional branch alone
        drop = ClassifierFreeGuidance(d, 0.0, drop_control=True)(x, t, cond)[0]
        assert torch.equal(keep, d(x, t, cond.null())[0])  # null labels, the map kept
        assert torch.equal(drop, d_base(x, t, Cond(labels=torch.full((3,), -1)))[0])  # null labels, no map
        w2 = ClassifierFreeGuidance(d, 2.0)(x, t, cond)[0]
        c, u = d(x, t, cond)[0], d(x, t, cond.null())[0]
        torch.testing.assert_close(w2, u + 2 * (c - u))


def test_concat_baseline_reads_the_map_as_an_input_channel():
    torch.manual_seed(0)
    net = ConcatControl(wake(build_model("unet-patch", 2, 28, channels=8)), 1)
    x, t, maps = batch()
    out = net(x, t, control_cond(maps, 1.0))
    assert out.shape == x.shape and not torch.equal(out, net(x, t, control_cond(1 - maps, 1.0)))
    with pytest.raises(UserError, match="one map per image"):
        net(x, t, control_cond(maps[:, :, :14], 1.0))


# ------------------------------------------------------------------------------------ runs and commands
def test_training_saves_the_branch_only_and_logs_fidelity(control_run, tiny_run):
    meta = json.loads(sorted((control_run / "checkpoints").glob("step_*"))[-1].joinpath("meta.json").read_text())
    assert meta["control"]["kind"] == "edges" and meta["parameters"] < meta["frozen_parameters"]
    keys = load_file(str(sorted((control_run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))
    assert keys and all(k.startswith(("copy.", "hint.", "zero_")) for k in keys)
    _, base_net, _, _ = load_run(tiny_run)
    _, net, _, _ = load_run(control_run)
    for k, v in base_net.state_dict().items():  # the base's weights are the base run's, untouched
        assert torch.equal(net.base.state_dict()[k], v)
    rows = [json.loads(r) for r in (control_run / "metrics.jsonl").read_text().splitlines()]
    fid = [r for r in rows if "fidelity_f1" in r]
    assert [r["step"] for r in fid] == [0, 1, 2] and all(0 <= r["fidelity_f1"] <= 1 for r in fid)
    assert "fidelity_label_accuracy" in fid[0] and any("loss" in r for r in rows)


def test_sample_from_a_drawn_map_of_the_wrong_size_and_from_images(control_run, tmp_path, capsys):
    from PIL import Image

    drawn = Image.new("L", (64, 64), 0)
    drawn.paste(255, (20, 10, 30, 54))
    drawn.save(tmp_path / "map.png")
    assert main(["sample", "--run", str(control_run), "--control", str(tmp_path / "map.png"), "--n", "2",
                 "--control-scale", "0.5", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()
    assert main(["sample", "--run", str(control_run), "--control-from", "test", "--n", "4",
                 "--out", str(tmp_path / "s.npz")]) == 0
    out = capsys.readouterr().out
    assert "control fidelity (edges, n = 4" in out and "label accuracy" in out
    assert "labels" in __import__("numpy").load(tmp_path / "s.npz").files  # the source digits' classes
    assert main(["sample", "--run", str(control_run), "--control-from", str(tmp_path / "s.npz"), "--n", "3",
                 "--out", str(tmp_path / "again.npz")]) == 0  # maps computed from given images (and their labels)
    assert "control fidelity (edges, n = 3" in capsys.readouterr().out
    # guidance on the map itself: the unconditional branch is the base without the map (an unconditional base)
    assert main(["sample", "--run", str(control_run), "--control-from", "test", "--n", "2", "--guidance", "2",
                 "--drop-control", "--out", str(tmp_path / "g.png")]) == 0


def test_bad_maps_and_runs_get_one_sentence(control_run, tiny_run, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    assert main(["sample", "--run", str(control_run), "--control", str(tmp_path / "notes.png"),
                 "--out", str(tmp_path / "s.png")]) == 2
    assert main(["sample", "--run", str(tiny_run), "--control-from", "test", "--out", str(tmp_path / "s.png")]) == 2
    assert main(["sample", "--run", str(control_run), "--control-from", "test", "--n", "2", "--drop-control",
                 "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "is not an image" in err and "not trained with control maps" in err and "needs --guidance W" in err
    assert all(line.startswith("error: ") for line in err.strip().splitlines())


def test_a_base_of_another_shape_is_refused_in_training_and_in_loading(control_run, tmp_path):
    base = json.loads((control_run / "checkpoints" / "step_0000002" / "meta.json").read_text())["control"]["base"]
    with pytest.raises(UserError, match="no trained run there"):
        train(tiny_config(f"control.base={tmp_path / 'none'}", steps=1, preset="mnist-controlnet"), tmp_path / "c0")
    with pytest.raises(UserError, match="not a pixel denoiser"):
        train(tiny_config(f"control.base={control_run}", steps=1, preset="mnist-controlnet"), tmp_path / "c1")
    cfg = tiny_config(f"control.base={base}", "data.image_size=14", steps=1, preset="mnist-controlnet")
    with pytest.raises(UserError, match=r"generates mnist images of shape \(1, 28, 28\), but the data"):
        train(cfg, tmp_path / "ctrl", device="cpu", quiet=True)
    other = tmp_path / "small"
    train(tiny_config("data.image_size=14", steps=1), other, device="cpu", quiet=True)
    moved = tmp_path / "moved"
    shutil.copytree(control_run, moved)
    saved = tmp_path / "saved_base"
    shutil.move(base, saved)
    shutil.copytree(other, base)  # the base run replaced by one of another shape
    try:
        with pytest.raises(UserError, match=r"shape \(1, 14, 14\), but this ControlNet was trained on"):
            load_run(moved)
    finally:
        shutil.rmtree(base)
        shutil.move(saved, base)
    load_run(moved)  # the right base back: it loads


def test_a_retrained_base_is_noticed(control_run, tmp_path):
    base = json.loads((control_run / "checkpoints" / "step_0000002" / "meta.json").read_text())["control"]["base"]
    saved = tmp_path / "saved_base"
    shutil.move(base, saved)
    train(tiny_config(steps=2, *["seed=5"]), base, device="cpu", quiet=True)
    try:
        with pytest.raises(UserError, match="has changed since this ControlNet was trained"):
            load_run(control_run)
    finally:
        shutil.rmtree(base)
        shutil.move(saved, base)


def test_the_experiment_reports_every_arm_and_scale(tiny_run, tmp_path):
    overrides = [a for o in TINY for a in ("--set", o)] + ["--set", "control.fidelity_every=1",
                                                          "--set", "control.fidelity_n=2"]
    assert main(["experiment", "controlnet", "--base", str(tiny_run), "--steps", "1", "--n", "4", "--scales", "0,1",
                 "--out", str(tmp_path / "r"), "--quiet", *overrides]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["arm"] for r in results["arms"]] == ["controlnet", "random-init", "concat-scratch"]
    assert [r["scale"] for r in results["scales"]] == [0.0, 1.0]
    assert all(0 <= r["f1"] <= 1 and 0 <= r["label_accuracy"] <= 1 for r in results["arms"] + results["scales"])
    arms = {r["arm"]: r for r in results["arms"]}
    assert arms["controlnet"]["trainable_parameters"] == arms["random-init"]["trainable_parameters"]
    assert (tmp_path / "r" / "scales.png").exists() and (tmp_path / "r" / "curve.png").exists()
    assert "Scale 0 is the base's unconditioned samples" in (tmp_path / "r" / "report.md").read_text()


def test_fidelity_is_checked_more_often_early():
    from tinydiffusion.train.controlnet import fidelity_due

    assert [s for s in range(1, 701) if fidelity_due(s, 100)] == [25, 50, 75, 100, 125, 150, 175, 200, 300, 400,
                                                                  500, 600, 700]
    assert not any(fidelity_due(s, 0) for s in range(10))


def test_a_control_run_resumes(control_run, tmp_path):
    run = tmp_path / "ctrl"
    shutil.copytree(control_run, run)
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"]) == 0
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "fidelity_f1" in r] == [0, 1, 2, 3]  # nothing logged twice
    assert json.loads(sorted((run / "checkpoints").glob("step_*"))[-1].joinpath("meta.json").read_text())["step"] == 3
