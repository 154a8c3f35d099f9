"""How a denoiser reads a Cond, shared by the U-Net and the DiT: class labels through an embedding with a null row,
text through the token states (with a learned null token always attended to) and their mean added to the
embedding, and, for a guidance-distilled (LCM) network, the guidance scale w through a zero-initialised MLP on its
sinusoidal embedding (Luo et al. 2023, sec. 4.2; Meng et al. 2023's w-conditioning). One home, so both backbones
treat the null condition, and a wrong kind of condition, the same way."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UserError
from .layers import timestep_embedding

GUIDANCE_FREQUENCIES = 64  # sinusoidal features of w (embedded as 1000 w, like a time in [0, 1])


class Conditioned(nn.Module):
    """Mixin: call `setup_condition(num_classes, context_dim, emb_dim)` in __init__, then `context(cond, B,
    device)` for cross-attention and `condition_embedding(cond, like)` to add to the time embedding."""

    def setup_condition(self, num_classes: int, context_dim: int, emb_dim: int, guidance_embedding: bool = False) -> None:
        if num_classes and context_dim:
            raise UserError("A network takes class labels or text, not both; set num_classes or context_dim.")
        self.num_classes, self.context_dim = num_classes, context_dim
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # row K: the null class
        if context_dim:
            self.context_norm = nn.LayerNorm(context_dim)
            self.null_token = nn.Parameter(torch.randn(1, 1, context_dim) * 0.02)  # (1, 1, D)
            self.pooled_emb = nn.Linear(context_dim, emb_dim)
        self.guidance_mlp = None
        if guidance_embedding:  # the last layer starts at zero: a student built on a teacher's weights is the teacher
            self.guidance_mlp = nn.Sequential(nn.Linear(GUIDANCE_FREQUENCIES, emb_dim), nn.SiLU(),
                                              nn.Linear(emb_dim, emb_dim))
            nn.init.zeros_(self.guidance_mlp[-1].weight)
            nn.init.zeros_(self.guidance_mlp[-1].bias)

    def context(self, cond, B: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(states (B, 1 + L, D), mask (B, 1 + L)): the learned null token first, always attended to."""
        if not self.context_dim:
            return None
        tokens = None if cond is None else cond.tokens
        if tokens is None and cond is not None and cond.labels is not None:
            raise UserError("This text model reads prompts, not class labels; give it a prompt's token states.")
        if tokens is None:  # unconditional: no tokens besides the null token
            tokens = torch.zeros(B, 0, self.context_dim, device=device)
            mask = torch.zeros(B, 0, dtype=torch.bool, device=device)
        elif tokens.shape[-1] != self.context_dim:
            raise UserError(f"This text model needs {self.context_dim}-d token states as cond "
                            "(encode the prompt with tinydiffusion.conditioning.text_encoder).")
        else:
            mask = cond.mask
        tokens = torch.cat([self.null_token.expand(B, 1, -1).to(tokens.dtype), tokens], dim=1)
        mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=device), mask.bool()], dim=1)
        return self.context_norm(tokens), mask

    def condition_embedding(self, cond, emb: torch.Tensor) -> torch.Tensor:
        """emb (B, E) plus the condition's embedding: the label's row (NULL_LABEL or no cond: the null row), or
        the prompt's mean token state through a Linear (the empty prompt: its bias)."""
        if self.label_emb is not None:
            labels = None if cond is None else cond.labels
            if labels is None and cond is not None and cond.tokens is not None:
                raise UserError("This model is class-conditional; give it class labels, not a text prompt.")
            if labels is None:
                labels = torch.full(emb.shape[:1], self.num_classes, dtype=torch.long, device=emb.device)
            labels = labels.long()
            emb = emb + self.label_emb(labels.where(labels >= 0, self.num_classes))  # NULL_LABEL -> the null row
        tokens = None if cond is None else cond.tokens
        if self.context_dim and tokens is not None:
            mask = cond.mask[..., None].to(tokens.dtype)  # (B, L, 1)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, L, D) -> (B, D); null -> 0
            emb = emb + self.pooled_emb(pooled)
        elif self.context_dim:
            emb = emb + self.pooled_emb.bias  # the pooled null prompt is the zero vector
        if self.guidance_mlp is not None:  # w (B,), default 1: the conditional prediction
            w = None if cond is None else cond.guidance
            w = torch.ones(emb.shape[:1], device=emb.device) if w is None else w.to(emb.device)
            feats = timestep_embedding(w.float(), GUIDANCE_FREQUENCIES).to(emb.dtype)  # (B,) -> (B, F)
            emb = emb + self.guidance_mlp(feats)
        return emb
