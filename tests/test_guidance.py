"""Classifier-free guidance, proved on Gaussian data with its exact denoiser: w = 0 and 1, the same step for every
prediction type, one batched call, rescale and clipping, guided sampling lands on the extrapolated Gaussian."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.conditioning import NULL_LABEL, Cond
from tinydiffusion.config import SampleConfig
from tinydiffusion.denoiser import Denoiser
from tinydiffusion.errors import UserError
from tinydiffusion.generate import denoiser_for, generate
from tinydiffusion.guidance import ClassifierFreeGuidance
from tinydiffusion.paths import make_path

from gaussian_oracle import GaussianOracle, ode_solution

LINEAR = make_path("ddpm-linear", 1000)
FLOW = make_path("flow")
STD = torch.tensor([0.3, 0.6, 0.9, 0.5]).reshape(1, 2, 2)
MUS = torch.tensor([[0.5, -0.3, 0.2, -0.6], [-0.4, 0.1, 0.6, 0.3], [0.0, 0.0, 0.0, 0.0]]).reshape(3, 1, 2, 2)
NULL = 2  # labels 0 and 1 are classes; MUS[2] is the null label's "unconditional" Gaussian, mean 0


class ClassOracle(torch.nn.Module):
    """The exact denoiser of x0 | c ~ N(MUS[c], STD^2), as a network net(x, t, cond); counts its calls.
    NULL_LABEL (the null condition) selects MUS[NULL]."""

    def __init__(self, prediction="eps", path=LINEAR):
        super().__init__()
        self.oracles = [GaussianOracle(path, mu, STD, prediction) for mu in MUS]
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


def denoiser(prediction="eps", clip=False, path=LINEAR):
    return Denoiser(ClassOracle(prediction, path), path, prediction, clip_x0=clip)


def inputs(B=4, t=500, seed=0):
    """x_t, the continuous time of step t of the DDPM table, and labels."""
    g = torch.Generator().manual_seed(seed)
    times = torch.full((B,), (t + 1) / 1000, dtype=torch.float64)
    return torch.randn(B, 1, 2, 2, generator=g), times, Cond(labels=torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_w1_is_the_conditional_and_w0_the_unconditional_prediction(prediction):
    d = denoiser(prediction)
    x, t, c = inputs()
    cond, uncond = d(x, t, c), d(x, t, c.null())
    for w, want in ((1.0, cond), (0.0, uncond), (1.0 + 1e-7, cond)):  # 1 + 1e-7 runs the batched two-branch path
        got = ClassifierFreeGuidance(d, w)(x, t, c)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", [LINEAR, FLOW])
@pytest.mark.parametrize("w", [3.0, -0.5])
def test_guidance_combines_the_two_predictions_the_same_way_for_every_prediction_and_path(w, path):
    x, t, c = inputs(t=300)
    results = []
    for prediction in ("eps", "x0", "v", "u"):
        d = denoiser(prediction, path=path)
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
    alpha, sigma = LINEAR.schedule.sqrt_alpha_bar[50], LINEAR.schedule.sqrt_one_minus_alpha_bar[50]
    torch.testing.assert_close(x, alpha * clipped + sigma * eps, atol=1e-5, rtol=1e-5)  # (x0, eps) still explain x_t
    with pytest.raises(UserError, match="between 0 and 1"):
        ClassifierFreeGuidance(d, 3.0, rescale=1.5)


@pytest.mark.parametrize("prediction, path, sampler", [("eps", LINEAR, "ddim"), ("v", LINEAR, "ddim"),
                                                      ("u", FLOW, "heun")])
def test_guided_sampling_of_gaussians_lands_on_the_extrapolated_gaussian(prediction, path, sampler):
    """Equal-variance Gaussians: E[x0|x_t] is affine in the mean, so guidance with w samples N(mu_w, STD^2),
    mu_w = mu_u + w (mu_c - mu_u); the deterministic chain must follow that Gaussian's exact ODE, on any path."""
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(2, 1, 2, 2, generator=g)
    labels = torch.tensor([0, 1])
    cfg = SampleConfig(sampler=sampler, steps=250 if sampler == "ddim" else 50, clip_x0=False)
    for w in (0.0, 1.0, 2.5):
        got = generate(denoiser_for(ClassOracle(prediction, path), path, prediction, cfg, guidance=w), cfg, 2,
                       (1, 2, 2), cond=Cond(labels=labels), generator=torch.Generator().manual_seed(1))
        mu_w = MUS[NULL] + w * (MUS[labels] - MUS[NULL])  # (2, 1, 2, 2)
        want = torch.stack([ode_solution(path, mu_w[i], STD, x_T[i:i + 1], 1.0, 0.0)[0] for i in range(2)])
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
