"""Conditioning: the MiniLM encoder against reference values, the null condition, captions, the caption bank."""
from __future__ import annotations

import pytest
import torch

from tinydiffusion.conditioning import NULL_LABEL, Cond
from tinydiffusion.conditioning.captions import CaptionBank, caption, class_prompt, describe, digit_in_prompt
from tinydiffusion.conditioning.text_encoder import get_encoder
from tinydiffusion.errors import UserError
from tinydiffusion.models import build_model

from conftest import StubEncoder, wake

# Computed once with sentence-transformers 6.2.0 (transformers 5.23.0, torch 2.13.0 CPU) loading the same
# package folder: SentenceTransformer(dir).encode(S) (pooled, L2-normalised) and output_value="token_embeddings".
REFERENCE = {
    "a thick, slanted seven": dict(
        pooled8=[-0.07828, -0.01985, -0.04127, 0.02479, -0.08593, -0.0259, 0.00798, 0.0522],
        tokens=8, token_norm=23.3644, token1=[-0.59113, 0.02695, -0.58703, 0.29642]),
    "the digit 3": dict(
        pooled8=[-0.06612, 0.0083, -0.11181, -0.07166, -0.06363, 0.06935, 0.05803, 0.01386],
        tokens=5, token_norm=20.0814, token1=[-0.7324, 0.41578, -1.02275, -0.09901]),
    "A small handwritten zero.": dict(
        pooled8=[-0.05084, 0.11063, -0.05664, 0.03837, -0.05818, -0.00585, -0.00244, 0.04154],
        tokens=8, token_norm=25.0496, token1=[-0.61287, 0.56941, -0.70561, 0.06218]),
}


def test_the_encoder_matches_sentence_transformers_on_the_same_weights():
    enc = get_encoder()
    prompts = list(REFERENCE)
    pooled = enc.sentence_embedding(prompts)  # batched together: padding must not change anything
    states, mask = enc.hidden_states(prompts)
    for i, p in enumerate(prompts):
        ref = REFERENCE[p]
        n = int(mask[i].sum())
        assert n == ref["tokens"]
        torch.testing.assert_close(pooled[i, :8], torch.tensor(ref["pooled8"]), atol=2e-5, rtol=0)
        assert abs(states[i, :n].norm().item() - ref["token_norm"]) < 1e-3
        torch.testing.assert_close(states[i, 1, :4], torch.tensor(ref["token1"]), atol=2e-5, rtol=0)


def test_an_empty_prompt_is_the_null_context_and_the_unconditional_path():
    ctx = get_encoder().encode(["", "a thin seven", "  "])
    assert not ctx.mask[0].any() and not ctx.mask[2].any() and ctx.mask[1].sum() == 5
    assert not ctx.tokens[0].any()
    net = wake(build_model("unet-small", 1, 28, channels=8, context_dim=384).eval())
    x, t = torch.randn(1, 1, 28, 28), torch.rand(1)
    uncond = net(x, t, None)
    for null in (ctx[0:1], ctx[1:2].null(), Cond(tokens=ctx.tokens[1:2], mask=torch.zeros_like(ctx.mask[1:2]))):
        torch.testing.assert_close(net(x, t, null), uncond, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(x, t, ctx[1:2]), uncond, atol=1e-3)


def test_a_prompt_naming_a_class_changes_the_conditioning():
    enc = get_encoder()
    seven, three, seven2 = enc.sentence_embedding(["a thick seven", "a thick three", "a thick 7"])
    assert (seven @ three) < (seven @ seven2)  # "seven" is nearer "7" than "three"
    net = wake(build_model("unet-small", 1, 28, channels=8, context_dim=384).eval())
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    out = net(x, t, enc.encode(["a thick seven", "a thick three"]))
    same = net(x, t, enc.encode(["a thick seven", "a thick seven"]))
    torch.testing.assert_close(out[0], same[0], atol=1e-5, rtol=1e-5)
    assert (out[1] - same[1]).abs().max() > 1e-3
    assert [digit_in_prompt(p) for p in ("a thin seven", "the digit 3", "an upright one", "a thick line")] == [7, 3, 1, None]


def stroke(width: int, shear: float = 0.0) -> torch.Tensor:
    """A 20 px tall stroke of the given width on a 28x28 canvas, its top shifted right by shear * height."""
    img = torch.zeros(1, 1, 28, 28)
    for row in range(4, 24):
        x = 12 + round(shear * (14 - row))
        img[0, 0, row, x:x + width] = 1.0
    return img


def test_captions_carry_the_measured_attributes():
    images = torch.cat([stroke(1), stroke(5), stroke(2, 0.5), stroke(2, -0.4), stroke(3)])
    labels = torch.ones(5, dtype=torch.long)
    words = describe(images, labels)
    assert "thin" in words[0] and "thick" in words[1]
    assert "slanted" in words[2] and "left-slanted" in words[3]
    assert "upright" in words[0] and "upright" in words[1]
    assert "small" in words[0] and "large" in words[2]  # box area 20 and 220 px against the class median, 100
    assert caption(7, 1, thick=2, lean=3) == "a thick, slanted seven"
    assert caption(8, 5, lean=2) == "a drawing of an upright eight"
    assert class_prompt(7) == "a handwritten 7"


def test_the_caption_bank_encodes_each_caption_once_and_drops_at_its_rate():
    images = (torch.cat([stroke(1), stroke(5)] * 10) * 255).to(torch.uint8)
    labels = torch.arange(20) % 10
    StubEncoder.calls = 0
    bank = CaptionBank(images, labels, StubEncoder())
    assert StubEncoder.calls == 1 and len(bank.prompts) == len(set(bank.prompts)) == 10 * 6 * 3 * 4 * 3
    g = torch.Generator().manual_seed(0)
    rows = bank.indices(torch.arange(20), g, keep=1.0)
    for i, r in enumerate(rows.tolist()):  # every attribute kept: the caption names the label and the thickness
        prompt = bank.prompts[r]
        assert digit_in_prompt(prompt) == i % 10 and ("thin" if i % 2 == 0 else "thick") in prompt
    ctx = bank.batch(torch.arange(20).repeat(250), g, drop=0.1)  # 5000 captions
    assert abs((~ctx.mask.any(1)).float().mean().item() - 0.1) < 0.02
    want, got = StubEncoder().encode([class_prompt(3)]), bank.class_context(torch.tensor([3]))
    L = want.tokens.shape[1]
    assert torch.equal(got.tokens[:, :L], want.tokens) and got.mask.sum() == L


def test_cond_slices_moves_concatenates_and_nulls_every_field_alike():
    labels = Cond(labels=torch.tensor([3, 1, 4]))
    assert len(labels) == 3 and labels[1:].labels.tolist() == [1, 4]
    assert labels.null().labels.tolist() == [NULL_LABEL] * 3
    assert labels.drop(torch.tensor([True, False, True])).labels.tolist() == [NULL_LABEL, 1, NULL_LABEL]
    assert Cond.cat(labels, labels.null()).labels.tolist() == [3, 1, 4] + [NULL_LABEL] * 3
    tokens = Cond(tokens=torch.ones(2, 3, 4), mask=torch.tensor([[True, True, False], [True, False, False]]))
    assert tokens.masked().tokens[1].sum() == 4  # only the real token of row 1 is left
    null = tokens.null()
    assert null.tokens.shape == (2, 0, 4) and null.mask.shape == (2, 0)
    both = Cond.cat(tokens, null)  # padded to the longest prompt with masked zeros
    assert both.tokens.shape == (4, 3, 4) and not both.mask[2:].any() and not both.tokens[2:].any()
    dropped = tokens.drop(torch.tensor([False, True]))
    assert dropped.mask[0].tolist() == [True, True, False] and not dropped.mask[1].any() and not dropped.tokens[1].any()
    assert tokens.to("cpu")[0:1].tokens.shape == (1, 3, 4)
    with pytest.raises(ValueError, match="batch sizes"):
        Cond(labels=torch.zeros(2, dtype=torch.long), tokens=torch.zeros(3, 1, 4), mask=torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="together"):
        Cond(tokens=torch.zeros(2, 1, 4))


def test_a_class_model_refuses_a_prompt_and_a_text_model_refuses_labels():
    class_net = build_model("unet-small", 1, 28, num_classes=10, channels=8).eval()
    text_net = build_model("unet-small", 1, 28, channels=8, context_dim=384).eval()
    x, t = torch.randn(1, 1, 28, 28), torch.rand(1)
    with pytest.raises(UserError, match="class labels, not a text prompt"):
        class_net(x, t, Cond(tokens=torch.zeros(1, 2, 384), mask=torch.ones(1, 2, dtype=torch.bool)))
    with pytest.raises(UserError, match="reads prompts, not class labels"):
        text_net(x, t, Cond(labels=torch.tensor([3])))
