"""Cond: the one type a network is conditioned with, for any kind of condition.

A batch of B conditions holds any of: class labels (B,), prompt token states (B, L, D) with their mask (B, L),
control images (B, C, H, W) in [-1, 1] with their per-row scale (B,) (ControlNet, models/controlnet.py), and the
guidance scale (B,) a guidance-distilled (LCM) network is asked for. Samplers, guidance and batching only slice,
move, concatenate and null it, so they never need to know which kinds it carries; each network reads the fields it
was built for.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

NULL_LABEL = -1  # "no class": every class network maps it to its learned null embedding


@dataclass(frozen=True, eq=False)
class Cond:
    """labels (B,) int64, NULL_LABEL = unconditional; tokens (B, L, D) with mask (B, L), True = a real token
    (a row without any is the empty prompt, the unconditional text branch); control (B, C, H, W) maps in [-1, 1] with
    control_scale (B,) float, the multiplier of the ControlNet's residuals (0 = the base network alone); guidance
    (B,) float, the scale w of a network that takes w as an input (an LCM student, train/distill.py; None = w 1,
    the plain conditional prediction). Fields not given are None. The null condition keeps the control (guidance
    acts on the labels or prompt, the map stays in both branches) unless asked to drop it: null(control=True)."""

    labels: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    control: torch.Tensor | None = None
    control_scale: torch.Tensor | None = None
    guidance: torch.Tensor | None = None

    def __post_init__(self):
        if (self.tokens is None) != (self.mask is None):
            raise ValueError("Cond needs tokens and mask together.")
        if self.tokens is not None and (self.tokens.dim() != 3 or self.tokens.shape[:2] != self.mask.shape):
            raise ValueError(f"Cond needs tokens (B, L, D) and mask (B, L); got {tuple(self.tokens.shape)} "
                             f"and {tuple(self.mask.shape)}.")
        if (self.control is None) != (self.control_scale is None):
            raise ValueError("Cond needs control and control_scale together.")
        if self.control is not None and (self.control.dim() != 4 or self.control_scale.shape != self.control.shape[:1]):
            raise ValueError(f"Cond needs control (B, C, H, W) and control_scale (B,); got "
                             f"{tuple(self.control.shape)} and {tuple(self.control_scale.shape)}.")
        if self.guidance is not None and self.guidance.dim() != 1:
            raise ValueError(f"Cond needs guidance (B,); got {tuple(self.guidance.shape)}.")
        sizes = {len(v) for v in self._tensors().values()}
        if len(sizes) > 1:
            raise ValueError(f"Cond fields have different batch sizes: {sorted(sizes)}.")

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def _map(self, fn) -> "Cond":
        return Cond(**{k: fn(v) for k, v in self._tensors().items()})

    def __len__(self) -> int:
        return len(next(iter(self._tensors().values())))

    def __getitem__(self, index) -> "Cond":
        return self._map(lambda v: v[index])

    def to(self, device) -> "Cond":
        return self._map(lambda v: v.to(device))

    def masked(self) -> "Cond":
        """Token states of masked positions zeroed, so padding and dropped prompts carry nothing."""
        if self.tokens is None:
            return self
        return replace(self, tokens=self.tokens * self.mask[..., None])

    def null(self, control: bool = False) -> "Cond":
        """The unconditional counterpart of the same batch: null labels, prompts without tokens; the control map is
        kept unless control=True (then its scale is 0: the base network's prediction)."""
        out = self
        if control and self.control is not None:
            out = replace(out, control_scale=torch.zeros_like(self.control_scale))
        if self.labels is not None:
            out = replace(out, labels=torch.full_like(self.labels, NULL_LABEL))
        if self.tokens is not None:
            out = replace(out, tokens=self.tokens[:, :0], mask=self.mask[:, :0])
        return out

    def drop(self, where: torch.Tensor) -> "Cond":
        """The rows where `where` (B,) is True replaced by the null condition (classifier-free training); the control
        map stays (ControlNet training drops the base's condition so the model learns from the map alone)."""
        out = self
        if self.labels is not None:
            out = replace(out, labels=self.labels.masked_fill(where.to(self.labels.device), NULL_LABEL))
        if self.tokens is not None:
            out = replace(out, mask=self.mask & ~where.to(self.mask.device)[:, None]).masked()
        return out

    @staticmethod
    def cat(*parts: "Cond") -> "Cond":
        """Concatenate along the batch; token states are padded to the longest length with masked zeros."""
        out = {}
        if parts[0].labels is not None:
            out["labels"] = torch.cat([p.labels for p in parts])
        if parts[0].tokens is not None:
            L = max(p.tokens.shape[1] for p in parts)
            out["tokens"] = torch.cat([F.pad(p.tokens, (0, 0, 0, L - p.tokens.shape[1])) for p in parts])  # (B, L, D)
            out["mask"] = torch.cat([F.pad(p.mask, (0, L - p.mask.shape[1]), value=False) for p in parts])
        if parts[0].control is not None:
            out["control"] = torch.cat([p.control for p in parts])  # (B1 + B2 + ..., C, H, W)
            out["control_scale"] = torch.cat([p.control_scale for p in parts])
        if parts[0].guidance is not None:
            out["guidance"] = torch.cat([p.guidance for p in parts])
        return Cond(**out)
