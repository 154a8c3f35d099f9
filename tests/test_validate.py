"""validate.py: every out-of-range value is one sentence before any work starts; every preset passes."""
from __future__ import annotations

import shutil

import pytest

from tinydiffusion.checkpoint import latest
from tinydiffusion.cli import main
from tinydiffusion.config import PRESETS, apply_overrides, get_preset
from tinydiffusion.errors import UserError
from tinydiffusion.validate import check_fits, check_values



@pytest.mark.parametrize("flags, message", [
    (["--set", "model.channels=-3"], "model.channels must be at least 1, got -3."),
    (["--set", "train.batch_size=0"], "train.batch_size must be at least 1, got 0."),
    (["--minutes", "-1"], "train.minutes must be 0 or more, got -1.0."),
    (["--steps", "-4"], "train.steps must be 0 or more, got -4."),
    (["--set", "train.label_dropout=1.5"], "train.label_dropout must be a probability in [0, 1], got 1.5."),
    (["--set", "train.lr=nan"], "train.lr must be positive (and below 10), got nan."),
    (["--set", "model.channels=100000000"], "The network has"),
    (["--set", "train.batch_size=70000"], "is larger than the dataset (60000 images)"),
])
def test_bad_values_are_one_sentence_before_any_work(tmp_path, capsys, flags, message):
    code = main(["train", "--preset", "mnist", "--out", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "r" / "config.json").exists()  # nothing was written


def test_the_memory_refusal_names_the_parameter_count_and_the_bytes():
    cfg = apply_overrides(get_preset("mnist"), ["model.channels=100000000"])
    with pytest.raises(UserError, match=r"has [\d,]+ parameters: training it needs about [\d,.]+ GiB"):
        check_fits(cfg, (1, 28, 28), 60000)


def test_all_violations_come_together_one_per_line():
    cfg = apply_overrides(get_preset("mnist"), ["train.batch_size=0", "sample.eta=2", "diffusion.T=1"])
    with pytest.raises(UserError) as e:
        check_values(cfg)
    assert str(e.value).splitlines() == ["diffusion.T must be between 2 and 100000, got 1.",
                                         "train.batch_size must be at least 1, got 0.",
                                         "sample.eta must be in [0, 1], got 2.0."]


def test_no_budget_is_one_sentence():
    cfg = apply_overrides(get_preset("mnist"), ["train.minutes=0"])
    with pytest.raises(UserError, match="Give a training budget above 0"):
        check_values(cfg)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_passes_and_its_network_is_counted_without_allocation(name):
    cfg = get_preset(name)
    check_values(cfg)
    shape = (3, 32, 32) if cfg.data.name == "cifar10" else (1, 28, 28)
    assert check_fits(cfg, shape, 60000, 10 if cfg.data.conditional else 0) > 100_000


def test_a_run_without_its_ema_file_says_the_raw_weights_are_used(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (latest(run) / "ema.safetensors").unlink()  # the checkpoint stays complete without its EMA
    assert main(["sample", "--run", str(run), "--n", "2", "--steps", "1", "--out", str(tmp_path / "s.png")]) == 0
    assert "ema.safetensors is missing, so the raw weights (model.safetensors) are used" in capsys.readouterr().err
    assert main(["sample", "--run", str(run), "--n", "2", "--steps", "1", "--raw", "--out", str(tmp_path / "t.png")]) == 0
    assert "missing" not in capsys.readouterr().err
