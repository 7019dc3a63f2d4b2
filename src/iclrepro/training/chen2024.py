"""Train the chen2024 decoder on fresh sparse-regression prompts (spec §3).

Each step draws, per seed and on the device, a batch of prompts with K = n + 1 points;
the loss is the squared error at every query token (the prefix loss, spec §3), so one model
gives a risk curve over every context length n = 0..K-1. Adam with the core's cosine
decay; float32. The cell is scored on its held-out test set (same task): excess risk
per n, in metrics.parquet.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from iclrepro import streams
from iclrepro.models import chen2024 as models
from iclrepro.tasks import chen2024 as tasks
from iclrepro.training import core


class PrefixRegression(core.Objective):
    def __init__(self, spec: dict, device):
        self.task = tasks.Task(**spec["task"])
        self.batch = spec["training"]["batch"]
        self.device = device
        self.generators = streams.generators(spec["seeds"], "data", device)
        self.model = core.init_ensemble(
            lambda seeds: models.build(spec["model"], self.task.d, self.task.n + 1, seeds), spec["seeds"]).to(device)

    def draw(self):
        """Tokens (S, B, 2K-1, d+2) and labels (S, B, K) for every seed."""
        drawn = [tasks.sample(self.task, self.batch, generator, self.device) for generator in self.generators]
        x, y = (torch.stack([prompts[key] for prompts in drawn]) for key in ("x", "y"))
        return models.tokens(x, y), y

    def loss(self, batch) -> torch.Tensor:
        z, y = batch
        return ((self.model(z) - y) ** 2).mean(dim=(-1, -2))                            # (S,)


def excess_risk(model: models.Transformer, prompts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over prompts of (prediction - <w*, x_k>)^2 per seed and n: (S, K), on the CPU.
    The model runs where it trained, in passes (a GPU scores a paper-scale test set in seconds)."""
    prompts = models.moved(prompts, model.head_mask.device)
    predictions = models.predict(model, prompts["x"], prompts["y"])                     # (S, B, K)
    return ((predictions - tasks.clean(prompts)) ** 2).mean(1).cpu()


def metrics(spec: dict, model: models.Transformer, losses, heldout: dict[str, torch.Tensor]) -> pa.Table:
    """metrics.parquet: per seed and n, the held-out excess risk, and the last training loss."""
    risk = excess_risk(model, heldout).numpy()                                          # (S, K)
    S, K = risk.shape
    return pa.table({"seed": np.repeat(spec["seeds"], K), "n": np.tile(np.arange(K), S),
                     "excess_risk": risk.reshape(-1), "loss": np.repeat(losses[-1], K)})


def train_cell(spec: dict, cell_id: str, data: list[str], out_dir: str, threads: int = 1) -> None:
    """Train stage: fit all seeds as one ensemble (resuming a checkpoint), score, write the cell."""
    _, heldout = tasks.read_test_set(data[0], content=spec["heldout"])
    core.train_cell(spec, cell_id, out_dir, threads, PrefixRegression,
                    lambda objective, fitted: metrics(spec, objective.model, fitted.losses, heldout))
