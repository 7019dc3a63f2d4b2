"""Tokenized-mixture data sets of deora2023 (spec §2): a finite training set and a test set.

One data set per seed: the means (the first 2 + M columns of a random d x d orthogonal
matrix times S) come from the seed's "means" stream and are shared by its training and
test sequences; the test set comes from the "test" stream and the training set from the
"train" stream, so data sets of one seed with different n share their means and test set
(E5 compares sample sizes on the same test sequences).

A sequence: y ~ Unif{-1, +1}; a random set of ceil(zeta T) positions holds mu_y + z_t, the
others nu_{j_t} + z_t with j_t ~ Unif[M]; z_t ~ N(0, sigma^2 I_d) (gauss_orth: projected
off span{mu, nu}; none: z_t = 0). Stored as Parquet: split, x (T*d), y, relevant (T).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from iclrepro import store, streams
from iclrepro.tasks.deora2023_mixture import Mixture

SPLITS = ("train", "test")


def stream(seed: int, purpose: str) -> torch.Generator:
    """The named random stream of a data seed (no hidden global RNG)."""
    return streams.generator(f"deora2023/{seed}", purpose)


def means(mix: Mixture, generator: torch.Generator) -> torch.Tensor:
    """(2 + M, d) mutually orthogonal means of norm S: rows mu_+, mu_-, nu_1..nu_M."""
    Q, _ = torch.linalg.qr(torch.randn(mix.d, mix.d, generator=generator, dtype=torch.float64))
    return mix.S * Q[:, : 2 + mix.M].T


def sequences(mix: Mixture, centres: torch.Tensor, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """n sequences: x (n, T, d), y (n,), relevant (n, T) as 0/1."""
    y = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    order = torch.rand(n, mix.T, generator=generator).argsort(-1)
    relevant = order < mix.relevant                                              # (n, T), ceil(zeta T) per row
    other = torch.randint(0, mix.M, (n, mix.T), generator=generator) + 2
    label_mean = torch.where(y == 1, 0, 1).unsqueeze(-1).expand(n, mix.T)
    x = centres[torch.where(relevant, label_mean, other)]                        # (n, T, d)
    noise = mix.sigma * torch.randn(n, mix.T, mix.d, generator=generator, dtype=torch.float64)
    if mix.noise == "gauss_orth":
        basis = centres / mix.S                                                  # orthonormal rows
        noise = noise - (noise @ basis.T) @ basis
    if mix.noise != "none":
        x = x + noise
    return {"x": x, "y": y.double(), "relevant": relevant.double()}


def sample(mix: Mixture, n_train: int, n_test: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """{"train": ..., "test": ...} of one seed (see the module docstring for the streams)."""
    centres = means(mix, stream(seed, "means"))
    return {"train": sequences(mix, centres, n_train, stream(seed, "train")),
            "test": sequences(mix, centres, n_test, stream(seed, "test"))}


def _schema(mix: Mixture) -> pa.Schema:
    return pa.schema([("split", pa.string()), ("x", pa.list_(pa.float64(), mix.T * mix.d)),
                      ("y", pa.float64()), ("relevant", pa.list_(pa.float64(), mix.T))])


def to_table(mix: Mixture, sets: dict[str, dict[str, torch.Tensor]]) -> pa.Table:
    columns = {"split": [], "x": [], "y": [], "relevant": []}
    for split in SPLITS:
        part = sets[split]
        n = len(part["y"])
        columns["split"].append(pa.array([split] * n))
        for name in ("x", "relevant"):
            values = part[name].numpy().reshape(-1)
            columns[name].append(pa.FixedSizeListArray.from_arrays(pa.array(values), values.size // max(n, 1)))
        columns["y"].append(pa.array(part["y"].numpy()))
    return pa.Table.from_arrays([pa.concat_arrays(columns[name]) for name in columns], schema=_schema(mix))


def write_data_set(spec: dict, content: str, out) -> None:
    """Data stage: spec n_train and n_test sequences of spec mixture, from data seed spec seed."""
    mix = Mixture(**spec["mixture"])
    sets = sample(mix, spec["n_train"], spec["n_test"], spec["seed"])
    store.write_parquet(to_table(mix, sets), out, spec=spec, content=content)


def read_data_set(path, content: str | None = None) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(spec, {split: {x, y, relevant}}); raises StoreError naming the file on any mismatch."""
    table, spec, mix = store.read_stored_set(path, content, lambda spec: Mixture(**spec["mixture"]), _schema,
                                             "a deora2023 data set")
    frame = {name: table.column(name).combine_chunks() for name in _schema(mix).names}
    split = np.asarray(frame["split"].to_pylist())
    sets = {}
    for name, n in (("train", spec["n_train"]), ("test", spec["n_test"])):
        rows = np.flatnonzero(split == name)
        if len(rows) != n:
            raise store.StoreError(f"{path}: {len(rows)} {name} rows, the spec says {n}")
        x = frame["x"].values.to_numpy(zero_copy_only=False).reshape(-1, mix.T, mix.d)[rows]
        relevant = frame["relevant"].values.to_numpy(zero_copy_only=False).reshape(-1, mix.T)[rows]
        sets[name] = {"x": torch.from_numpy(x.copy()), "y": torch.from_numpy(frame["y"].to_numpy()[rows].copy()),
                      "relevant": torch.from_numpy(relevant.copy())}
    return spec, sets


def stacked(sets: list[dict], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """X (S, n, T, d), y (S, n) of one split across the seeds' data sets (as read_data_set gives them)."""
    return torch.stack([s[split]["x"] for s in sets]), torch.stack([s[split]["y"] for s in sets])
