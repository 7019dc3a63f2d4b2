"""Train a cell's seeds as one vectorised ensemble through a thin LightningModule.

A paper supplies an `Objective`: the ensemble model (parameters with a leading seed axis
S), a `draw()` that samples the next batch for every seed on the device, and a `loss()`
returning one value per seed. Summing the per-seed losses keeps each seed's gradients
and (element-wise) optimizer state independent, so seed s trained in an ensemble follows
the same trajectory as seed s trained alone.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import torch
from torch import nn

from iclrepro import store

CHECK_EVERY = 50  # steps between divergence checks (each check syncs with the device)


class DivergenceError(RuntimeError):
    """A training loss became NaN or infinite."""


def stream_seed(seed: int, purpose: str) -> int:
    """Seed of the named random stream `purpose` (data, init, eval, ...) of a cell seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "little") >> 1


def generators(seeds: list[int], purpose: str, device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(stream_seed(s, purpose)) for s in seeds]


def init_ensemble(factory: Callable[[int], nn.Module], seeds: list[int]) -> nn.Module:
    """An S-seed model whose slice s is initialised exactly as `factory(1)` under seed s."""
    ensemble = factory(len(seeds))
    with torch.no_grad():
        for index, seed in enumerate(seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stream_seed(seed, "init"))
                single = factory(1)
            for target, source in zip(ensemble.parameters(), single.parameters(), strict=True):
                target[index] = source[0]
    return ensemble


def configure_threads(threads: int) -> None:
    torch.set_num_threads(threads)


@dataclass
class Optimisation:
    """Adam with a constant rate and a cosine decay to 0 over the final `decay_fraction`."""

    steps: int
    lr: float
    decay_fraction: float = 0.0

    def factor(self, step: int) -> float:
        start = int(self.steps * (1 - self.decay_fraction))
        if step < start:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - start) / max(1, self.steps - start)))


class Objective:
    """What a paper provides to train one cell (see the module docstring)."""

    model: nn.Module

    def draw(self):
        raise NotImplementedError

    def loss(self, batch) -> torch.Tensor:
        raise NotImplementedError


class EnsembleModule(pl.LightningModule):
    """Thin Lightning wrapper: one optimiser step per drawn batch, losses kept on device."""

    def __init__(self, objective: Objective, optimisation: Optimisation, cell_id: str, seeds: int):
        super().__init__()
        self.objective, self.optimisation, self.cell_id = objective, optimisation, cell_id
        self.model = objective.model
        self.register_buffer("losses", torch.full((optimisation.steps, seeds), math.nan), persistent=False)
        self.checked = 0

    def training_step(self, step, batch_idx):
        per_seed = self.objective.loss(self.objective.draw())  # (S,)
        self.losses[batch_idx] = per_seed.detach()
        return per_seed.sum()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if (batch_idx + 1) % CHECK_EVERY == 0 or batch_idx + 1 == self.optimisation.steps:
            self.check_finite(batch_idx + 1)

    def check_finite(self, upto: int) -> None:
        window = self.losses[self.checked:upto]
        bad = ~torch.isfinite(window)
        if bad.any():
            step, seed = (int(i) for i in bad.nonzero()[0])
            raise DivergenceError(
                f"cell {self.cell_id}: training loss is {window[step, seed].item()} at step "
                f"{self.checked + step} (seed index {seed}); lower the learning rate")
        self.checked = upto

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.optimisation.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.optimisation.factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def fit(objective: Objective, optimisation: Optimisation, cell_id: str, seeds: int,
        accelerator: str = "cpu") -> np.ndarray:
    """Train the ensemble in place; returns the per-step, per-seed losses (steps, S)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    module = EnsembleModule(objective, optimisation, cell_id, seeds)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=optimisation.steps, max_epochs=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)
    with warnings.catch_warnings():
        # Lightning's own use of a torch API deprecated in torch 2.13; nothing for us to act on
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=Warning)
        trainer.fit(module, train_dataloaders=range(optimisation.steps))
    return module.losses.cpu().numpy()


def device_of(accelerator: str) -> torch.device:
    return torch.device("cuda" if accelerator in ("cuda", "gpu") else "cpu")


# ---------------------------------------------------------------------------
# Writing a cell: spec.json, model.pt, train.parquet, then metrics.parquet (the done marker)
# ---------------------------------------------------------------------------

def loss_table(losses: np.ndarray, seeds: list[int]) -> pa.Table:
    steps = np.repeat(np.arange(losses.shape[0]), losses.shape[1])
    return pa.table({"step": steps, "seed": np.tile(seeds, losses.shape[0]),
                     "loss": losses.reshape(-1).astype(np.float64)})


def write_cell(out_dir, cell_id: str, spec: dict, model: nn.Module, losses: np.ndarray,
               metrics: pa.Table, started: float, threads: int, accelerator: str) -> None:
    out = Path(out_dir)
    provenance = {"torch": torch.__version__, "lightning": pl.__version__,
                  "python": platform.python_version(), "threads": threads,
                  "accelerator": accelerator, "seconds": round(time.time() - started, 2)}
    store.write_json({"id": cell_id, "spec": spec, "provenance": provenance}, out / "spec.json")
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    store.save_model(state, spec, out / "model.pt")
    store.write_parquet(loss_table(losses, spec["seeds"]), out / "train.parquet", spec, cell_id)
    store.write_parquet(metrics, out / "metrics.parquet", spec, cell_id)
