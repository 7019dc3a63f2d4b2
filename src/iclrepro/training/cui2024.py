"""Train and evaluate one cui2024 cell: a model setting at one (scenario, D), all its seeds.

Training prompts are drawn fresh every step from each seed's own generator, on the
device (spec §5: online data, MSE on the query label). The trained ensemble is then
scored on the shared test set of its (scenario, D), and its learned structure summarised
(per head: c_h = tr(A_h)/d, the value weight v_h on y, and the cosine of A_h with
Sigma^{-1}; spec §4 diagnostics).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from iclrepro import streams
from iclrepro.models import cui2024 as models
from iclrepro.tasks import cui2024 as tasks
from iclrepro.training import core


class Regression(core.Objective):
    def __init__(self, spec: dict, device):
        self.scenario = tasks.Scenario(**spec["scenario"])
        self.D, self.batch = spec["D"], spec["training"]["batch"]
        self.device = device
        self.generators = streams.generators(spec["seeds"], "data", device)
        self.model = build_model(spec).to(device)

    def draw(self):
        prompts = tasks.sample_ensemble(self.scenario, self.D, self.batch, self.generators, device=self.device)
        return prompts["x"], prompts["y"]

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        return ((self.model(x, y) - y[..., -1]) ** 2).mean(dim=1)  # (S,)


def build_model(spec: dict) -> torch.nn.Module:
    d = spec["scenario"]["d"]
    return core.init_ensemble(lambda seeds: models.build(spec["model"], d, seeds), spec["seeds"])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=(-1, -2)) / (a.norm(dim=(-1, -2)) * b.norm(dim=(-1, -2)))


@torch.no_grad()
def metrics(spec: dict, model: torch.nn.Module, prompts: dict[str, torch.Tensor]) -> pa.Table:
    scenario = tasks.Scenario(**spec["scenario"])
    prediction = models.predict(model, prompts).double()                         # (S, N)
    errors = (prediction - prompts["y"][:, -1].double()) ** 2
    mse = errors.mean(dim=1)
    # excess risk against the clean target w.x_q: unbiased, without the label-noise variance
    excess = ((prediction - tasks.clean_targets(prompts)) ** 2).mean(dim=1)
    kq, value = model.kq().cpu().double(), model.value().cpu().double()
    d = scenario.d
    A = kq[..., :d, :d]                                           # (S, H, d, d)
    c = torch.diagonal(A, dim1=-2, dim2=-1).mean(-1)              # (S, H)
    v = value[..., -1]                                            # (S, H)
    sigma_inv = torch.as_tensor(scenario.precision())
    return pa.table({
        "seed": spec["seeds"],
        "D": [spec["D"]] * len(spec["seeds"]),
        "mse": mse.numpy(),
        "mse_se": (errors.std(dim=1) / np.sqrt(errors.shape[1])).numpy(),
        "excess": excess.numpy(),
        "c": c.tolist(),
        "v": v.tolist(),
        "cv_sum": (c * v).sum(-1).numpy(),
        "cos_sigma_inv": _cosine(A, sigma_inv).tolist(),
    })


def train_cell(spec: dict, cell_id: str, data: list[str], out_dir: str, threads: int = 1) -> None:
    """Train stage: fit all seeds (resuming a checkpoint), score on the test set, write the cell."""
    _, test = tasks.read_test_set(data[0], content=spec["test"])
    core.train_cell(spec, cell_id, out_dir, threads, Regression,
                    lambda objective, fitted: metrics(spec, objective.model.cpu(), test))
