"""One-layer (multi-head) softmax attention for in-context linear regression (cui2024 spec §1).

Tokens are z_i = (x_i, y_i) in R^{d+1}; the query is z_q = (x_q, 0) and attends to the D
context tokens only. Head h reads out, at the query's label slot,

    yhat_h = sum_i softmax_i(z_i^T W^KQ_h z_q) * (r_h^T z_i),        yhat = sum_h yhat_h,

where r_h is the last row of W^O_h W^V_h. Both models below produce (W^KQ_h, r_h) and
share `attend`; they differ in how those are parameterised:

* `FullAttention`: embedding dimension p split over H heads, W^KQ_h = W^K_h^T W^Q_h with
  W^K_h, W^Q_h in R^{(p/H) x (d+1)}, so rank(W^KQ_h) <= p/H (the spec's p >= 2d condition).
* `ReducedAttention`: the theory's parameterisation, W^KQ_h = [[A_h, 0], [0, 0]] with a
  free d x d block A_h and value row r_h = (u_h, v_h). A_h = c_h I, u_h = 0 is §3's form.

Every parameter has a leading seed axis S: one module is an ensemble of S independent
models, each trained on its own data stream (losses are summed over seeds).
"""

from __future__ import annotations

import torch
from torch import nn

from iclrepro import store

EVAL_CHUNK = 2000  # prompts per forward pass at evaluation, to bound memory at large D


def attend(x: torch.Tensor, y: torch.Tensor, kq: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Prediction at the query of every prompt.

    x: (S, B, D+1, d) with the query last; y: (S, B, D+1) (y[..., -1] is ignored);
    kq: (S, H, d+1, d+1) bilinear form per head; value: (S, H, d+1) value row per head.
    Returns (S, B).
    """
    d = x.shape[-1]
    x_ctx, y_ctx, x_q = x[:, :, :-1], y[:, :, :-1], x[:, :, -1]
    # the query's label slot is 0, so only the x-columns of W^KQ act on z_q
    key_dir = torch.einsum("shef,sbf->sbhe", kq[..., :d], x_q)                 # (S, B, H, d+1)
    # The value row repeated per prompt makes both products below one product per prompt,
    # which reads x_ctx in place. Contracted with value (S, H, d+1) directly, einsum would
    # first copy x_ctx (a slice, so seed and prompt axes cannot merge) and then run S thin
    # matrix-vector products: 40 % of an eight-seed step's forward and backward.
    value_dir = value.unsqueeze(1).expand_as(key_dir)                           # (S, B, H, d+1)

    def with_context(row):   # <row_h, z_i> for every prompt, head and context token: (S, B, H, D)
        return torch.einsum("sbnd,sbhd->sbhn", x_ctx, row[..., :d]) + y_ctx.unsqueeze(2) * row[..., d:]

    scores, values = with_context(key_dir), with_context(value_dir)
    return (torch.softmax(scores, dim=-1) * values).sum(dim=(-1, -2))


class FullAttention(nn.Module):
    """Multi-head softmax attention with embedding dimension p (spec §1, model MH/SH)."""

    def __init__(self, seeds: int, d: int, H: int, p: int, init_std: float):
        super().__init__()
        if p % H:
            raise ValueError(f"heads H={H} must divide the embedding dimension p={p}")
        self.H, self.k = H, p // H
        shape = (seeds, H, self.k, d + 1)
        self.W_Q = nn.Parameter(init_std * torch.randn(shape))   # (S, H, p/H, d+1)
        self.W_K = nn.Parameter(init_std * torch.randn(shape))
        self.W_V = nn.Parameter(init_std * torch.randn(shape))
        self.W_O = nn.Parameter(init_std * torch.randn(seeds, H, self.k))  # label row of W^O

    def kq(self) -> torch.Tensor:
        return torch.einsum("shke,shkf->shef", self.W_K, self.W_Q)  # (S, H, d+1, d+1)

    def value(self) -> torch.Tensor:
        return torch.einsum("shk,shke->she", self.W_O, self.W_V)    # (S, H, d+1)

    def forward(self, x, y):
        return attend(x, y, self.kq(), self.value())


class ReducedAttention(nn.Module):
    """The theory's parameterisation: x-block A_h of W^KQ_h and value row (u_h, v_h)."""

    def __init__(self, seeds: int, d: int, H: int, init_std: float):
        super().__init__()
        self.H = H
        self.A = nn.Parameter(init_std * torch.randn(seeds, H, d, d))  # (S, H, d, d)
        self.u = nn.Parameter(init_std * torch.randn(seeds, H, d))     # (S, H, d)
        self.v = nn.Parameter(init_std * torch.randn(seeds, H))        # (S, H)

    def kq(self) -> torch.Tensor:
        return nn.functional.pad(self.A, (0, 1, 0, 1))                 # (S, H, d+1, d+1)

    def value(self) -> torch.Tensor:
        return torch.cat([self.u, self.v.unsqueeze(-1)], dim=-1)       # (S, H, d+1)

    def forward(self, x, y):
        return attend(x, y, self.kq(), self.value())


def head_signs(H: int) -> torch.Tensor:
    """+1 for the first half of the heads, -1 for the second; an unpaired last head gets +1."""
    signs = torch.ones(H)
    signs[H // 2: 2 * (H // 2)] = -1.0
    return signs


@torch.no_grad()
def identity_init(model: nn.Module, eps: float) -> None:
    """Add sign_h * eps I to the x-block of W^KQ of every head (spec §5 "opposite small identity").

    Paired heads start at +eps I and -eps I, next to the MH optimum, instead of the symmetric
    state where both heads learn the same sign. An unpaired head (SH) starts at +eps I, next
    to its optimum c* I: from pure N(0, 0.01^2) weights about one SH seed in four stalls in a
    biased minimum of the full parameterisation (c v ~ 0.65 instead of 1).
    """
    signs = head_signs(model.H).view(1, -1, 1, 1)
    if isinstance(model, ReducedAttention):
        d = model.A.shape[-1]
        model.A += eps * signs * torch.eye(d)
    else:
        k, d = model.k, model.W_Q.shape[-1] - 1
        rank = min(k, d)
        block = torch.zeros(k, d + 1)
        block[:rank, :rank] = torch.eye(rank) * eps**0.5
        model.W_Q += signs * block
        model.W_K += signs.abs() * block


def build(model_spec: dict, d: int, seeds: int) -> nn.Module:
    if model_spec["param"] == "full":
        model = FullAttention(seeds, d, model_spec["H"], model_spec["p"], model_spec["init_std"])
    else:
        model = ReducedAttention(seeds, d, model_spec["H"], model_spec["init_std"])
    if model_spec["init"] == "identity":
        identity_init(model, model_spec["identity_eps"])
    return model


def load_cell(cell_dir) -> tuple[dict, nn.Module]:
    """(spec, model) of a trained cell; the model file is loaded with weights_only=True."""
    spec, model, _ = store.load_trained(
        cell_dir, lambda spec: build(spec["model"], spec["scenario"]["d"], len(spec["seeds"])))
    return spec, model


@torch.no_grad()
def predict(model: nn.Module, prompts: dict[str, torch.Tensor]) -> torch.Tensor:
    """(S, N) predictions of every seed on N prompts, evaluated in chunks."""
    seeds, device = next(model.parameters()).shape[0], next(model.parameters()).device
    chunks = []
    for start in range(0, prompts["x"].shape[0], EVAL_CHUNK):
        x = prompts["x"][start:start + EVAL_CHUNK].to(device)
        y = prompts["y"][start:start + EVAL_CHUNK].to(device)
        chunks.append(model(x.expand(seeds, *x.shape), y.expand(seeds, *y.shape)).cpu())
    return torch.cat(chunks, dim=1)
