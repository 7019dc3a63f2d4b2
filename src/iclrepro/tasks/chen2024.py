"""In-context sparse linear regression prompts of chen2024 (spec §1).

A prompt holds K = n + 1 points: x_k ~ N(0, I_d), y_k = <w*, x_k> + eps_k with
eps_k ~ N(0, sigma^2), and an s-sparse task vector w* drawn as in Garg et al.: w ~ N(0, I_d)
with all but s uniformly chosen coordinates zeroed, no renormalisation (E||w*||^2 = s).
The `sign` prior keeps only the signs of those s entries (+/-1): the same support and
E||w*||^2, but every nonzero |w*_j| is 1, the minimum signal that PtO's bound assumes.
Every prefix is a prompt: point k is the query of the k - 1 examples before it, so one
prompt scores every context length n = 0..K-1. Excess risk is measured against the
noiseless target <w*, x_k>.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from iclrepro import store
from iclrepro.tasks import columns

PRIORS = ("gaussian", "sign")


@dataclass(frozen=True)
class Task:
    d: int
    s: int
    sigma: float
    n: int  # largest number of in-context examples; prompts hold n + 1 points
    prior: str = "gaussian"  # w*'s nonzero entries: one of PRIORS

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise ValueError(f"prior {self.prior!r} must be one of {PRIORS}")
        if not 1 <= self.s <= self.d:
            raise ValueError(f"sparsity s={self.s} must be between 1 and d={self.d}")
        if self.n < 1 or self.sigma < 0:
            raise ValueError(f"need n >= 1 and sigma >= 0, got n={self.n}, sigma={self.sigma}")


def sample(task: Task, prompts: int, generator: torch.Generator, device="cpu") -> dict[str, torch.Tensor]:
    """x (B, K, d), y (B, K) noisy labels, w_star (B, d), all float32."""
    kw = dict(generator=generator, device=device)
    w = torch.randn(prompts, task.d, **kw)
    if task.prior == "sign":  # the same draws, so both priors share supports and signs
        w = w.sign()
    keep = torch.rand(prompts, task.d, **kw).argsort(-1)[:, :task.s]                 # s random coordinates
    w_star = torch.zeros_like(w).scatter(-1, keep, w.gather(-1, keep))
    x = torch.randn(prompts, task.n + 1, task.d, **kw)
    y = torch.einsum("bkd,bd->bk", x, w_star) + task.sigma * torch.randn(prompts, task.n + 1, **kw)
    return {"x": x, "y": y, "w_star": w_star}


def clean(prompts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Noiseless targets <w*, x_k>: (B, K)."""
    return torch.einsum("bkd,bd->bk", prompts["x"], prompts["w_star"])


# ---------------------------------------------------------------------------
# Test sets as Parquet: float32 fixed-size list columns, spec in the metadata
# ---------------------------------------------------------------------------

def _shapes(task: Task) -> dict[str, tuple[int, ...]]:
    return {"x": (task.n + 1, task.d), "y": (task.n + 1,), "w_star": (task.d,)}


def _schema(task: Task) -> pa.Schema:
    return pa.schema([(name, pa.list_(pa.float32(), int(np.prod(shape)))) for name, shape in _shapes(task).items()])


def write_test_set(spec: dict, content: str, out) -> None:
    """Data stage: `spec['prompts']` prompts of `spec['task']` drawn with the spec's seed."""
    task = Task(**spec["task"])
    prompts = sample(task, spec["prompts"], torch.Generator().manual_seed(spec["seed"]))
    columns = [pa.FixedSizeListArray.from_arrays(pa.array(prompts[name].numpy().reshape(-1)), int(np.prod(shape)))
               for name, shape in _shapes(task).items()]
    store.write_parquet(pa.Table.from_arrays(columns, schema=_schema(task)), out, spec=spec, content=content)


def read_test_set(path, content: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, prompts) of a test set; raises StoreError naming the file on any mismatch."""
    table, spec, task = store.read_stored_set(path, content, lambda spec: Task(**spec["task"]), _schema,
                                              "a chen2024 test set", rows="prompts")
    return spec, columns.tensors(table, _shapes(task))
