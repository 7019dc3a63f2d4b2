"""A small GPT-2-style decoder for in-context sparse regression (chen2024 spec §2).

A prompt of K points becomes 2K - 1 tokens in R^{d+2}: for each point a query token
(x_k, 0, 0) followed by an example token (x_k, y_k, 1) (the last one is never read). A
linear read-in to the width D, learned positions, L causal blocks, and a linear read-out
predict y_k at every query token from the k - 1 examples before it (the prefix framing
of Garg et al.). Unlike Garg's separate x- and y-tokens, an example token carries x_k and
y_k together, as in the theory's stacked Z (spec §2), so one attention layer can form
sum_i y_i x_i; with separate tokens a quick-scale model sat on the predict-0 plateau
(loss = E||w*||^2) for 2,000 Adam steps.

A block is pre-LayerNorm GPT-2: h + Attn(LN(h)), then h + MLP(LN(h)). Settings:

* attention "softmax": causal scaled dot-product softmax attention (GPT-2);
* attention "linear":  the theory's linear attention (spec §2), scores q.k / (keys seen)
  with no softmax, so a head computes (1/n) sum_i (q^T k_i) v_i over the visible tokens;
* mlp / layernorm off with attention "linear" is the theory's attention-only model.

`head_mask` (S, L, H) multiplies each head's output before the output projection, so any
set of heads can be switched off at evaluation time (spec §4). Every parameter has a
leading seed axis S (models/ensemble.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from iclrepro import store
from iclrepro.models import ensemble

ATTENTIONS = ("softmax", "linear")
ALL_TOKENS = slice(None)
QUERY_TOKENS = slice(None, None, 2)   # token 2k is point k's query token


@dataclass(frozen=True)
class Settings:
    d: int              # input dimension
    points: int         # K = n + 1 points per prompt (n examples and the query)
    width: int          # D
    layers: int         # L
    heads: int          # H
    mlp: bool = True
    layernorm: bool = True
    attention: str = "softmax"
    init_std: float = 0.02

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r} (softmax or linear)")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")

    @property
    def tokens(self) -> int:
        return 2 * self.points - 1


def tokens(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Interleaved tokens of prompts x (..., K, d), y (..., K): (..., 2K - 1, d + 2).

    Query token of point k: (x_k, 0, 0); example token: (x_k, y_k, 1), placed after the
    query, so the prediction at query k sees exactly the k - 1 examples before it.
    """
    zeros = torch.zeros_like(y).unsqueeze(-1)
    queries = torch.cat([x, zeros, zeros], dim=-1)                                  # (..., K, d+2)
    examples = torch.cat([x, y.unsqueeze(-1), torch.ones_like(zeros)], dim=-1)       # (..., K, d+2)
    paired = torch.stack([queries, examples], dim=-2)                                # (..., K, 2, d+2)
    return paired.reshape(*x.shape[:-2], 2 * x.shape[-2], x.shape[-1] + 2)[..., :-1, :]


class Block(nn.Module):
    def __init__(self, seeds: int, s: Settings):
        super().__init__()
        self.s = s
        residual_std = s.init_std / (2 * s.layers) ** 0.5  # GPT-2: residual projections scaled by depth
        self.ln_attn = ensemble.LayerNorm(seeds, s.width) if s.layernorm else nn.Identity()
        self.qkv = ensemble.Linear(seeds, s.width, 3 * s.width, s.init_std)
        self.proj = ensemble.Linear(seeds, s.width, s.width, residual_std)
        if s.mlp:
            self.ln_mlp = ensemble.LayerNorm(seeds, s.width) if s.layernorm else nn.Identity()
            self.fc = ensemble.Linear(seeds, s.width, 4 * s.width, s.init_std)
            self.fc_out = ensemble.Linear(seeds, 4 * s.width, s.width, residual_std)

    def heads(self, h: torch.Tensor, rows: slice = ALL_TOKENS) -> torch.Tensor:
        """Each head's output before the projection at the tokens `rows`, each attending causally
        to every token up to its own: (S, B, T, D) -> (S, B, H, R, D/H)."""
        S, B, T, D = h.shape
        q, k, v = self.qkv(h).reshape(S, B, T, 3, self.s.heads, D // self.s.heads).permute(3, 0, 1, 4, 2, 5)
        q = q[..., rows, :]
        positions = torch.arange(T, device=h.device)
        visible = positions <= positions[rows, None]                                    # (R, T)
        if self.s.attention == "softmax":
            flat = [t.reshape(S * B, self.s.heads, t.shape[-2], -1) for t in (q, k, v)]
            return nn.functional.scaled_dot_product_attention(*flat, attn_mask=visible).reshape(q.shape)
        seen = visible.sum(-1, keepdim=True).to(h.dtype)                                # (R, 1) keys per token
        scores = (q @ k.transpose(-1, -2)).masked_fill(~visible, 0.0) / seen           # (S, B, H, R, T)
        return scores @ v

    def forward(self, h: torch.Tensor, mask: torch.Tensor, rows: slice = ALL_TOKENS) -> torch.Tensor:
        """h (S, B, T, D) -> the new residual stream at the tokens `rows` (S, B, R, D); mask (S, H)
        of this layer's heads."""
        per_head = self.heads(self.ln_attn(h), rows) * mask[:, None, :, None, None]    # (S, B, H, R, D/H)
        h = h[..., rows, :]
        h = h + self.proj(per_head.transpose(2, 3).reshape(h.shape))
        if self.s.mlp:
            h = h + self.fc_out(nn.functional.gelu(self.fc(self.ln_mlp(h))))
        return h


class Transformer(nn.Module):
    """S independent decoders; `forward` predicts y_k at every x_k-token: (S, B, K)."""

    def __init__(self, seeds: int, s: Settings):
        super().__init__()
        self.s = s
        self.read_in = ensemble.Linear(seeds, s.d + 2, s.width, s.init_std)
        self.positions = nn.Parameter(s.init_std * torch.randn(seeds, 1, s.tokens, s.width))
        self.blocks = nn.ModuleList(Block(seeds, s) for _ in range(s.layers))
        self.ln_out = ensemble.LayerNorm(seeds, s.width) if s.layernorm else nn.Identity()
        self.read_out = ensemble.Linear(seeds, s.width, 1, s.init_std)
        self.register_buffer("head_mask", torch.ones(seeds, s.layers, s.heads))

    def hidden(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Residual stream at the K query tokens after the read-in and after each block: L + 1
        tensors (S, B, K, D).

        z is (B, T, d+2) shared by all seeds, or (S, B, T, d+2). Nothing reads an example
        token's state after the last block, so the last block runs at the query tokens only
        (its MLP is two thirds of a block's arithmetic).
        """
        if z.dim() == 3:
            z = z.expand(self.head_mask.shape[0], *z.shape)
        h = self.read_in(z) + self.positions[:, :, :z.shape[-2]]
        states = [h[..., QUERY_TOKENS, :]]
        *earlier, last = self.blocks
        for layer, block in enumerate(earlier):
            h = block(h, self.head_mask[:, layer])
            states.append(h[..., QUERY_TOKENS, :])
        return states + [last(h, self.head_mask[:, -1], QUERY_TOKENS)]

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Predictions from the query tokens' states: (S, B, K, D) -> (S, B, K)."""
        return self.read_out(self.ln_out(h)).squeeze(-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.readout(self.hidden(z)[-1])


# (prompt, seed) rows per evaluation pass. On a CPU the activations of 512 rows stay in the
# cache: 3x faster than one pass over 4,000 quick-scale prompts with one seed, and with 16 seeds
# 2.6x faster than passes of 512 prompts (8,192 rows). A GPU needs large passes to fill it. One
# pass over a paper-scale test set (10,000 prompts, 3 seeds, D = 256) would hold tens of GB.
EVAL_ROWS = {"cpu": 512, "cuda": 4096}


def moved(prompts: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in prompts.items()}


def passes(model: Transformer, x: torch.Tensor) -> list[slice]:
    """The prompt ranges (of x's first axis) of the evaluation passes, EVAL_ROWS (prompt, seed) rows each."""
    chunk = max(1, EVAL_ROWS[x.device.type] // len(model.head_mask))
    return [slice(start, start + chunk) for start in range(0, len(x), chunk)]


def predict(model: Transformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Predictions (S, B, K) for prompts x (B, K, d), y (B, K), pass by pass (the tokens too: at
    the paper scale those of the 50,000 probe prompts take 0.3 GB)."""
    with torch.no_grad():
        return torch.cat([model(tokens(x[rows], y[rows])) for rows in passes(model, x)], 1)


def build(model_spec: dict, d: int, points: int, seeds: int) -> Transformer:
    return Transformer(seeds, Settings(d=d, points=points, **model_spec))


def load_cell(cell_dir) -> tuple[dict, Transformer]:
    """(spec, trained ensemble) of a cell; weights_only loading, head mask all ones."""
    spec, model, _ = store.load_trained(
        cell_dir, lambda spec: build(spec["model"], spec["task"]["d"], spec["task"]["n"] + 1, len(spec["seeds"])))
    return spec, model.eval()
