"""Infinite-width kernels and sample-complexity references of fu2023 (spec §2).

Inputs are sequences x (n, N+1, d), query in row 0, float64. With W entries N(0, s^2)
the scores (<W, u>, <W, u'>), u = x~_0 x~_i^T, are jointly Gaussian with standard
deviations a = s ||u||, b = s ||u'|| and correlation c = <u, u'> / (||u|| ||u'||), where
<u, u'> = <x~_0, x~'_0> <x~_i, x~'_j>. Hence (spec §2.1):

    E[relu(g) relu(g')] = a b kappa(c),   kappa(c) = (sqrt(1 - c^2) + (pi - arccos c) c) / (2 pi)
    K_RFA(x, x')  = (1/N^2) sum_{i,j} <x~_i, x~'_j> a_i b_j kappa(c_ij)
    K_MLP(z, z')  = |z~| |z~'| / (N+2) kappa(cos(z~, z~'))
    K_BRFA        = the same sum with the scores' means bias * <x_0, x_i> (no closed form:
                    Gauss-Hermite over one score, the other's conditional E[relu] exactly)

These are the limits of the feature Gram matrices of models.fu2023 as M, K -> infinity.
`harmonics_dim` gives the reference sample sizes of spec §2.3 (heuristics, drawn as such)
and RATE the slope of the excess-risk bound sqrt(B/n) of spec §2.2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy.special import ndtr

from iclrepro import store

RATE = -0.5            # log-log slope of the bound sqrt(B(f*)/n) (spec §2.2)
HERMITE_NODES = 64     # quadrature nodes of the BRFA kernel
CHUNK_ENTRIES = 2**21  # key-pair entries (rows x n' x N x N) per kernel chunk: bounds the temporaries


def kappa(c: torch.Tensor) -> torch.Tensor:
    """Order-1 arc-cosine function of a correlation c in [-1, 1]."""
    c = c.clamp(-1.0, 1.0)
    return (torch.sqrt(1 - c**2) + (math.pi - torch.arccos(c)) * c) / (2 * math.pi)


def _augment(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _pair_terms(x: torch.Tensor, x2: torch.Tensor, s: float):
    """Per key pair (n, n', N, N): <x~_i, x~'_j>, the score sds a_i, b_j and the correlation c_ij."""
    t, t2 = _augment(x), _augment(x2)
    queries = t[:, 0] @ t2[:, 0].T                                               # (n, n')
    keys = torch.einsum("aid,bjd->abij", t[:, 1:], t2[:, 1:])                    # (n, n', N, N)
    norm = t[:, 0].norm(dim=-1)[:, None] * t[:, 1:].norm(dim=-1)                 # (n, N)
    norm2 = t2[:, 0].norm(dim=-1)[:, None] * t2[:, 1:].norm(dim=-1)              # (n', N)
    outer = norm[:, None, :, None] * norm2[None, :, None, :]
    return keys, s * norm[:, None, :, None], s * norm2[None, :, None, :], queries[..., None, None] * keys / outer


def _chunked(kernel, x: torch.Tensor, x2: torch.Tensor, **kwargs) -> torch.Tensor:
    """kernel(x, x2) (n, n'), `rows` of x at a time, into one matrix allocated up front: kept
    chunk results interleaved with each chunk's freed temporaries fragment the heap, and
    K_RFA of 2,048 paper-sized sequences took 8.5 GB that way (0.6 GB this way, bitwise the same)."""
    rows = max(1, CHUNK_ENTRIES // (len(x2) * (x.shape[1] - 1) ** 2))
    K = torch.empty(len(x), len(x2), dtype=torch.float64)
    for i in range(0, len(x), rows):
        K[i:i + rows] = kernel(x[i:i + rows], x2, **kwargs)
    return K


def _rfa(x, x2, weight_std):
    keys, a, b, c = _pair_terms(x, x2, weight_std)
    return (keys * a * b * kappa(c)).mean(dim=(-1, -2))


def rfa_kernel(x: torch.Tensor, x2: torch.Tensor, weight_std: float) -> torch.Tensor:
    """K_RFA (n, n') of zero-mean query-key weights (spec §2.1)."""
    return _chunked(_rfa, x, x2, weight_std=weight_std)


def relu_mean(m: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """E[relu(m + sd Z)] = m Phi(m/sd) + sd phi(m/sd), Z ~ N(0, 1); relu(m) where sd = 0."""
    safe = sd.clamp_min(1e-300)
    r = m / safe
    value = m * torch.from_numpy(ndtr(r.numpy())) + safe * torch.exp(-0.5 * r**2) / math.sqrt(2 * math.pi)
    return torch.where(sd > 0, value, torch.relu(m))


def _brfa(x, x2, weight_std, bias_scale):
    keys, a, b, c = _pair_terms(x, x2, weight_std)
    mean = bias_scale * torch.einsum("nd,nid->ni", x[:, 0], x[:, 1:])[:, None, :, None, None]
    mean2 = bias_scale * torch.einsum("nd,nid->ni", x2[:, 0], x2[:, 1:])[None, :, None, :, None]
    nodes, weights = np.polynomial.hermite_e.hermegauss(HERMITE_NODES)        # weight exp(-z^2/2)
    z = torch.from_numpy(nodes)
    a, b, c = a[..., None], b[..., None], c[..., None]
    inner = relu_mean(mean2 + b * c * z, b * torch.sqrt((1 - c**2).clamp_min(0)))
    expectation = (torch.relu(mean + a * z) * inner) @ torch.from_numpy(weights / math.sqrt(2 * math.pi))
    return (keys * expectation).mean(dim=(-1, -2))


def brfa_kernel(x: torch.Tensor, x2: torch.Tensor, weight_std: float, bias_scale: float) -> torch.Tensor:
    """K_BRFA (n, n'): score means bias_scale * <x_0, x_i> (spec §1.2, §2.1); numerical."""
    return _chunked(_brfa, x, x2, weight_std=weight_std, bias_scale=bias_scale)


def mlp_kernel(x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """K_MLP (n, n') of ReLU features with weights N(0, I/(N+2)) on z~ = [vec(x); 1] (spec §2.1)."""
    z, z2 = _augment(x.reshape(len(x), -1)), _augment(x2.reshape(len(x2), -1))
    norms = z.norm(dim=-1)[:, None] * z2.norm(dim=-1)[None, :]
    return norms / (x.shape[1] + 1) * kappa((z @ z2.T) / norms)           # N + 2 = x.shape[1] + 1


def harmonics_dim(d: int, p: int) -> int:
    """Number of spherical harmonics of degree <= p on S^{d-1} (spec §2.3)."""
    total = 1
    for k in range(1, p + 1):
        total += round((2 * k + d - 2) / k * math.comb(k + d - 3, d - 2))
    return total


def write(spec: dict, content: str, out) -> None:
    """Theory stage: reference sample sizes per degree p (RFA: dim_{<=p}(d), RFMLP: dim_{<=p}(d(N+1)))
    and the bound's slope RATE, as rows model, p, samples, slope."""
    d, N = spec["d"], spec["N"]
    rows = [{"model": model, "p": p, "samples": float(harmonics_dim(dim, p)), "slope": RATE}
            for p in spec["p"] for model, dim in (("RFA", d), ("RFMLP", d * (N + 1)))]
    store.write_parquet(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), out, spec=spec, content=content)
