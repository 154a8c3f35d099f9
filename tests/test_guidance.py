"""Classifier-free guidance, proved on Gaussian data with its exact denoiser; label dropout; the sample CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gaussian_oracle import GaussianOracle, ode_solution
from conftest import wake
from tinydiffusion.cli import main
from tinydiffusion.config import SampleConfig
from tinydiffusion.denoiser import Denoiser
from tinydiffusion.errors import UserError
from tinydiffusion.conditioning import NULL_LABEL, Cond
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.guidance import ClassifierFreeGuidance
from tinydiffusion.models import build_model
from tinydiffusion.schedules import make_schedule

from conftest import tiny_config

LINEAR = make_schedule("linear", 1000)
STD = torch.tensor([0.3, 0.6, 0.9, 0.5]).reshape(1, 2, 2)
MUS = torch.tensor([[0.5, -0.3, 0.2, -0.6], [-0.4, 0.1, 0.6, 0.3], [0.0, 0.0, 0.0, 0.0]]).reshape(3, 1, 2, 2)
NULL = 2  # labels 0 and 1 are classes; MUS[2] is the null label's "unconditional" Gaussian, mean 0


class ClassOracle(torch.nn.Module):
    """The exact denoiser of x0 | c ~ N(MUS[c], STD^2), as a network net(x, t, cond); counts its calls.
    NULL_LABEL (the null condition) selects MUS[NULL]."""

    def __init__(self, prediction="eps"):
        super().__init__()
        self.oracles = [GaussianOracle(LINEAR, mu, STD, prediction) for mu in MUS]
        self.batches = []

    def forward(self, x, t, cond=None):
        self.batches.append((x.shape[0], None if cond is None else cond.labels.tolist()))
        labels = torch.full((x.shape[0],), NULL) if cond is None else cond.labels.where(cond.labels >= 0, NULL)
        out = torch.empty_like(x)
        for c, oracle in enumerate(self.oracles):
            sel = labels == c
            if sel.any():
                out[sel] = oracle(x[sel], t[sel])
        return out


def denoiser(prediction="eps", clip=False):
    return Denoiser(ClassOracle(prediction), LINEAR, prediction, clip_x0=clip)


def inputs(B=4, t=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, 2, 2, generator=g), torch.full((B,), t), Cond(labels=torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_w1_is_the_conditional_and_w0_the_unconditional_prediction(prediction):
    d = denoiser(prediction)
    x, t, c = inputs()
    cond, uncond = d(x, t, c), d(x, t, c.null())
    for w, want in ((1.0, cond), (0.0, uncond), (1.0 + 1e-7, cond)):  # 1 + 1e-7 runs the batched two-branch path
        got = ClassifierFreeGuidance(d, w)(x, t, c)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("w", [3.0, -0.5])
def test_guidance_combines_the_two_predictions_the_same_way_for_eps_x0_and_v(w):
    x, t, c = inputs(t=300)
    results = []
    for prediction in ("eps", "x0", "v"):
        d = denoiser(prediction)
        (x0_c, eps_c), (x0_u, eps_u) = d(x, t, c), d(x, t, c.null())
        x0, eps = ClassifierFreeGuidance(d, w)(x, t, c)
        torch.testing.assert_close(eps, eps_u + w * (eps_c - eps_u), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x0, x0_u + w * (x0_c - x0_u), atol=1e-5, rtol=1e-5)
        results.append((x0, eps))
    for x0, eps in results[1:]:  # the parameterisation does not change the guided step
        torch.testing.assert_close(x0, results[0][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(eps, results[0][1], atol=1e-4, rtol=1e-4)


def test_both_branches_run_in_one_batched_call_with_the_null_label():
    d = denoiser()
    x, t, c = inputs()
    ClassifierFreeGuidance(d, 3.0)(x, t, c)
    assert d.net.batches == [(8, [0, 1, 0, 1] + [NULL_LABEL] * 4)]


def test_rescale_matches_the_conditional_std_and_clipping_comes_after_the_combination():
    d = denoiser()
    x, t, c = inputs(t=50)
    x0_c, _ = d(x, t, c)
    x0, _ = ClassifierFreeGuidance(d, 8.0, rescale=1.0)(x, t, c)
    torch.testing.assert_close(x0.std(dim=(1, 2, 3)), x0_c.std(dim=(1, 2, 3)), atol=1e-5, rtol=1e-5)
    plain, _ = ClassifierFreeGuidance(d, 8.0)(x, t, c)
    assert plain.abs().max() > 1  # w = 8 extrapolates past the data range ...
    clipped, eps = ClassifierFreeGuidance(denoiser(clip=True), 8.0)(x, t, c)
    torch.testing.assert_close(clipped, plain.clamp(-1, 1))  # ... and the clip applies to the guided x0
    alpha, sigma = LINEAR.sqrt_alpha_bar[50], LINEAR.sqrt_one_minus_alpha_bar[50]
    torch.testing.assert_close(x, alpha * clipped + sigma * eps, atol=1e-5, rtol=1e-5)  # (x0, eps) still explain x_t
    with pytest.raises(UserError, match="between 0 and 1"):
        ClassifierFreeGuidance(d, 3.0, rescale=1.5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_guided_sampling_of_gaussians_lands_on_the_extrapolated_gaussian(prediction):
    """Equal-variance Gaussians: E[x0|x_t] is affine in the mean, so guidance with w samples N(mu_w, STD^2),
    mu_w = mu_u + w (mu_c - mu_u); the deterministic DDIM chain must follow that Gaussian's exact ODE."""
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(2, 1, 2, 2, generator=g)
    labels = torch.tensor([0, 1])
    cfg = SampleConfig(sampler="ddim", steps=250, clip_x0=False)
    for w in (0.0, 1.0, 2.5):
        got = generate(denoiser_for(ClassOracle(prediction), LINEAR, prediction, cfg, guidance=w), cfg, 2, (1, 2, 2),
                       cond=Cond(labels=labels), generator=torch.Generator().manual_seed(1))
        mu_w = MUS[NULL] + w * (MUS[labels] - MUS[NULL])  # (2, 1, 2, 2)
        want = torch.stack([ode_solution(LINEAR, mu_w[i], STD, x_T[i:i + 1], 999, -1)[0] for i in range(2)])
        torch.testing.assert_close(got.double(), want, atol=2e-2, rtol=0)  # generate() does not clamp


def test_w1_sampling_equals_conditional_sampling_with_the_stochastic_sampler():
    cfg = SampleConfig(sampler="ddpm", steps=20, clip_x0=True)
    labels = Cond(labels=torch.tensor([0, 1, 1]))
    run = lambda cond, guidance=None: generate(  # noqa: E731
        denoiser_for(ClassOracle(), LINEAR, "eps", cfg, guidance=guidance), cfg, 3, (1, 2, 2), cond=cond,
        generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(run(labels, guidance=1.0), run(labels))
    torch.testing.assert_close(run(labels, guidance=0.0), run(labels.null()))
    assert not torch.allclose(run(labels, guidance=4.0), run(labels))


def test_the_null_label_is_the_unconditional_path_of_the_unet():
    net = wake(build_model("unet-small", 1, 28, num_classes=10, channels=8).eval())
    x, t = torch.randn(3, 1, 28, 28), torch.rand(3)
    torch.testing.assert_close(net(x, t, None), net(x, t, Cond(labels=torch.full((3,), NULL_LABEL))))
    assert not torch.allclose(net(x, t, Cond(labels=torch.tensor([1, 2, 3]))), net(x, t, None))


def test_label_dropout_hits_its_rate(tmp_path, monkeypatch):
    """Train a class run with a spy loss: the fraction of null labels it sees is train.label_dropout."""
    import tinydiffusion.train.loop as train_module

    seen = []

    def spy(model, schedule, x0, *, cond=None, **kw):
        seen.append(cond.labels.clone())
        return sum(p.sum() for p in model.parameters()) * 0 + torch.ones(x0.shape[0])

    monkeypatch.setattr(train_module, "diffusion_loss", spy)
    cfg = tiny_config("train.batch_size=500", "train.label_dropout=0.1", steps=12, preset="mnist-class")
    train_module.train(cfg, tmp_path / "run", device="cpu", quiet=True)
    labels = torch.cat(seen)  # 6000 labels; the binomial std of the rate is 0.004
    assert abs((labels == NULL_LABEL).float().mean().item() - 0.1) < 0.02
    assert set(labels.tolist()) == set(range(10)) | {NULL_LABEL}


# ------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    from tinydiffusion.train import train

    out = tmp_path_factory.mktemp("class_run") / "run"
    train(tiny_config(steps=2, preset="mnist-class"), out, device="cpu", quiet=True)
    return out


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


def test_guidance_experiment_writes_its_table_and_grids(class_run, tmp_path, monkeypatch):
    import tinydiffusion.eval.evaluate

    def fake_evaluate(images01, labels=None, dataset="mnist", metrics=None):  # stands in for the classifier
        return dict(fd_classifier=1.0, precision=0.5, recall=0.5, class_entropy=1.0, label_accuracy=0.1)

    monkeypatch.setattr(tinydiffusion.eval.evaluate, "evaluate_samples", fake_evaluate)
    out = tmp_path / "report"
    assert main(["experiment", "guidance", "--run", str(class_run), "--weights", "0,1,3", "--n-per-class", "2",
                 "--sample-steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| w | label_accuracy" in report and "sweep.png" in report
    for name in ("grid_w0.png", "grid_w1.png", "grid_w3.png", "sweep.png", "results.json"):
        assert (out / name).exists(), name
