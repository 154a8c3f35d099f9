"""Training captions made from the data: varied templates over the label, plus attributes measured on each
image (stroke thickness, slant, size) put into words, so "a thick, slanted seven" means something.

The caption set is finite (templates x labels x attribute words), so every distinct caption is encoded once
by the text encoder into a bank; a training batch only gathers rows of that bank.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserError
from .cond import Cond

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {a}: "a"/"an" for the word after it; {adjs}: "small, thick, slanted " or ""; {word}: seven; {digit}: 7.
TEMPLATES = ("{adjs}{word}", "{a} {adjs}{word}", "{a} {adjs}handwritten {digit}", "the {adjs}digit {word}",
             "{a} {adjs}{digit}", "{a} drawing of {a} {adjs}{word}")
# Attribute words; index 0 = not mentioned (a medium value, or dropped for this caption).
THICKNESS = ("", "thin", "thick")
SLANT = ("", "left-slanted", "upright", "slanted")  # MNIST leans right, so plain "slanted" is a right slant
SIZE = ("", "small", "large")
# Buckets, from MNIST's training set: stroke width quartiles 1.65 / 2.33 px; shear quantiles -0.07 (25 %),
# 0.10 (50 %), 0.29 (75 %). The middle of each range gets no word.
THIN_BELOW, THICK_ABOVE = 1.7, 2.3
LEFT_BELOW, UPRIGHT_WITHIN, RIGHT_ABOVE = -0.15, 0.06, 0.3
SMALL_BELOW, LARGE_ABOVE = 0.8, 1.2  # bounding-box area / the median of its class


def stroke_width(images01: torch.Tensor) -> torch.Tensor:
    """Mean stroke width in pixels, 2 * ink area / ink perimeter (a stroke of width w and length l has area
    w l and perimeter 2 (w + l)). images01 (N, 1, H, W) in [0, 1] -> (N,)."""
    ink = (images01[:, 0] >= 0.5).float()  # (N, H, W)
    padded = torch.nn.functional.pad(ink, (1, 1, 1, 1))  # so ink at the border has its edge counted
    edges = (padded[:, 1:] - padded[:, :-1]).abs().sum((1, 2)) + (padded[:, :, 1:] - padded[:, :, :-1]).abs().sum((1, 2))
    return 2 * ink.sum((1, 2)) / edges.clamp(min=1)


def slant(images01: torch.Tensor) -> torch.Tensor:
    """Shear dx/dy of the ink from its second moments, cov(x, y) / var(y) with y pointing up: > 0 when the
    top leans right. (N, 1, H, W) -> (N,)."""
    w = images01[:, 0].float()  # (N, H, W) ink weights
    H, W = w.shape[-2:]
    mass = w.sum((1, 2)).clamp(min=1e-6)
    up = -torch.arange(H, dtype=w.dtype)[None, :, None]  # row index, negated: y points up
    x = torch.arange(W, dtype=w.dtype)[None, None, :]
    dy = up - (w * up).sum((1, 2), keepdim=True) / mass[:, None, None]
    dx = x - (w * x).sum((1, 2), keepdim=True) / mass[:, None, None]
    return (w * dx * dy).sum((1, 2)) / (w * dy * dy).sum((1, 2)).clamp(min=1e-6)


def box_area(images01: torch.Tensor) -> torch.Tensor:
    """Area of the bounding box of the ink (pixels >= 0.5). (N, 1, H, W) -> (N,)."""
    ink = images01[:, 0] >= 0.5

    def extent(any_ink):  # (N, L) bool -> (N,) last - first + 1, 0 when empty
        i = torch.arange(any_ink.shape[1])
        first, last = torch.where(any_ink, i, 10**6).min(1).values, torch.where(any_ink, i, -1).max(1).values
        return (last - first + 1).clamp(min=0).float()

    return extent(ink.any(2)) * extent(ink.any(1))


def attribute_codes(images01: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 3) word indices into THICKNESS, SLANT, SIZE. Size is relative to the median of the image's class
    within `images01`, so a "large one" is a large 1, not a large digit."""
    width, shear, area = stroke_width(images01), slant(images01), box_area(images01)
    thick = torch.where(width < THIN_BELOW, 1, torch.where(width > THICK_ABOVE, 2, 0))
    lean = torch.where(shear < LEFT_BELOW, 1, torch.where(shear.abs() < UPRIGHT_WITHIN, 2,
                                                          torch.where(shear > RIGHT_ABOVE, 3, 0)))
    ratio = torch.ones_like(area)
    for c in labels.unique():
        sel = labels == c
        ratio[sel] = area[sel] / area[sel].median().clamp(min=1)
    size = torch.where(ratio < SMALL_BELOW, 1, torch.where(ratio > LARGE_ABOVE, 2, 0))
    return torch.stack([thick, lean, size], dim=1)


def describe(images01: torch.Tensor, labels: torch.Tensor) -> list[list[str]]:
    """The attribute words of each image, e.g. [["thick", "slanted"], ["thin"]]."""
    return [[words[c] for words, c in zip((SIZE, THICKNESS, SLANT), (k[2], k[0], k[1])) if c]
            for k in attribute_codes(images01, labels).tolist()]


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou8" and not next_word.startswith("one") else "a"


def caption(label: int, template: int, thick: int = 0, lean: int = 0, size: int = 0) -> str:
    """One caption, e.g. caption(7, 1, thick=2, lean=3) = "a thick, slanted seven"."""
    adjs = [w for w in (SIZE[size], THICKNESS[thick], SLANT[lean]) if w]
    text = TEMPLATES[template].format(a="{a}", adjs=", ".join(adjs) + " " if adjs else "",
                                      word=NUMBER_WORDS[label], digit=str(label))
    while "{a}" in text:  # each article agrees with the word that follows it
        head, tail = text.split("{a}", 1)
        text = head + _article(tail.split()[0]) + tail
    return text


def class_prompt(label: int) -> str:
    """The prompt used for a plain class label on a text model."""
    return caption(label, 2)


def digit_in_prompt(prompt: str) -> int | None:
    """The first digit a prompt names ("a thin seven" -> 7, "the digit 3" -> 3), or None."""
    for token in re.findall(r"[a-z]+|\d", prompt.lower()):
        if token.isdigit():
            return int(token)
        if token in NUMBER_WORDS:
            return NUMBER_WORDS.index(token)
    return None


class CaptionBank:
    """Every caption of (label, template, thickness, slant, size) encoded once: Cond (K, L, D).
    Row index = (((label * templates + template) * 3 + thick) * 4 + slant) * 3 + size."""

    SHAPE = (len(NUMBER_WORDS), len(TEMPLATES), len(THICKNESS), len(SLANT), len(SIZE))

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor, encoder):
        if labels is None or int(labels.max()) >= len(NUMBER_WORDS):
            raise UserError("Text captions need digit labels 0-9 (MNIST); this dataset has none.")
        self.labels, self.encoder = labels, encoder
        self.codes = attribute_codes(images_uint8.float() / 255, labels)  # (N, 3)
        self.prompts = [caption(*combo) for combo in torch.cartesian_prod(
            *(torch.arange(n) for n in self.SHAPE)).tolist()]
        self.context = encoder.encode(self.prompts)  # (K, L, D)

    def indices(self, idx: torch.Tensor, generator: torch.Generator | None = None, keep: float = 0.5) -> torch.Tensor:
        """Bank rows for images idx: a random template and each measured attribute kept with prob. `keep`."""
        B = len(idx)
        template = torch.randint(len(TEMPLATES), (B,), generator=generator)
        codes = self.codes[idx] * (torch.rand(B, 3, generator=generator) < keep)  # (B, 3), 0 = unmentioned
        return self.row(self.labels[idx], template, codes[:, 0], codes[:, 1], codes[:, 2])

    @classmethod
    def row(cls, label, template, thick=0, lean=0, size=0):
        """Bank row of a caption (ints or (B,) tensors), in the order of torch.cartesian_prod over SHAPE."""
        row = label
        for value, n in zip((template, thick, lean, size), cls.SHAPE[1:]):
            row = row * n + value
        return row

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None, drop: float = 0.0) -> Cond:
        """Cond for images idx; a fraction `drop` becomes the null condition (classifier-free training)."""
        ctx = self.context[self.indices(idx, generator)]
        return ctx.drop(torch.rand(len(idx), generator=generator) < drop)

    def class_context(self, labels: torch.Tensor) -> Cond:
        """Cond of class_prompt(label) for each label (the grids during training)."""
        return self.context[self.row(labels.long(), 2)]  # template 2 (class_prompt), no attributes


def caption_bank(cfg, data) -> CaptionBank:
    """The bank for a text run (cfg.data.text), after checking that the model can read 384-d token states."""
    from .text_encoder import HIDDEN, get_encoder

    if cfg.model.context_dim != HIDDEN:
        raise UserError(f"Text conditioning needs model.context_dim={HIDDEN} (MiniLM's width); "
                        f"add --set model.context_dim={HIDDEN}.")
    if cfg.data.conditional:
        raise UserError("Set data.conditional=false for a text run: the prompts carry the labels.")
    return CaptionBank(data.images, data.labels, get_encoder())
