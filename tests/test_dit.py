"""The Diffusion Transformer: adaLN-Zero starts every block at the identity and the net at zero, shapes for every
patch size and channel count, conditions (labels, tokens, the null condition), forward-mode AD, bad sizes."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.cli import main
from tinydiffusion.conditioning import NULL_LABEL, Cond
from tinydiffusion.errors import UserError
from tinydiffusion.models import build_model, count_parameters
from tinydiffusion.models.dit import DiT, attention, sincos_2d

from conftest import tiny_config, wake


def small(**kw) -> DiT:
    torch.manual_seed(0)
    return DiT(**{**dict(in_channels=1, image_size=28, channels=32, depth=2, heads=4, patch_size=4), **kw})


def test_every_adaln_zero_block_is_the_identity_and_a_fresh_net_outputs_zeros():
    net = small(num_classes=10)
    h = torch.randn(3, 49, 32)
    c = torch.randn(3, 32)
    for block in net.blocks:
        assert torch.equal(block(h, c), h)
    x, t = torch.randn(3, 1, 28, 28), torch.rand(3)
    assert torch.equal(net(x, t, Cond(labels=torch.tensor([0, 5, NULL_LABEL]))), torch.zeros_like(x))


@pytest.mark.parametrize("patch", [1, 2, 4, 7])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (4, 8)])  # MNIST, CIFAR, a 4-channel latent
def test_the_output_has_the_input_shape_for_every_patch_size_and_channel_count(patch, channels, size):
    if size % patch:
        with pytest.raises(UserError, match="does not divide the image size"):
            small(in_channels=channels, image_size=size, patch_size=patch)
        return
    net = wake(small(in_channels=channels, image_size=size, patch_size=patch))
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.rand(2))
    assert out.shape == x.shape and out.abs().sum() > 0


def test_the_position_embedding_tells_every_patch_apart():
    pos = sincos_2d(32, 7)  # (49, 32)
    assert pos.shape == (49, 32)
    assert torch.cdist(pos, pos).add(torch.eye(49) * 1e3).min() > 0.1


def test_written_out_attention_equals_the_fused_kernel_with_and_without_a_mask():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False]])
    fused = torch.nn.functional.scaled_dot_product_attention
    torch.testing.assert_close(attention(q, k, v), fused(q, k, v))
    torch.testing.assert_close(attention(q, k, v, mask), fused(q, k, v, attn_mask=mask[:, None, None, :]))


def test_the_label_reaches_the_output_on_the_second_step_and_the_null_label_is_the_unconditional_path():
    """At step 0 every gradient into a modulation is zero (the output layer is zero), so one step moves only the
    output layer and the net still ignores the label; from the second step on the label changes the output."""
    net = small(num_classes=10)
    x, t, labels = torch.randn(4, 1, 28, 28), torch.rand(4), Cond(labels=torch.arange(4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def step_and_spread():
        opt.zero_grad()
        (net(x, t, labels) - x).square().mean().backward()
        opt.step()
        with torch.no_grad():
            a, b = (net(x, t, Cond(labels=torch.full((4,), k))) for k in (0, 7))
            return (a - b).abs().max().item()

    assert step_and_spread() == 0.0
    assert step_and_spread() > 1e-4
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, Cond(labels=torch.full((4,), NULL_LABEL))), net(x, t, None))


def test_text_reaches_the_output_through_cross_attention_and_the_empty_prompt_is_unconditional():
    net = wake(small(context_dim=16))
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    tokens, mask = torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        prompt = net(x, t, Cond(tokens=tokens, mask=mask))
        empty = net(x, t, Cond(tokens=tokens, mask=torch.zeros(2, 3, dtype=torch.bool)))
        assert (prompt - empty).abs().max() > 1e-4
        torch.testing.assert_close(empty, net(x, t, None))
    with pytest.raises(UserError, match="reads prompts, not class labels"):
        net(x, t, Cond(labels=torch.zeros(2, dtype=torch.long)))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # torch's own forward-AD decompositions
def test_forward_mode_ad_through_the_net_matches_finite_differences():
    net = wake(small(num_classes=10)).double()
    x, t = torch.randn(2, 1, 28, 28, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    dx, dt = torch.randn_like(x), torch.ones_like(t)
    cond = Cond(labels=torch.tensor([3, NULL_LABEL]))
    f = lambda x_, t_: net(x_, t_, cond)  # noqa: E731
    _, tangent = torch.func.jvp(f, (x, t), (dx, dt))
    h = 1e-7  # central differences in float64; t enters through sin(1000 t f), so its derivatives are large
    fd = (f(x + h * dx, t + h * dt) - f(x - h * dx, t - h * dt)) / (2 * h)
    torch.testing.assert_close(tangent, fd, rtol=1e-5, atol=1e-7)


def test_heads_that_do_not_divide_the_width_are_refused_in_one_sentence():
    with pytest.raises(UserError, match=r"must be divisible by the heads \(model.heads = 5\)"):
        small(heads=5)


def test_the_registered_tiny_dit_has_about_the_unet_presets_parameter_count():
    dit, unet = build_model("dit-tiny", 1, 28), build_model("unet-patch", 1, 28, scale_shift=True)
    assert abs(count_parameters(dit) / count_parameters(unet) - 1) < 0.1  # 1.27M against 1.19M


def test_a_dit_trains_samples_and_reloads_through_the_cli(tmp_path, capsys):
    from tinydiffusion.train import train

    cfg = tiny_config("model.name=dit-tiny", "model.channels=16", "model.depth=1", "model.heads=2",
                      "model.patch_size=4", steps=2, preset="mnist-dit")
    train(cfg, tmp_path / "run", device="cpu", quiet=True)
    assert main(["sample", "--run", str(tmp_path / "run"), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0
    code = main(["train", "--preset", "mnist-dit", "--steps", "1", "--out", str(tmp_path / "bad"),
                 "--set", "model.patch_size=3"])
    assert code == 2 and "patch_size 3 does not divide the image size 28" in capsys.readouterr().err


@pytest.mark.parametrize("path, prediction, sampler", [
    ("ddpm-linear", "eps", "ddpm"), ("vp-cosine", "v", "dpm++2m"), ("flow", "u", "heun")])
def test_a_class_dit_trains_and_samples_with_guidance_on_every_kind_of_path(tmp_path, path, prediction, sampler):
    from tinydiffusion.runs import sample_conditional
    from tinydiffusion.train import train

    cfg = tiny_config("model.name=dit-tiny", "model.channels=16", "model.depth=1", "model.heads=2",
                      "model.patch_size=4", f"diffusion.path={path}", f"diffusion.prediction={prediction}",
                      "diffusion.t_sampling=uniform", "diffusion.weighting=none", f"sample.sampler={sampler}",
                      "sample.spacing=uniform", steps=2, preset="mnist-dit-class")
    train(cfg, tmp_path / "run", device="cpu", quiet=True)
    x, labels = sample_conditional(tmp_path / "run", 4, labels=torch.tensor([0, 3, 7, 9]), guidance=3.0, steps=3)
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all() and labels.tolist() == [0, 3, 7, 9]


def test_a_u_net_option_given_to_a_dit_names_the_options_it_takes():
    with pytest.raises(UserError, match="has no option scale_shift; it takes channels, context_dim, depth, guidance_embedding, heads"):
        build_model("dit-tiny", 1, 28, scale_shift=True)
