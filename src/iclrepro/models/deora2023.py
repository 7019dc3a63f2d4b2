"""One multi-head self-attention layer with a fixed read-out (deora2023 spec §1).

    Phi(theta; X) = scale(H) * sum_h u^T softmax(X W_h X^T) X v_h,     scale = 1/sqrt(H) or 1/H

X (T, d) is one sequence, the softmax acts row-wise on the (T, T) scores, W_h (d, d) is
head h's combined key-query matrix and v_h (d,) its value vector; both are trained. The
read-out u (T,) is fixed: mean pooling 1/T (spec default) or the first token e_1.

Random init (spec §1): W_h = 0 (uniform attention), v_h ~ N(0, sigma_v^2 I_d). The
one-step init takes one GD step on the logistic risk from there, of size eta0 * sqrt(H)
(the W-gradient of a head scales like 1/sqrt(H), so each head moves by O(1)), on W only
or on every parameter.

Tensors carry a leading seed axis S: one module is an ensemble of S layers.
"""

from __future__ import annotations

import torch
from torch import nn

from iclrepro import store


def head_scale(H: int, scale: str) -> float:
    return H**-0.5 if scale == "1/sqrt(H)" else 1.0 / H


def readout(T: int, mode: str, dtype=torch.float64) -> torch.Tensor:
    """The fixed read-out u over token positions (T,)."""
    if mode == "first":
        return nn.functional.one_hot(torch.tensor(0), T).to(dtype)
    return torch.full((T,), 1.0 / T, dtype=dtype)


def attention(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """softmax(X W_h X^T) for W (S, H, d, d), X (S, n, T, d): (S, n, H, T, T)."""
    S, n, T, d = X.shape
    # one large matrix product for every (sequence, token) and head, then the small T x T scores
    XW = (X.reshape(S, n * T, d) @ W.transpose(1, 2).reshape(S, d, -1)).reshape(S, n, T, -1, d)  # (S, n, T, H, d)
    return torch.softmax(torch.einsum("snthe,snue->snhtu", XW, X), dim=-1)


def output(W: torch.Tensor, V: torch.Tensor, X: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
    """Phi for W (S, H, d, d), V (S, H, d), X (S, n, T, d), u (T,): (S, n).

    One seed at a time: at the quick scale's H = 64 one seed's intermediate (n T, H d) float64
    product is 8 MB, and all three seeds at once ran the ensemble 25 % slower than three
    single-seed runs (cache misses); a step here is tens of ms, so the loop costs nothing.
    """
    return torch.cat([seed_output(W[s:s + 1], V[s:s + 1], X[s:s + 1], u, scale) for s in range(W.shape[0])])


def seed_output(W: torch.Tensor, V: torch.Tensor, X: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
    values = torch.einsum("sntd,shd->snth", X, V)                               # (S, n, T, H)
    pooled = torch.einsum("t,snhtk->snhk", u, attention(W, X))                  # u^T softmax: (S, n, H, T)
    return scale * torch.einsum("snhk,snkh->sn", pooled, values)


def logistic(margins: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(-y Phi)), stable for large margins of either sign."""
    return nn.functional.softplus(-margins)


class MultiHeadAttention(nn.Module):
    """S independent layers with H heads: W (S, H, d, d) and V (S, H, d)."""

    def __init__(self, seeds: int, H: int, d: int, T: int, sigma_v: float, scale: str = "1/sqrt(H)",
                 read: str = "mean", dtype=torch.float64):
        super().__init__()
        self.H, self.scale = H, head_scale(H, scale)
        self.W = nn.Parameter(torch.zeros(seeds, H, d, d, dtype=dtype))        # (S, H, d, d)
        self.V = nn.Parameter(sigma_v * torch.randn(seeds, H, d, dtype=dtype))  # (S, H, d)
        self.register_buffer("u", readout(T, read, dtype))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Phi (S, n) for sequences X (S, n, T, d)."""
        return output(self.W, self.V, X, self.u, self.scale)

    def risk(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Empirical logistic risk per seed (S,) on X (S, n, T, d), y (S, n)."""
        return logistic(y * self(X)).mean(-1)

    def flat(self) -> torch.Tensor:
        """theta per seed, concat_h(vec W_h, v_h) in block order [W; V]: (S, H (d^2 + d))."""
        return torch.cat([self.W.flatten(1), self.V.flatten(1)], dim=-1)


def one_step(model: MultiHeadAttention, X: torch.Tensor, y: torch.Tensor, eta0: float, params: str) -> None:
    """In place: theta_1 = theta_0 - eta0 sqrt(H) grad risk, on W only or on all parameters (spec §1)."""
    chosen = [model.W] if params == "W" else [model.W, model.V]
    grads = torch.autograd.grad(model.risk(X, y).sum(), chosen)
    with torch.no_grad():
        for parameter, grad in zip(chosen, grads, strict=True):
            parameter -= eta0 * model.H**0.5 * grad


def build(spec: dict, seeds: int) -> MultiHeadAttention:
    mix, model = spec["mixture"], spec["model"]
    return MultiHeadAttention(seeds, model["H"], mix["d"], mix["T"], model["sigma_v"], model["scale"],
                              model["readout"])


def load_cell(cell_dir) -> tuple[dict, MultiHeadAttention, dict[int, dict]]:
    """(spec, trained layer, {step: state} snapshots) of a cell; weights_only loading."""
    return store.load_trained(cell_dir, lambda spec: build(spec, len(spec["seeds"])))
