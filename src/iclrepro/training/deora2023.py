"""Full-batch gradient descent on the logistic risk of one multi-head attention layer (deora2023 spec §1, §4).

Each seed has its own data set (means, training and test sequences) and initialisation;
the cell trains its seeds as one ensemble through the shared Lightning path
(training.core, optimizer "gd": a constant step, no momentum). Every update uses the
whole training set, so one update is one epoch. On a log grid of steps the cell records
the test loss and error, the training error and the distance ||theta_k - theta_0|| (also
relative to ||theta_0||), theta_0 being where training starts (after the first step for
the one-step initialisation).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from iclrepro.models import deora2023 as models
from iclrepro.tasks import deora2023 as tasks
from iclrepro.training import core


def log_grid(steps: int, points: int) -> set[int]:
    """About `points` log-spaced steps in [1, steps], always with the last."""
    return {int(k) for k in np.unique(np.geomspace(1, steps, points).round())} | {steps}


def scores(model: models.MultiHeadAttention, X: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per seed (S,): logistic loss, 0-1 error and smallest margin y Phi."""
    margins = y * model(X)
    return {"loss": models.logistic(margins).mean(-1), "error": (margins <= 0).double().mean(-1),
            "min_margin": margins.amin(-1)}


class FullBatchLogistic(core.Objective):
    precision = "64-true"  # small losses: float32 stops resolving them near 1e-7 (spec §5)

    def __init__(self, spec: dict, device, sets: list[dict] | None = None):
        """`sets`: each seed's data set as read from the store; without them (`iclrepro bench`)
        they are sampled from the spec, which gives the same sequences."""
        if sets is None:
            mix = tasks.Mixture(**spec["mixture"])
            sets = [tasks.sample(mix, spec["n_train"], spec["n_test"], seed) for seed in spec["seeds"]]
        self.train_set = tuple(t.to(device) for t in tasks.stacked(sets, "train"))
        self.test_set = tuple(t.to(device) for t in tasks.stacked(sets, "test"))
        self.model = core.init_ensemble(lambda seeds: models.build(spec, seeds), spec["seeds"]).to(device)
        init = spec["model"]["init"]
        if init["kind"] == "one_step":
            models.one_step(self.model, *self.train_set, init["eta0"], init["params"])
        with torch.no_grad():
            self.start = self.model.flat().clone()                                # (S, P)
        self.grid = log_grid(spec["training"]["optimisation"]["steps"], spec["training"]["log_points"])

    def draw(self):
        return self.train_set

    def loss(self, batch) -> torch.Tensor:
        return self.model.risk(*batch)

    @torch.no_grad()
    def trace(self, step: int) -> dict[str, torch.Tensor] | None:
        if step not in self.grid:
            return None
        test, train = scores(self.model, *self.test_set), scores(self.model, *self.train_set)
        distance = (self.model.flat() - self.start).norm(dim=-1)
        return {"test_loss": test["loss"], "test_error": test["error"], "train_error": train["error"],
                "min_margin": train["min_margin"], "distance": distance,
                "relative_distance": distance / self.start.norm(dim=-1)}


def metrics(objective: FullBatchLogistic, seeds: list[int]) -> pa.Table:
    """metrics.parquet: per seed, final training and test loss and error."""
    with torch.no_grad():
        train, test = scores(objective.model, *objective.train_set), scores(objective.model, *objective.test_set)
    return pa.table({"seed": seeds, "train_loss": train["loss"].cpu().numpy(),
                     "train_error": train["error"].cpu().numpy(), "test_loss": test["loss"].cpu().numpy(),
                     "test_error": test["error"].cpu().numpy()})


def train_cell(spec: dict, cell_id: str, data: list[str], out_dir: str, threads: int = 1) -> None:
    """Train stage: read each seed's data set, fit the ensemble (resuming a checkpoint), write the cell."""
    sets = [tasks.read_data_set(path, content=data_id)[1] for path, data_id in zip(data, spec["data"], strict=True)]
    core.train_cell(spec, cell_id, out_dir, threads,
                    lambda spec, device: FullBatchLogistic(spec, device, sets),
                    lambda objective, fitted: metrics(objective, spec["seeds"]))
