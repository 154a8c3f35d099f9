"""Latent diffusion end to end on a tiny autoencoder: the latent cache (data/latents.py), standardisation, the latent
space of a run (latent_space.py), training an autoencoder and a latent run, and sampling one like a pixel run."""
import json
import re
import shutil

import numpy as np
import pytest
import torch

from tinydiffusion.config import apply_overrides, get_preset
from tinydiffusion.data import load_dataset, to_model_range
from tinydiffusion.data.latents import LatentSet, cached_latents, encode_all, latent_stats, standardize, unstandardize
from tinydiffusion.errors import UserError
from tinydiffusion.latent_space import load_latent_space, run_latent_space
from tinydiffusion.runs import load_run, sample_run
from tinydiffusion.train import train

SMALL = ["train.batch_size=16", "train.precision=fp32", "train.log_every=1", "train.minutes=0",
         "train.checkpoint_every=1000"]


def ae_config(digits, steps=3):
    return apply_overrides(get_preset("mnist-ae"), SMALL + [f"data.name={digits}", "model.channels=4",
                                                             f"train.steps={steps}"])


def latent_config(digits, ae, *extra, steps=2, preset="mnist-latent"):
    return apply_overrides(get_preset(preset), SMALL + [
        f"data.name={digits}", f"data.autoencoder={ae}", "model.channels=8", f"train.steps={steps}",
        "sample.steps=3", *extra])


@pytest.fixture(scope="module")
def ae_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae") / "ae"
    summary = train(ae_config(digits), out, quiet=True)
    assert summary["steps"] == 3 and summary["psnr"] > 0
    return out


@pytest.fixture(scope="module")
def latent_run(digits, ae_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent") / "run"
    train(latent_config(digits, ae_run), out, quiet=True)
    return out


def test_standardize_and_unstandardize_are_inverse_per_channel():
    stats = dict(mean=[1.0, -2.0], std=[0.5, 3.0], std_sampled=[1.0, 4.0])
    z = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    for mode in ("mean", "sample"):
        assert torch.allclose(unstandardize(standardize(z, stats, mode), stats, mode), z)
    assert torch.allclose(standardize(z, stats)[:, 1], (z[:, 1] + 2) / 3)


def test_latent_stats_follow_the_law_of_total_variance():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(4000, 2, 2, 2, generator=g) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1) + 5
    log_var = torch.full_like(mean, np.log(0.25))  # sigma = 0.5
    stats = latent_stats(mean, log_var)
    assert np.allclose(stats["std_sampled"], np.sqrt(np.square(stats["std"]) + 0.25))
    sampled = LatentSet(mean, log_var, stats, "sample").batch(torch.arange(4000), g)  # (4000, 2, 2, 2)
    assert sampled.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (sampled.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05


def test_the_autoencoder_run_records_its_latent_statistics_and_ceiling(ae_run):
    meta = json.loads(sorted((ae_run / "checkpoints").glob("step_*"))[-1].joinpath("meta.json").read_text())
    assert meta["kind"] == "autoencoder" and meta["latent_shape"] == [4, 7, 7]
    assert len(meta["latent_stats"]["mean"]) == 4 and set(meta["reconstruction"]) >= {"mse", "psnr", "n"}
    assert (ae_run / "samples" / "reconstructions.png").exists()
    assert len(list((ae_run / "latents").glob("*.safetensors"))) == 1


def test_standardised_training_latents_have_zero_mean_and_unit_std_per_channel(ae_run, digits):
    space = load_latent_space(ae_run)
    images = load_dataset(str(digits), "train").images
    (mean, log_var), encoded_now, _ = cached_latents(ae_run, space.digest, images, space.ae.encode)
    assert not encoded_now  # the autoencoder's training wrote it
    z = LatentSet(mean, log_var, space.stats).batch(torch.arange(len(images)))  # (256, 4, 7, 7)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4)


def test_encode_standardise_unstandardise_decode_is_the_reconstruction(ae_run, digits):
    space = load_latent_space(ae_run)
    x = to_model_range(load_dataset(str(digits), "test").images[:8])
    with torch.no_grad():
        recon = space.ae.decode(space.ae.encode(x)[0])
    assert torch.allclose(space.decode(space.encode(x)), recon, atol=1e-5)


def test_the_cache_equals_encoding_on_the_fly_and_is_rebuilt_for_changed_weights(ae_run, digits, tmp_path):
    space = load_latent_space(ae_run)
    images = load_dataset(str(digits), "train").images
    root = tmp_path / "ae"
    (cached, _), first, path = cached_latents(root, space.digest, images, space.ae.encode)
    (again, _), second, same_path = cached_latents(root, space.digest, images, space.ae.encode)
    assert first and not second and path == same_path
    assert torch.equal(cached, encode_all(space.ae.encode, images)[0]) and torch.equal(again, cached)
    (_, _), changed, other = cached_latents(root, "f" * 64, images, lambda x: (x[:, :1, :7, :7], x[:, :1, :7, :7]))
    assert changed and other != path  # another autoencoder never reads these latents
    path.write_bytes(b"damaged")
    assert cached_latents(root, space.digest, images, space.ae.encode)[1]  # a damaged file is rebuilt


def test_a_latent_run_samples_images_of_the_datas_shape_in_range(latent_run):
    cfg, net, _, meta = load_run(latent_run)
    assert meta["shape"] == [4, 7, 7] and meta["autoencoder"]["image_shape"] == [1, 28, 28]
    x = sample_run(latent_run, 5, seed=1)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, sample_run(latent_run, 5, seed=1))
    assert (latent_run / "samples").glob("step_*.png")


def test_a_class_conditional_latent_run_samples_with_guidance(digits, ae_run, tmp_path):
    from tinydiffusion.runs import sample_conditional

    out = tmp_path / "class"
    train(latent_config(digits, ae_run, preset="mnist-latent-class", steps=1), out, quiet=True)
    frames = []
    x, labels = sample_conditional(out, 4, labels=torch.tensor([0, 1, 2, 3]), guidance=3.0,
                                   callback=frames.append)
    assert x.shape == (4, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3]
    assert len(frames) == 3 and frames[0]["x0_hat"].shape == (4, 1, 28, 28)  # decoded frames


def test_a_latent_class_run_distils_into_an_lcm_latent_run_that_samples_images_at_w(digits, ae_run, tmp_path):
    from tinydiffusion.cli.main import main
    from tinydiffusion.runs import sample_conditional

    teacher, out = tmp_path / "class", tmp_path / "lcm"
    train(latent_config(digits, ae_run, preset="mnist-latent-class", steps=1), teacher, quiet=True)
    assert main(["distill", "--teacher", str(teacher), "--method", "lcm", "--out", str(out), "--steps", "2",
                 "--N", "4", "--set", "train.batch_size=8"]) == 0
    cfg, _, _, meta = load_run(out)
    assert meta["shape"] == [4, 7, 7] and meta["autoencoder"] == load_run(teacher)[3]["autoencoder"]
    x, _ = sample_conditional(out, 4, steps=2, labels=torch.tensor([0, 1, 2, 3]), guidance=3.0)
    assert x.shape == (4, 1, 28, 28) and x.isfinite().all()  # decoded through the teacher's autoencoder
    assert main(["distill", "--teacher", str(teacher), "--method", "cd", "--out", str(tmp_path / "cd"),
                 "--steps", "1", "--N", "4", "--set", "train.batch_size=8"]) == 0  # plain cd of a latent run too


def test_a_latent_run_whose_autoencoder_is_missing_or_changed_gets_one_sentence(digits, ae_run, latent_run, tmp_path):
    ae = tmp_path / "ae"
    shutil.copytree(ae_run, ae)
    run = tmp_path / "run"
    train(latent_config(digits, ae, steps=1), run, quiet=True)
    assert sample_run(run, 2).shape == (2, 1, 28, 28)
    train(ae_config(digits, steps=4), ae, resume=True, quiet=True)  # one more step: new weights
    with pytest.raises(UserError, match="has changed since the run was trained"):
        sample_run(run, 2)
    shutil.rmtree(ae)
    meta = load_run(latent_run)[3]
    with pytest.raises(UserError, match="is missing"):
        run_latent_space({**meta, "autoencoder": {**meta["autoencoder"], "run": str(ae)}})


@pytest.mark.parametrize("extra, match", [
    (["data.hflip=true"], "data.hflip flips images"),
    (["sample.clip_x0=true"], "sample.clip_x0 clips"),
    (["data.latents=median"], "not a latent mode"),
])
def test_latent_configs_that_cannot_work_are_one_sentence(digits, ae_run, tmp_path, extra, match):
    with pytest.raises(UserError, match=match):
        train(latent_config(digits, ae_run, *extra), tmp_path / "run", quiet=True)


def test_a_latent_run_on_other_data_than_its_autoencoder_is_refused(ae_run, tmp_path):
    cfg = apply_overrides(get_preset("mnist-latent"), SMALL + [f"data.autoencoder={ae_run}", "train.steps=1"])
    with pytest.raises(UserError, match="was trained on"):
        train(cfg, tmp_path / "run", quiet=True)


def test_a_missing_or_foreign_autoencoder_run_is_one_sentence(latent_run, tmp_path):
    with pytest.raises(UserError, match="does not exist; train one"):
        load_latent_space(tmp_path / "nothing")
    with pytest.raises(UserError, match="not an autoencoder"):
        load_latent_space(latent_run)


def test_the_cli_samples_and_draws_a_trajectory_of_a_latent_run(latent_run, tmp_path):
    from tinydiffusion.cli import main

    assert main(["sample", "--run", str(latent_run), "--n", "4", "--out", str(tmp_path / "s.png")]) in (0, None)
    assert main(["viz", "trajectory", "--run", str(latent_run), "--n", "2", "--out", str(tmp_path / "t.png")]) in (0, None)
    assert (tmp_path / "s.png").exists() and (tmp_path / "t.gif").exists()
    assert main(["viz", "diagnostic", "--run", str(latent_run), "--out", str(tmp_path / "d.png")]) not in (0, None)


def test_data_info_prints_the_latent_health_line(ae_run, digits, capsys):
    from tinydiffusion.cli import main

    assert main(["data", "info", str(digits), "--autoencoder", str(ae_run), "--out", str(ae_run / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"standardised per channel: mean [+-]0\.000", out) and "round trip decode(encode(x))" in out
