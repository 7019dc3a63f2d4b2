"""Key sequences and permutation-invariant targets of fu2023 (spec §1, §1.4).

A sample is a query x_0 and N keys x_1..x_N, all i.i.d. Unif(S^{d-1}) (spec §1), shape
(N+1, d) with the query in row 0. Every target is an average over keys of one two-token
function, f*(x) = (1/N) sum_i F(x_0, x_i), so it is invariant to permuting the keys:

    key_poly_p   (sqrt(d) <e_1, x_i>)^p             a function of the keys only
    qk_poly_p    (sqrt(d) <x_0, x_i>)^p             query-key interaction
    qk_He_p      He_p(sqrt(d) <x_0, x_i>)           probabilists' Hermite polynomial
    qk_cos       cos(sqrt(d) <x_0, x_i>)
    sum_poly_p   <x_0, S x_i>^p, S a fixed N(0, 1/d) matrix drawn from the target seed

The sqrt(d) keeps each term O(1) since <x_0, x_i> ~ N(0, 1/d) (spec §1.4, unverified in
the paper). Labels are y = f* + noise * N(0, 1). Finite samples are the paper's subject,
so training sets are data in the store: Parquet with the generating spec in the metadata.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch

from iclrepro import store, streams
from iclrepro.tasks import columns
from iclrepro.tasks.fu2023_target import Target

# The fixed matrix S of sum_poly targets comes from a named stream of its own: a plain seed
# could be a test set's (config test_seed), and S would then be that set's first rows
TARGET_STREAM = ("fu2023/sum_poly", "S")


def hermite(t: torch.Tensor, p: int) -> torch.Tensor:
    """Probabilists' Hermite He_p(t) by the three-term recurrence He_{k+1} = t He_k - k He_{k-1}."""
    previous, current = torch.ones_like(t), t
    if p == 0:
        return previous
    for k in range(1, p):
        previous, current = current, t * current - k * previous
    return current


def sum_poly_matrix(d: int) -> torch.Tensor:
    """The fixed d x d matrix S of sum_poly targets, F(x_0, x_i) = (x_0^T S x_i)^p."""
    return torch.randn(d, d, generator=streams.generator(*TARGET_STREAM), dtype=torch.float64) / math.sqrt(d)


def pair_values(target: Target, x: torch.Tensor) -> torch.Tensor:
    """F(x_0, x_i) for every key: x (n, N+1, d) -> (n, N)."""
    d = x.shape[-1]
    query, keys = x[:, 0], x[:, 1:]
    if target.kind == "key_poly":
        return (math.sqrt(d) * keys[..., 0]) ** target.p
    if target.kind == "sum_poly":
        return torch.einsum("nd,de,nie->ni", query, sum_poly_matrix(d).to(x), keys) ** target.p
    t = math.sqrt(d) * torch.einsum("nd,nid->ni", query, keys)                   # (n, N)
    if target.kind == "qk_poly":
        return t ** target.p
    if target.kind == "qk_He":
        return hermite(t, target.p)
    return torch.cos(t)


def target_values(target: Target, x: torch.Tensor) -> torch.Tensor:
    """f*(x) = (1/N) sum_i F(x_0, x_i): (n,)."""
    return pair_values(target, x).mean(-1)


def sample(d: int, N: int, rows: int, generator: torch.Generator) -> torch.Tensor:
    """`rows` sequences of N+1 tokens i.i.d. Unif(S^{d-1}), float64: (rows, N+1, d)."""
    x = torch.randn(rows, N + 1, d, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------
# Data sets as Parquet: x flattened row-major, the noiseless target f and the label y
# ---------------------------------------------------------------------------

def _schema(d: int, N: int) -> pa.Schema:
    return pa.schema([("x", pa.list_(pa.float64(), (N + 1) * d)), ("f", pa.float64()), ("y", pa.float64())])


def write_set(spec: dict, content: str, out) -> None:
    """Data stage: `spec['rows']` samples of target `spec['target']` drawn with `spec['seed']`."""
    generator = torch.Generator().manual_seed(spec["seed"])
    x = sample(spec["d"], spec["N"], spec["rows"], generator)
    f = target_values(Target.parse(spec["target"]), x)
    y = f + spec["noise"] * torch.randn(spec["rows"], generator=generator, dtype=torch.float64)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(x.numpy().reshape(-1)), x[0].numel())
    table = pa.Table.from_arrays([flat, pa.array(f.numpy()), pa.array(y.numpy())], schema=_schema(spec["d"], spec["N"]))
    store.write_parquet(table, out, spec=spec, content=content)


def _sizes(spec: dict) -> tuple[int, int]:
    """(d, N) of a fu2023 data set's spec; KeyError or ValueError if it is not one."""
    if spec["paper"] != "fu2023":
        raise ValueError(f"made for {spec['paper']}")
    return spec["d"], spec["N"]


def read_set(path, content: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, {x (n, N+1, d), f (n,), y (n,)}); raises StoreError naming the file on a mismatch."""
    table, spec, (d, N) = store.read_stored_set(path, content, _sizes, lambda sizes: _schema(*sizes),
                                                "a fu2023 data set", rows="rows")
    found = columns.tensors(table, {"x": (N + 1, d)})
    # np.array copies: torch warns on the read-only buffers Arrow hands out
    found.update({name: torch.from_numpy(np.array(table.column(name).to_numpy())) for name in ("f", "y")})
    return spec, found
