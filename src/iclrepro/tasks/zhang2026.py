"""Linearly separable in-context classification prompts of zhang2026 (spec §1.1, §4 E5).

A prompt holds N labelled context examples and one query: x of shape (N+1, d) with the
query in the last row, labels y = sign(<w*, x>) of shape (N+1,), the task vector
w* ~ Unif(S^{d-1}) and the starting point w_0 that the transformer's w-slot carries. The
data are noiseless, so every prompt is separable through the origin. One `Distribution`
covers the training distribution and every out-of-distribution family of spec E5:

* x: gaussian N(0, Sigma); sphere Unif(sqrt(d) S^{d-1}) (same E||x||^2 as the Gaussian);
  mixture +/-mu + N(0, I) with mu = mixture_mean * w*, an even mix of the two clusters
* kappa: Sigma = diag(kappa^{(i-1)/(d-1)}) (E5 b; the sphere and the mixture ignore it)
* scale: x -> scale * x (E5 c)
* margin_gap: resample any x with |<w*, x>| < gap (spec §1.1 margin filter)
* w0_norm: the starting point, w_0 = w0_norm * Unif(S^{d-1}) (E5 e; 0 gives w_0 = 0)

Only z_i = y_i x_i reaches the model's context tokens (spec §1.1); `context` forms them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from iclrepro import store
from iclrepro.tasks import columns
from iclrepro.tasks.zhang2026_distribution import FAMILIES, Distribution  # noqa: F401 (re-exported)

MAX_RESAMPLING_ROUNDS = 1000  # a margin filter that rejects almost everything fails loudly


def _unit(n: int, d: int, generator: torch.Generator, device) -> torch.Tensor:
    v = torch.randn(n, d, generator=generator, dtype=torch.float64, device=device)
    return v / v.norm(dim=-1, keepdim=True)


def _inputs(dist: Distribution, w_star: torch.Tensor, rows: int, generator, device) -> torch.Tensor:
    """`rows` inputs per prompt, before the margin filter: (n, rows, d)."""
    n, d = w_star.shape
    kw = dict(generator=generator, dtype=torch.float64, device=device)
    noise = torch.randn(n, rows, d, **kw)
    if dist.x == "sphere":
        x = noise / noise.norm(dim=-1, keepdim=True) * d**0.5
    elif dist.x == "mixture":
        side = torch.randint(0, 2, (n, rows, 1), generator=generator, device=device) * 2.0 - 1.0
        x = side * dist.mixture_mean * w_star.unsqueeze(1) + noise
    else:
        x = noise * torch.as_tensor(dist.variances(), device=device).sqrt()
    return dist.scale * x


def sample(dist: Distribution, n: int, generator: torch.Generator, device="cpu") -> dict[str, torch.Tensor]:
    """n prompts in float64: x (n, N+1, d), y (n, N+1), w_star (n, d), w0 (n, d).

    Inputs closer than margin_gap to the hyperplane of w* are redrawn (whole rows, in
    rounds) until none is left, so the stream stays a pure function of the generator.
    """
    w_star = _unit(n, dist.d, generator, device)
    x = _inputs(dist, w_star, dist.N + 1, generator, device)
    for _ in range(MAX_RESAMPLING_ROUNDS):
        close = torch.einsum("nkd,nd->nk", x, w_star).abs() < dist.margin_gap       # (n, N+1)
        if not close.any():
            break
        x = torch.where(close.unsqueeze(-1), _inputs(dist, w_star, dist.N + 1, generator, device), x)
    else:
        raise ValueError(f"margin_gap={dist.margin_gap} rejects almost every input of {dist}")
    y = torch.sign(torch.einsum("nkd,nd->nk", x, w_star))
    y = torch.where(y == 0, torch.ones_like(y), y)  # a point on the hyperplane (probability 0)
    w0 = dist.w0_norm * _unit(n, dist.d, generator, device)
    return {"x": x, "y": y, "w_star": w_star, "w0": w0}


def context(prompts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, x_q, y_q): z_i = y_i x_i of the context (..., N, d), the query and its label."""
    x, y = prompts["x"], prompts["y"]
    return y[..., :-1, None] * x[..., :-1, :], x[..., -1, :], y[..., -1]


# ---------------------------------------------------------------------------
# Test sets as Parquet: float64 fixed-size list columns, spec in the metadata
# ---------------------------------------------------------------------------

def _schema(d: int, N: int) -> pa.Schema:
    return pa.schema([
        ("x", pa.list_(pa.float64(), (N + 1) * d)),
        ("y", pa.list_(pa.float64(), N + 1)),
        ("w_star", pa.list_(pa.float64(), d)),
        ("w0", pa.list_(pa.float64(), d)),
    ])


def _shapes(d: int, N: int) -> dict[str, tuple[int, ...]]:
    return {"x": (N + 1, d), "y": (N + 1,), "w_star": (d,), "w0": (d,)}


def to_table(prompts: dict[str, torch.Tensor]) -> pa.Table:
    n, rows, d = prompts["x"].shape
    columns = []
    for name in _shapes(d, rows - 1):
        values = np.ascontiguousarray(prompts[name].detach().cpu().numpy(), dtype=np.float64)
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values[0].size))
    return pa.Table.from_arrays(columns, schema=_schema(d, rows - 1))


def write_test_set(spec: dict, content: str, out) -> None:
    """Data stage: `spec['prompts']` prompts of `spec['distribution']` with the spec's seed."""
    dist = Distribution(**spec["distribution"])
    prompts = sample(dist, spec["prompts"], torch.Generator().manual_seed(spec["seed"]))
    store.write_parquet(to_table(prompts), out, spec=spec, content=content)


def read_test_set(path, content: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, prompts) of a test set; raises StoreError naming the file on any mismatch."""
    table, spec, dist = store.read_stored_set(path, content, lambda spec: Distribution(**spec["distribution"]),
                                             lambda dist: _schema(dist.d, dist.N), "a zhang2026 test set",
                                             rows="prompts")
    return spec, columns.tensors(table, _shapes(dist.d, dist.N))
