"""Fit the values of a random-feature model by ridge regression (fu2023 spec §4).

The models are linear in their trainable values, so a cell's training step is one
closed-form solve (core.Optimisation optimizer "closed_form") through the same Lightning
module as the gradient-trained papers: `draw()` hands over each seed's training set and
`solve()` computes its features, picks the ridge penalty on the last
`validation_fraction` of the rows, refits on all rows and loads the values. Seed s of a
cell uses training set s of the cell's data and random weights drawn from the seed's
"features" stream, so RFA and BRFA cells with the same seeds share G_m (spec §4) and
every model of a (target, n) sees the same training sets. Fits run on the CPU whatever the
config's accelerator says (the `device` argument is the objective interface's): a fit is
a float64 Gram matrix and a Cholesky factorization per penalty and seed, not a loop of
small steps. A cell's log gets a line per seed fitted: a paper-scale fit takes a minute or
more per seed, and a log left untouched for ten minutes would read as an ended job
(`iclrepro cells`).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pyarrow as pa
import torch

from iclrepro import streams
from iclrepro.baselines import ridge
from iclrepro.models import fu2023 as models
from iclrepro.tasks import fu2023 as tasks
from iclrepro.training import core


def build_model(spec: dict) -> models.RandomFeatures:
    return models.build(spec, models.feature_generators(spec["seeds"]))


class RidgeFit(core.Objective):
    # "32-true": Lightning leaves dtypes alone (features float32, values and solve float64)

    def __init__(self, spec: dict, device, training_sets: list[dict[str, torch.Tensor]] | None = None,
                 cell_id: str | None = None):
        self.spec, self.cell_id = spec, cell_id
        self.model = build_model(spec)
        # without data (`iclrepro bench`), fresh samples of the cell's size stand in
        self.training_sets = training_sets or [self.stand_in(seed) for seed in spec["seeds"]]
        self.selections: list[ridge.Selection] = []

    def stand_in(self, seed: int) -> dict[str, torch.Tensor]:
        generator = streams.generator(seed, "data")
        x = tasks.sample(self.spec["d"], self.spec["N"], self.spec["n"], generator)
        return {"x": x, "y": tasks.target_values(tasks.Target.parse(self.spec["target"]), x)}

    def draw(self):
        return self.training_sets

    def solve(self, batch) -> torch.Tensor:
        """Fit every seed's values; return the per-seed training MSE (S,)."""
        fitting = self.spec["fitting"]
        losses = []
        for s, data in enumerate(batch):
            started = time.monotonic()
            Phi = self.model.features(data["x"], s)
            selection = ridge.select(Phi, data["y"], fitting["lambdas"], fitting["validation_fraction"])
            self.model.v.data[s] = selection.weights
            self.selections.append(selection)
            losses.append(((ridge.predict(Phi, selection.weights[None])[0] - data["y"]) ** 2).mean())
            if self.cell_id is not None:
                print(f"cell {self.cell_id}: seed {s + 1}/{len(batch)} fitted (lambda {selection.lam:g}, "
                      f"{time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        return torch.stack(losses)


def test_error(model: models.RandomFeatures, test: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed (S,): test MSE against the noiseless target, and it over the target's test variance."""
    with torch.no_grad():
        mse = ((model(test["x"]) - test["f"]) ** 2).mean(-1)
    return mse.numpy(), (mse / test["f"].var()).numpy()


def metrics(spec: dict, objective: RidgeFit, losses: np.ndarray, test: dict[str, torch.Tensor]) -> pa.Table:
    """metrics.parquet: per seed, training and test error, the chosen penalty and its validation MSE."""
    mse, nmse = test_error(objective.model, test)
    chosen = objective.selections
    return pa.table({"seed": spec["seeds"], "loss": losses[-1], "test_mse": mse, "nmse": nmse,
                     "lambda": [s.lam for s in chosen], "validation_mse": [min(s.validation_mse) for s in chosen]})


def train_cell(spec: dict, cell_id: str, data: list[str], out_dir: str, threads: int = 1) -> None:
    """Train stage: data[0] is the test set, data[1:] the seeds' training sets (in seed order)."""
    _, test = tasks.read_set(data[0], content=spec["test"])
    training_sets = [tasks.read_set(path, content=data_id)[1] for path, data_id in zip(data[1:], spec["train"],
                                                                                         strict=True)]
    core.train_cell(spec, cell_id, out_dir, threads,
                    lambda spec, device: RidgeFit(spec, device, training_sets, cell_id),
                    lambda objective, fitted: metrics(spec, objective, fitted.losses, test))
