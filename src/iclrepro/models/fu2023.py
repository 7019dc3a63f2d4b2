"""Random-feature attention (RFA, BRFA) and the random-feature MLP of fu2023 (spec §1.1-§1.3).

Tokens are augmented, x~_i = [x_i; 1] (spec §1). With S seeds stacked on a leading axis:

    RFA     f(x) = sum_m (1/N) sum_i relu(x~_0^T W_m x~_i) <v_m, x~_i> / sqrt(M)
            W_m = bias_scale * W_0 + G_m,  G_m entries N(0, weight_std^2),  W_0 = diag(I_d, 0)
    RFMLP   f(x) = sum_k a_k relu(<w_k, z~>) / sqrt(K),  z~ = [vec(x_0..x_N); 1],  w_k ~ N(0, I/(N+2))

bias_scale = 0 is RFA, > 0 is BRFA (spec §1.2: <W_0, x~_0 x~_i^T> = <x_0, x_i>). Only
the values v (RFA) or a (RFMLP) are trained. The 1/sqrt(M) and 1/sqrt(K) make the
features' Gram matrix converge to the infinite-width kernel of spec §2.1 (the spec's
head scale only rescales the ridge penalty). Random weights are buffers that are not
saved: they are redrawn from the cell's seeds, so a model file holds the values only.
Features are float32 (computed in row chunks that bound the (rows, M, N) score tensor);
values and predictions are float64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iclrepro import store, streams

CHUNK_ENTRIES = 2**23  # score entries (rows x heads x keys) per chunk of feature rows


def augment(x: torch.Tensor) -> torch.Tensor:
    """x~ = [x; 1]: (..., d) -> (..., d+1)."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def bias_matrix(d: int) -> torch.Tensor:
    """W_0 = diag(I_d, 0), so that <W_0, x~_0 x~_i^T> = <x_0, x_i> (spec §1.2)."""
    W0 = torch.eye(d + 1)
    W0[d, d] = 0.0
    return W0


class RandomFeatures(nn.Module):
    """Shared part: frozen random weights per seed, trainable readout `v` (S, D), float64."""

    def __init__(self, width: int, seeds: int):
        super().__init__()
        self.v = nn.Parameter(torch.zeros(seeds, width, dtype=torch.float64))

    @property
    def width(self) -> int:
        return self.v.shape[-1]

    def rows_per_chunk(self, x: torch.Tensor) -> int:
        return max(1, CHUNK_ENTRIES // max(1, self.width * x.shape[-2]))

    def chunks(self, x: torch.Tensor):
        """(rows, float32 chunk of x) pairs. Callers write each chunk's result into an array
        allocated up front: results kept until the end would interleave on the heap with the
        chunks' temporaries, which then cannot be given back (figure D's paper-scale fit held
        1.3 GB for its 0.57 GB of features)."""
        step = self.rows_per_chunk(x)
        for start in range(0, len(x), step):
            yield slice(start, start + step), x[start:start + step].float()

    def features(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """Features of seed s: x (n, N+1, d) -> (n, D) float32."""
        out = x.new_empty(len(x), self.width, dtype=torch.float32)
        for rows, chunk in self.chunks(x):
            out[rows] = self.chunk_features(chunk, s)
        return out

    def chunk_features(self, x: torch.Tensor, s: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions of every seed: x (n, N+1, d) -> (S, n) float64, one chunk of features at a time."""
        out = self.v.new_empty(len(self.v), len(x))
        for s in range(len(self.v)):
            for rows, chunk in self.chunks(x):
                out[s, rows] = self.chunk_features(chunk, s).double() @ self.v[s]
        return out


class RandomFeatureAttention(RandomFeatures):
    """RFA (bias_scale = 0) or BRFA (bias_scale > 0) with M heads on d-dimensional tokens."""

    def __init__(self, d: int, M: int, weight_std: float, bias_scale: float, generators: list[torch.Generator]):
        super().__init__(M * (d + 1), len(generators))
        G = torch.stack([weight_std * torch.randn(M, d + 1, d + 1, generator=g) for g in generators])
        self.register_buffer("W", G + bias_scale * bias_matrix(d), persistent=False)   # (S, M, d+1, d+1)

    def chunk_features(self, x: torch.Tensor, s: int) -> torch.Tensor:
        tokens = augment(x)                                                     # (n, N+1, d+1)
        query, keys = tokens[:, 0], tokens[:, 1:]
        W = self.W[s]
        scores = torch.relu(torch.einsum("nd,mde,nie->nmi", query, W, keys))   # (n, M, N)
        phi = torch.einsum("nmi,nie->nme", scores, keys) / keys.shape[1]       # (n, M, d+1)
        return phi.reshape(len(x), -1) / math.sqrt(W.shape[0])


class RandomFeatureMLP(RandomFeatures):
    """Two-layer ReLU random features of width K on the flattened sequence (spec §1.3)."""

    def __init__(self, d: int, N: int, K: int, generators: list[torch.Generator]):
        super().__init__(K, len(generators))
        inputs = d * (N + 1) + 1
        w = torch.stack([torch.randn(K, inputs, generator=g) for g in generators]) / math.sqrt(N + 2)
        self.register_buffer("w", w, persistent=False)                         # (S, K, d(N+1)+1)

    def rows_per_chunk(self, x: torch.Tensor) -> int:
        return max(1, CHUNK_ENTRIES // self.width)

    def chunk_features(self, x: torch.Tensor, s: int) -> torch.Tensor:
        z = augment(x.reshape(len(x), -1))                                      # (n, d(N+1)+1)
        return torch.relu(z @ self.w[s].T) / math.sqrt(self.width)             # (n, K)


def build(spec: dict, generators: list[torch.Generator]) -> RandomFeatures:
    """The model of a cell spec; its random weights come from `generators` (one per seed)."""
    model, d = spec["model"], spec["d"]
    if model["kind"] == "rfmlp":
        return RandomFeatureMLP(d, spec["N"], model["K"], generators)
    return RandomFeatureAttention(d, model["M"], model["weight_std"], model.get("bias_scale", 0.0), generators)


def feature_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per seed for the random weights."""
    return streams.generators(seeds, "features")


def load_cell(cell_dir) -> tuple[dict, RandomFeatures]:
    """(spec, fitted model) of a cell: the random weights redrawn, the values loaded (weights_only)."""
    spec, model, _ = store.load_trained(
        cell_dir, lambda spec: build(spec, feature_generators(spec["seeds"])))
    return spec, model
