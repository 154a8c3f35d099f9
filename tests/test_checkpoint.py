"""checkpoint.py: config.json pins every size of the network, so old runs rebuild the same net."""
from __future__ import annotations

import json

import torch


def test_config_json_pins_the_network_so_registry_changes_do_not_break_old_runs(tiny_run, monkeypatch):
    from functools import partial

    from tinydiffusion import models
    from tinydiffusion.models.unet import UNet
    from tinydiffusion.runs import load_run

    saved = json.loads((tiny_run / "config.json").read_text())["model"]
    assert saved["name"] == "unet-small" and saved["channels"] == 8  # the tiny config's override
    assert saved["channel_mult"] == [1, 2, 2] and saved["num_res_blocks"] == 1 and saved["attention_resolutions"] == [7]
    monkeypatch.setitem(models.MODELS._entries, "unet-small", partial(UNet, channels=48, channel_mult=(1, 2), num_res_blocks=2))
    _, net, _, _ = load_run(tiny_run)  # rebuilt from config.json, not from the changed registry
    assert net(torch.zeros(2, 1, 28, 28), torch.rand(2)).shape == (2, 1, 28, 28)


# ------------------------------------------------------------------------------ checkpoints atomic as a set
import errno  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402

import pytest  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tinydiffusion import checkpoint as ckpt_module  # noqa: E402
from tinydiffusion.checkpoint import latest  # noqa: E402
from tinydiffusion.cli import main  # noqa: E402
from tinydiffusion.errors import UserError  # noqa: E402
from tinydiffusion.train import train  # noqa: E402

from conftest import tiny_config  # noqa: E402


def weights(run):
    return load_file(latest(run) / "model.safetensors")


def test_a_kill_between_the_files_of_a_checkpoint_resumes_exactly_from_the_previous_one(tmp_path, monkeypatch):
    """The process dies after writing the step-6 weights but before their training state: nothing of step 6 is
    visible, resume continues from step 3, and the run ends bit-identical to one never interrupted."""
    cfg = tiny_config("train.checkpoint_every=3", steps=9)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(cfg, straight, quiet=True)
    real_save = ckpt_module.torch.save

    def die_at_step_6(obj, path, *a, **kw):
        if isinstance(obj, dict) and obj.get("step") == 6:
            raise SystemExit("killed")  # like kill -9: no cleanup code of ours runs after this point ...
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(ckpt_module.torch, "save", die_at_step_6)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **kw: None)  # ... and no partial folder is removed
    with pytest.raises(SystemExit):
        train(cfg, killed, quiet=True)
    monkeypatch.undo()
    assert latest(killed).name == "step_0000003"  # the half-written step 6 is a hidden temporary folder
    assert any(p.name.startswith(".step_0000006.tmp") for p in (killed / "checkpoints").iterdir())
    assert not (killed / ".lock").exists()  # released on the way out (a real kill -9 leaves it: see the lock test)
    assert train(cfg, killed, resume=True, quiet=True)["steps"] == 9
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_newest_checkpoint_falls_back_with_a_note_and_none_complete_is_one_sentence(tiny_run, tmp_path,
                                                                                              capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / "step_0000004" / "ema.safetensors").write_bytes(b"not a checkpoint")
    assert latest(run).name == "step_0000000"
    assert "the newest checkpoint in" in capsys.readouterr().err
    assert main(["sample", "--run", str(run), "--n", "2", "--steps", "1", "--out", str(tmp_path / "a.npz")]) == 0
    (run / "checkpoints" / "step_0000000" / "train_state.pt").unlink()
    with pytest.raises(UserError, match="No complete checkpoint"):
        latest(run)
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(tmp_path / "b.npz")]) == 2


def test_a_full_disk_stops_training_with_one_sentence_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    cfg = tiny_config("train.checkpoint_every=2", steps=6)
    real = ckpt_module.save_file
    calls = []

    def full_disk(tensors, path, *a, **kw):
        calls.append(path)
        if len(calls) == 5:  # the weights of the step-4 checkpoint
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(ckpt_module, "save_file", full_disk)
    with pytest.raises(UserError, match=r"Could not write the checkpoint of step 4 .*No space left on device.*"
                                        r"MiB free there\. The previous checkpoint is intact\."):
        train(cfg, tmp_path / "run", quiet=True)
    assert latest(tmp_path / "run").name == "step_0000002"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_0000000", "step_0000002"]
    assert not (tmp_path / "run" / ".lock").exists()


def test_old_flat_run_directories_still_load(tmp_path):
    from pathlib import Path

    old = Path(__file__).parent / "fixtures" / "runs" / "uncond-v"
    assert latest(old) == old  # no checkpoints/ folder: the files at the root are the checkpoint


def test_a_non_finite_loss_stops_with_the_last_good_checkpoint_or_is_skipped(tmp_path, monkeypatch):
    import tinydiffusion.train.loop as loop

    real = loop.diffusion_loss
    calls = []

    def nan_at_3(*a, **kw):
        calls.append(1)
        loss = real(*a, **kw)
        return loss * float("nan") if len(calls) in (3, 4) else loss

    monkeypatch.setattr(loop, "diffusion_loss", nan_at_3)
    with pytest.raises(UserError, match=r"The loss became nan at step 3; the last good checkpoint .* is intact"):
        train(tiny_config("train.checkpoint_every=2", steps=6), tmp_path / "stop", quiet=True)
    assert latest(tmp_path / "stop").name == "step_0000002"
    calls.clear()
    summary = train(tiny_config("train.nan_policy=skip", steps=6), tmp_path / "skip", quiet=True)
    assert summary["steps"] == 6 and summary["skipped"] == 2
    w = weights(tmp_path / "skip")
    assert all(torch.isfinite(v).all() for v in w.values())


def test_two_trainings_cannot_write_one_run_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps(dict(pid=os.getppid(), host=socket.gethostname())))  # a live process
    with pytest.raises(UserError, match=r"being written by another training process \(pid \d+\)"):
        train(tiny_config(steps=1), out, quiet=True)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (out / ".lock").write_text(json.dumps(dict(pid=dead, host=socket.gethostname())))
    assert train(tiny_config(steps=1), out, quiet=True)["steps"] == 1
    assert f"taking over the lock of {out} left by a process that is gone (pid {dead})" in capsys.readouterr().err
