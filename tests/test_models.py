"""The networks: shapes, attention placement, scale-shift conditioning, the null label, bad sizes."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.conditioning import NULL_LABEL, Cond
from tinydiffusion.errors import UserError
from tinydiffusion.models import build_model
from tinydiffusion.models.layers import ResBlock, SelfAttention

from conftest import wake


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


def test_a_patch_size_that_does_not_divide_the_image_is_refused():
    with pytest.raises(UserError, match="patch_size 2 does not divide the image size 27"):
        build_model("unet-patch", 1, 27)


def test_the_null_label_is_the_unconditional_path_of_the_unet():
    net = wake(build_model("unet-small", 1, 28, num_classes=10, channels=8).eval())
    x, t = torch.randn(3, 1, 28, 28), torch.rand(3)
    torch.testing.assert_close(net(x, t, None), net(x, t, Cond(labels=torch.full((3,), NULL_LABEL))))
    assert not torch.allclose(net(x, t, Cond(labels=torch.tensor([1, 2, 3]))), net(x, t, None))
