"""In-context linear regression prompts of cui2024 (spec §1, §3.3-§3.5).

A prompt holds D context examples and one query: x of shape (D+1, d) with the query in
the last row, labels y of shape (D+1,) (the model never sees y[-1]) and the task vector w.
One `Scenario` (tasks/cui2024_scenario.py, torch-free so that planning stays light)
covers every data-generating process of the spec:

* isotropic (base, noisy labels): x ~ N(0, I_d), w ~ N(0, (W/d) I_d), y = w.x + noise
* correlated (rho set): x ~ N(0, Sigma), Sigma = (1-rho) I + rho 11^T          (§3.3)
* local examples (r set): x_q ~ N(0, I), x_i = x_q + r z_i                     (§3.4)
* prior knowledge (tau set): w ~ N(w0, (tau^2/d) I), w0 = w0_norm 1/sqrt(d)    (§3.5)
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch

from iclrepro import store
from iclrepro.tasks import columns
from iclrepro.tasks.cui2024_scenario import Scenario


def sample(scenario: Scenario, D: int, n: int, generator: torch.Generator,
           dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
    """n prompts: x (n, D+1, d), y (n, D+1), w (n, d); the last row is the query."""
    return {key: value[0] for key, value in sample_ensemble(scenario, D, n, [generator], dtype, device).items()}


def sample_ensemble(scenario: Scenario, D: int, n: int, generators: list[torch.Generator],
                    dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
    """n prompts for each of S seeds: x (S, n, D+1, d), y (S, n, D+1), w (S, n, d).

    Seed s's prompts are exactly `sample(..., generators[s])`, whatever the other seeds: each
    generator fills its own slices, in the same order (inputs, task vector, label noise), and
    each seed's labels are one product over its own slices. (One label product over all seeds
    takes another kernel path when S = 1, and at the quick cells' size its labels differed in
    the last bit from a seed's own.) Filling preallocated tensors instead of stacking S
    samples saves a copy of every prompt per training step (14 % of the step at 8 seeds).
    """
    S, d = len(generators), scenario.d
    kw = {"dtype": dtype, "device": device}
    prompts = {"x": torch.empty(S, n, D + 1, d, **kw), "y": torch.empty(S, n, D + 1, **kw),
               "w": torch.empty(S, n, d, **kw)}
    chol = prior_mean = None  # the scenario's constants, made once for all seeds
    if scenario.family == "correlated":
        chol = torch.linalg.cholesky(torch.as_tensor(scenario.covariance(), **kw))
    if scenario.family == "prior":
        prior_mean = torch.as_tensor(scenario.prior_mean(), **kw)
    for seed, generator in enumerate(generators):
        _fill(scenario, generator, chol, prior_mean, **{key: value[seed] for key, value in prompts.items()})
    return prompts


def _fill(scenario: Scenario, generator: torch.Generator, chol: torch.Tensor | None,
          prior_mean: torch.Tensor | None, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
    """Draw one seed's prompts into x (n, D+1, d), y (n, D+1) and w (n, d), in place; `chol`
    and `prior_mean` are the correlated and prior scenarios' constants (None otherwise)."""
    x.normal_(generator=generator)
    w.normal_(generator=generator)
    if scenario.family == "local":
        x[:, :-1, :].mul_(scenario.r).add_(x[:, -1:, :])
    elif scenario.family == "correlated":
        x.copy_(x @ chol.T)
    if scenario.family == "prior":
        w.mul_(scenario.tau / math.sqrt(scenario.d)).add_(prior_mean)
    else:
        w.mul_(math.sqrt(scenario.W / scenario.d))
    torch.bmm(w.unsqueeze(1), x.transpose(1, 2), out=y.unsqueeze(1))  # w^T x^T: rows of D+1 labels
    if scenario.sigma2 > 0:
        y.add_(math.sqrt(scenario.sigma2) * torch.empty_like(y).normal_(generator=generator))


# ---------------------------------------------------------------------------
# Test sets as Parquet: float32 fixed-size list columns, spec in the metadata
# ---------------------------------------------------------------------------

def clean_targets(prompts: dict[str, torch.Tensor]) -> torch.Tensor:
    """w.x_q per prompt (float64): the query's label without its noise, against which excess
    losses are measured."""
    return (prompts["w"].double() * prompts["x"][:, -1].double()).sum(-1)


def _schema(d: int, D: int) -> pa.Schema:
    return pa.schema([
        ("x", pa.list_(pa.float32(), (D + 1) * d)),
        ("y", pa.list_(pa.float32(), D + 1)),
        ("w", pa.list_(pa.float32(), d)),
    ])


def _column(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def to_table(prompts: dict[str, torch.Tensor]) -> pa.Table:
    x, y, w = (prompts[key].detach().cpu().numpy() for key in ("x", "y", "w"))
    n, rows, d = x.shape
    return pa.Table.from_arrays(
        [_column(x, rows * d), _column(y, rows), _column(w, d)], schema=_schema(d, rows - 1))


def write_test_set(spec: dict, content: str, out) -> None:
    """Data stage: sample `spec['prompts']` prompts with the spec's seed and write them."""
    scenario = Scenario(**spec["scenario"])
    generator = torch.Generator().manual_seed(spec["seed"])
    prompts = sample(scenario, spec["D"], spec["prompts"], generator)
    store.write_parquet(to_table(prompts), out, spec=spec, content=content)


def read_test_set(path, content: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, prompts) of a test set; raises StoreError naming the file on any mismatch."""
    table, spec, (d, D) = store.read_stored_set(path, content, lambda spec: (spec["scenario"]["d"], spec["D"]),
                                                lambda sizes: _schema(*sizes), "a cui2024 test set", rows="prompts")
    return spec, columns.tensors(table, {"x": (D + 1, d), "y": (D + 1,), "w": (d,)})
