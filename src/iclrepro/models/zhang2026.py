"""One softmax self-attention layer that performs one step of normalised GD (zhang2026 spec §2).

Tokens (spec §2.1), with D = 2d and blocks ordered [z-part; w-part]:

    context token i: h_i = [z_i; w]   (z_i = y_i x_i)        query token: h_q = [x_q; w]

Every token carries the same w-slot. Keys and values come from the N context tokens only
(a query key would add -<w, x_q> to the softmax). The layer updates every token h:

    f(h) = h + sum_i softmax_i(h^T W^KQ h_i) W^PV h_i,

so W^KQ's rows index the updated token and its columns the key, with no 1/sqrt(D) scale.
The Theorem-1 weights (spec §2.1) put Q = -c I in the (w-row, z-column) block of W^KQ and
V = eta I in the same block of W^PV: the logit is -c <w, z_i> and the w-slot becomes
w + eta sum_i p_i(w) z_i, one NGD step on exp(-c .) (c = 1: the exponential loss).

`SoftmaxLayer` has a leading seed axis S: one module is an ensemble of S layers. It trains
either the two d x d blocks Q and V (`full_blocks=False`, spec §2.4 default) or the full
2d x 2d matrices. Looping one layer T times (spec §2.3) is `unroll`.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from iclrepro import store


def embed(z: torch.Tensor, x_q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Token matrix of prompts: z (..., N, d), x_q (..., d), w (..., d) -> (..., N+1, 2d)."""
    N = z.shape[-2]
    w_slots = w.unsqueeze(-2).expand(*w.shape[:-1], N + 1, w.shape[-1])       # (..., N+1, d)
    return torch.cat([torch.cat([z, x_q.unsqueeze(-2)], dim=-2), w_slots], dim=-1)


def w_slot(H: torch.Tensor) -> torch.Tensor:
    """The query token's w-slot: (..., N+1, 2d) -> (..., d), the model's output w."""
    return H[..., -1, H.shape[-1] // 2:]


def attention(h: torch.Tensor, ctx: torch.Tensor, W_KQ: torch.Tensor) -> torch.Tensor:
    """Softmax weights of tokens h (S, B, M, 2d) over context keys ctx (S, B, N, 2d): (S, B, M, N)."""
    logits = (h @ W_KQ.unsqueeze(1)) @ ctx.transpose(-1, -2)                  # (S, B, M, N)
    return torch.softmax(logits, dim=-1)


def attend(h: torch.Tensor, ctx: torch.Tensor, W_KQ: torch.Tensor, W_PV: torch.Tensor) -> torch.Tensor:
    """h + sum_i softmax_i(h^T W^KQ h_i) W^PV h_i for tokens h (S, B, M, 2d); W (S, 2d, 2d)."""
    values = ctx @ W_PV.transpose(-1, -2).unsqueeze(1)                        # (S, B, N, 2d)
    return h + attention(h, ctx, W_KQ) @ values                               # (S, B, M, 2d)


def layer(H: torch.Tensor, W_KQ: torch.Tensor, W_PV: torch.Tensor) -> torch.Tensor:
    """One layer on every token of H (S, B, N+1, 2d); the last token is the query."""
    return attend(H, H[..., :-1, :], W_KQ, W_PV)


def query_layer(H: torch.Tensor, W_KQ: torch.Tensor, W_PV: torch.Tensor) -> torch.Tensor:
    """`layer` for weights that vanish outside the (w-row, z-column) blocks, in O(N) per prompt.

    Then a token's logits w^T Q z_i and update V sum_i p_i z_i depend only on its own w-slot
    (keys and values enter through their z-parts alone), z-parts never change and equal
    w-slots stay equal: computing the query and copying its w-slot gives every token exactly.
    """
    d = H.shape[-1] // 2
    w = w_slot(attend(H[..., -1:, :], H[..., :-1, :], W_KQ, W_PV))                 # (S, B, d)
    return torch.cat([H[..., :d], w.unsqueeze(-2).expand(*H.shape[:-1], d)], dim=-1)


def block_structured(*matrices: torch.Tensor) -> bool:
    """True when every (..., 2d, 2d) matrix is zero outside its (w-row, z-column) block."""
    return all(torch.equal(W, place(relevant_block(W))) for W in matrices)


def unroll(H: torch.Tensor, W_KQ: torch.Tensor, W_PV: torch.Tensor, steps) -> Iterator[tuple[int, torch.Tensor]]:
    """Apply the same layer repeatedly (spec §2.2-§2.3), yielding (t, H_t) for t in `steps`.

    Every token is updated each layer; block-structured weights take the exact O(N) path.
    Tokens must start with equal w-slots, as `embed` makes them.
    """
    step = query_layer if block_structured(W_KQ, W_PV) else layer
    wanted = set(steps)
    if 0 in wanted:
        yield 0, H
    for t in range(1, max(wanted) + 1):
        H = step(H, W_KQ, W_PV)
        if t in wanted:
            yield t, H


def construction(d: int, eta: float, temperature: float = 1.0, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """Theorem-1 weights (spec §2.1): W^KQ, W^PV (2d, 2d) with Q = -c I and V = eta I."""
    eye = torch.eye(d, dtype=dtype)
    return place(-temperature * eye), place(eta * eye)


def place(block: torch.Tensor) -> torch.Tensor:
    """A (..., d, d) block in the (w-row, z-column) position of a (..., 2d, 2d) zero matrix."""
    d = block.shape[-1]
    return nn.functional.pad(block, (0, d, d, 0))


def relevant_block(W: torch.Tensor) -> torch.Tensor:
    """The (w-row, z-column) block of (..., 2d, 2d): Q of W^KQ, V of W^PV."""
    return block(W, 1, 0)


def block(W: torch.Tensor, row: int, column: int) -> torch.Tensor:
    """Block (row, column) of (..., 2d, 2d), 0 = z-part and 1 = w-part."""
    d = W.shape[-1] // 2
    return W[..., row * d:(row + 1) * d, column * d:(column + 1) * d]


# The blocks of the full matrices that the one-step loss on the query's w-slot sees, when
# every token carries the same w_0 (spec §3): W^KQ's (z, w) and (w, w) blocks add one
# logit to every key, which the softmax cancels, and W^PV's z-rows write only z-parts, so
# those four blocks get exactly zero gradient and keep their initial values.
SEEN_BLOCKS = {"W^KQ": ((0, 0), (1, 0)), "W^PV": ((1, 0), (1, 1))}


class SoftmaxLayer(nn.Module):
    """S independent layers f_theta (spec §2.1, §2.4); trainable Q, V or the full W^KQ, W^PV."""

    def __init__(self, seeds: int, d: int, init_std: float, full_blocks: bool = False, dtype=torch.float64):
        super().__init__()
        self.d, self.full_blocks = d, full_blocks
        size = 2 * d if full_blocks else d
        shape = (seeds, size, size)
        self.W_KQ = nn.Parameter(init_std * torch.randn(shape, dtype=dtype))  # (S, 2d, 2d) or Q (S, d, d)
        self.W_PV = nn.Parameter(init_std * torch.randn(shape, dtype=dtype))  # (S, 2d, 2d) or V (S, d, d)

    def kq(self) -> torch.Tensor:
        return self.W_KQ if self.full_blocks else place(self.W_KQ)            # (S, 2d, 2d)

    def pv(self) -> torch.Tensor:
        return self.W_PV if self.full_blocks else place(self.W_PV)            # (S, 2d, 2d)

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        """Every token after one layer: (S, B, N+1, 2d) -> (S, B, N+1, 2d)."""
        return layer(H, self.kq(), self.pv())

    def query_output(self, H: torch.Tensor) -> torch.Tensor:
        """The query's w-slot after one layer, computing only the query token: (S, B, d)."""
        return w_slot(attend(H[..., -1:, :], H[..., :-1, :], self.kq(), self.pv()))


def build(model_spec: dict, d: int, seeds: int) -> SoftmaxLayer:
    return SoftmaxLayer(seeds, d, model_spec["init_std"], model_spec["full_blocks"])


def load_cell(cell_dir) -> tuple[dict, SoftmaxLayer, dict[int, dict]]:
    """(spec, trained layer, {step: state} snapshots) of a cell; weights_only loading."""
    return store.load_trained(
        cell_dir, lambda spec: build(spec["model"], spec["distribution"]["d"], len(spec["seeds"])))
