"""Train a cell's seeds as one vectorised ensemble through a thin LightningModule.

A paper supplies an `Objective`: the ensemble model (parameters with a leading seed axis
S), a `draw()` that samples the next batch for every seed on the device, and a `loss()`
returning one value per seed. Summing the per-seed losses keeps each seed's gradients
and (element-wise) optimizer state independent, so seed s trained in an ensemble follows
the same trajectory as seed s trained alone.
"""

from __future__ import annotations

import logging
import math
import pickle
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.plugins.precision import DoublePrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn

from iclrepro import store, streams
from iclrepro.accelerator import device_of
from iclrepro.errors import IclreproError
from iclrepro.training import schedule

CHUNK = 50  # updates per Lightning batch; also the stride of the loss check (a device sync)
PROGRESS_SECONDS = 30.0  # wall time between progress lines in a long cell's log
# A seed whose training loss grows to this many times its first one has diverged, though it
# stays finite (cui2024 at lr 1,000 reaches losses of 3e5 from 1 and would still feed the
# claims). Fresh prompts every step make the loss noisy, but in the quick runs no step's loss
# was above 2.01 times its seed's first.
GROWTH_LIMIT = 1000.0


class DivergenceError(IclreproError, RuntimeError):
    """A training loss became NaN or infinite, or grew GROWTH_LIMIT-fold."""


def init_ensemble(factory: Callable[[int], nn.Module], seeds: list[int]) -> nn.Module:
    """An S-seed model whose slice s is initialised exactly as `factory(1)` under seed s."""
    ensemble = factory(len(seeds))
    with torch.no_grad():
        for index, seed in enumerate(seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(streams.stream_seed(seed, "init"))
                single = factory(1)
            for target, source in zip(ensemble.parameters(), single.parameters(), strict=True):
                target[index] = source[0]
    return ensemble


def configure_threads(threads: int) -> None:
    torch.set_num_threads(threads)


@dataclass
class Optimisation:
    """How a cell's parameters are fitted.

    adam:        Adam at `lr`, raised linearly from lr / warmup_steps over the first
                 `warmup_steps` steps, cosine-decayed to 0 over the final `decay_fraction`;
                 with `weight_decay` > 0, AdamW's decoupled decay (each step multiplies every
                 parameter by 1 - lr_t * weight_decay, element-wise, so seeds stay independent)
    gd:          plain gradient descent with constant step `lr` (no momentum); full-batch GD
                 when the objective draws the whole training set every step
    closed_form: one step in which the objective solves for its parameters (Objective.solve)
    `snapshots` lists step counts after which a copy of the parameters is kept (0 = init).
    """

    steps: int
    lr: float = 0.0
    decay_fraction: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    optimizer: str = "adam"
    snapshots: tuple[int, ...] = ()

    def __post_init__(self):
        if self.optimizer not in ("adam", "gd", "closed_form"):
            raise ValueError(f"unknown optimizer {self.optimizer!r} (adam, gd or closed_form)")
        if self.weight_decay and self.optimizer != "adam":
            raise ValueError(f"weight_decay {self.weight_decay} needs the adam optimizer, not {self.optimizer!r}")
        self.snapshots = tuple(self.snapshots)

    def factor(self, step: int) -> float:
        return schedule.factor(step, self.steps, self.decay_fraction, self.warmup_steps)

    def optimizer_and_schedule(self, parameters):
        """The torch optimizer and its per-step learning-rate schedule (adam or gd).

        AdamW without weight decay computes exactly what Adam does.
        """
        if self.optimizer == "adam":
            optimizer = torch.optim.AdamW(parameters, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.SGD(parameters, lr=self.lr)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)


class Objective:
    """What a paper provides to train one cell (see the module docstring).

    `loss` is required for gradient training, `solve` for closed-form fits. `trace` may
    return per-seed values to record after a step (or None to record nothing): e.g. test
    loss on a log grid of steps. `precision` is Lightning's ("32-true" or "64-true").
    `generators` lists the random streams `draw()` consumes: checkpoints save their state,
    so a resumed cell draws the same batches as an uninterrupted one.
    """

    model: nn.Module
    precision: str = "32-true"
    generators: list[torch.Generator] = []

    def draw(self):
        raise NotImplementedError

    def loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def solve(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def trace(self, step: int) -> dict[str, torch.Tensor] | None:
        return None


@dataclass
class Fitted:
    """What training produced besides the model: losses (steps, S), each traced quantity per
    step (steps, S; NaN at the steps it was not traced) and snapshots."""

    losses: np.ndarray
    traces: dict[str, np.ndarray]
    snapshots: dict[int, dict[str, torch.Tensor]]


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


class Checkpointing:
    """Periodic training state in `<cell dir>/checkpoint.pt`, written atomically.

    A checkpoint is written at a chunk boundary once `every_seconds` of wall time have
    passed since the last one, so only long cells pay for it. It holds tensors and plain
    containers only and is loaded with weights_only=True; one of another cell is ignored.
    """

    def __init__(self, path, every_seconds: float):
        self.path, self.every_seconds = Path(path), every_seconds
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_seconds

    def save(self, state: dict) -> None:
        with store.atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self.last = time.monotonic()

    def load(self, cell_id: str) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            return None  # a damaged checkpoint only costs the work since the previous one
        return state if isinstance(state, dict) and state.get("cell") == cell_id else None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Progress:
    """Progress lines (steps done, mean loss, rate, time left) for the cell's log."""

    def __init__(self, cell_id: str, steps: int, every_seconds: float = PROGRESS_SECONDS):
        self.cell_id, self.steps, self.every_seconds = cell_id, steps, every_seconds
        self.started = self.last = time.monotonic()
        self.first_step: int | None = None

    def update(self, done: int, losses: torch.Tensor) -> None:
        now = time.monotonic()
        if self.first_step is None:  # the rate is measured from the first chunk on (after start-up)
            self.first_step, self.started, self.last = done, now, now
            return
        if now - self.last < self.every_seconds or done == self.steps:
            return
        self.last = now
        rate = (done - self.first_step) / max(now - self.started, 1e-9)
        left = (self.steps - done) / rate if rate > 0 else float("inf")
        loss = float(losses[max(0, done - CHUNK):done].mean())
        print(f"cell {self.cell_id}: step {done}/{self.steps} ({100 * done / self.steps:.0f}%), "
              f"loss {loss:.4g}, {rate:.0f} steps/s, about {left / 60:.1f} min left", file=sys.stderr, flush=True)


class EnsembleModule(pl.LightningModule):
    """Thin Lightning wrapper with manual optimisation.

    Each Lightning batch runs a chunk of up to CHUNK updates, which spreads the fit loop's
    per-batch hook cost over the chunk. Losses stay on the device in a preallocated
    buffer, checked once per chunk (`check_losses`). An update calls backward and the torch
    optimizer directly, not `manual_backward` and the Lightning optimizer: on one device in
    32- or 64-bit precision those only dispatch callback hooks and gradient clipping, which
    this trainer does not use, and their dispatch took about a tenth of a cui2024 step at
    H = 1 (benchmarks.md). `check_plain_updates` refuses a trainer for which that is not so.
    """

    def __init__(self, objective: Objective, optimisation: Optimisation, cell_id: str, seeds: int,
                 checkpoint: Checkpointing | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.objective, self.optimisation, self.cell_id = objective, optimisation, cell_id
        self.model = objective.model
        self.register_buffer("losses", torch.full((optimisation.steps, seeds), math.nan), persistent=False)
        self.checked = 0
        # per traced quantity, a buffer like `losses`: kept per step as small arrays instead,
        # zhang2026's traces of every step grew a paper-scale cell's memory by 0.1-0.2 MB a step
        self.traces: dict[str, torch.Tensor] = {}
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.checkpoint = checkpoint
        self.optimizer = self.schedule = None  # torch's own, taken from Lightning when training starts
        self.resume_from = checkpoint.load(cell_id) if checkpoint else None
        self.progress = Progress(cell_id, optimisation.steps)

    def on_train_start(self):
        check_plain_updates(self.trainer)
        if self.optimisation.optimizer != "closed_form":
            self.optimizer, self.schedule = self.optimizers(use_pl_optimizer=False), self.lr_schedulers()
        if self.resume_from is not None:
            self.restore(self.resume_from)
        elif 0 in self.optimisation.snapshots:
            self.snapshots[0] = state_copy(self.model)

    def first_chunk(self) -> int:
        return self.resume_from["done"] // CHUNK if self.resume_from else 0

    def training_step(self, chunk, chunk_index):
        first = int(chunk) * CHUNK
        for step in range(first, min(first + CHUNK, self.optimisation.steps)):
            self.losses[step] = self.update().detach()
            self.after_step(step + 1)
        self.check_losses(step + 1)
        if step + 1 == self.optimisation.steps:
            self.check_final_parameters()
        self.progress.update(step + 1, self.losses)
        if self.checkpoint and self.checkpoint.due() and step + 1 < self.optimisation.steps:
            self.checkpoint.save(self.training_state(step + 1))

    def training_state(self, done: int) -> dict:
        """Everything needed to continue exactly: tensors and plain containers only."""
        return {
            "cell": self.cell_id, "done": done, "checked": self.checked,
            "model": state_copy(self.model),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else {},
            "schedule": self.schedule.state_dict() if self.schedule is not None else {},
            "generators": [g.get_state() for g in self.objective.generators],
            "losses": self.losses[:done].cpu().clone(),
            "traces": {name: values[:done].cpu().clone() for name, values in self.traces.items()},
            "snapshots": self.snapshots,
        }

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
        for generator, saved in zip(self.objective.generators, state["generators"], strict=True):
            generator.set_state(saved)
        done = state["done"]
        self.losses[:done] = state["losses"].to(self.losses)
        self.checked = state["checked"]
        for name, values in state["traces"].items():
            self.trace_buffer(name, values[0])[:done] = values.to(self.losses.device)
        self.snapshots = state["snapshots"]

    def update(self) -> torch.Tensor:
        """One parameter update; returns the per-seed loss (S,) before it."""
        batch = self.objective.draw()
        if self.optimisation.optimizer == "closed_form":
            with torch.no_grad():
                return self.objective.solve(batch)
        per_seed = self.objective.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        per_seed.sum().backward()
        self.optimizer.step()
        self.schedule.step()
        return per_seed

    def after_step(self, done: int) -> None:
        traced = self.objective.trace(done)
        for name, value in (traced or {}).items():
            self.trace_buffer(name, value)[done - 1] = value.detach()
        if done in self.optimisation.snapshots:
            self.snapshots[done] = state_copy(self.model)

    def trace_buffer(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """The (steps, *value's shape) buffer of a traced quantity, NaN until traced."""
        if name not in self.traces:
            self.traces[name] = torch.full((self.optimisation.steps, *value.shape), math.nan,
                                           dtype=torch.float64, device=self.losses.device)
        return self.traces[name]

    def check_losses(self, upto: int) -> None:
        """The losses since the last check are finite and below GROWTH_LIMIT times their seed's first."""
        window, first = self.losses[self.checked:upto], self.losses[0]
        limit = torch.where(first > 0, GROWTH_LIMIT * first, math.inf)
        bad = ~torch.isfinite(window) | (window > limit)
        if bad.any():
            step, seed = (int(i) for i in bad.nonzero()[0])
            value = window[step, seed].item()
            growth = (f", over {GROWTH_LIMIT:g} times its first ({first[seed].item():.4g}),"
                      if math.isfinite(value) else "")
            raise DivergenceError(
                f"cell {self.cell_id}: training loss is {value:.4g} at step {self.checked + step} (seed index "
                f"{seed}){growth} at learning rate {self.optimisation.lr:g}; lower it")
        self.checked = upto

    def check_final_parameters(self) -> None:
        """A loss is taken before its update, so no loss shows what the last update did."""
        finite = torch.stack([p.detach().reshape(len(p), -1).isfinite().all(1) for p in self.model.parameters()]).all(0)
        if not finite.all():
            seed = int((~finite).nonzero()[0])
            raise DivergenceError(
                f"cell {self.cell_id}: the last update left non-finite parameters (seed index {seed}) "
                f"at learning rate {self.optimisation.lr:g}; lower it")

    def configure_optimizers(self):
        if self.optimisation.optimizer == "closed_form":
            return None
        optimizer, lr_schedule = self.optimisation.optimizer_and_schedule(self.model.parameters())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_schedule, "interval": "step"}}


def check_plain_updates(trainer: pl.Trainer) -> None:
    """Raise unless Lightning's backward and optimizer step would add nothing to torch's here.

    For a single device with 32- or 64-bit precision, they call callback and module hooks
    (EnsembleModule overrides none) and clip gradients if asked; mixed precision would scale
    the loss, several devices would synchronise gradients.
    """
    problems = []
    if type(trainer.precision_plugin) not in (Precision, DoublePrecision):
        problems.append(f"precision plugin {type(trainer.precision_plugin).__name__} (32-true or 64-true only)")
    if not isinstance(trainer.strategy, SingleDeviceStrategy):
        problems.append(f"strategy {type(trainer.strategy).__name__} (one device only)")
    if trainer.callbacks:
        problems.append(f"callbacks {[type(callback).__name__ for callback in trainer.callbacks]}")
    if trainer.gradient_clip_val:
        problems.append(f"gradient clipping at {trainer.gradient_clip_val}")
    if problems:
        raise ValueError("EnsembleModule updates with torch's backward and optimizer step, which would skip "
                         "Lightning's handling of: " + "; ".join(problems))


def fit(objective: Objective, optimisation: Optimisation, cell_id: str, seeds: int,
        accelerator: str = "cpu", checkpoint: Checkpointing | None = None) -> Fitted:
    """Train the ensemble in place; return its per-step losses, traces and snapshots.

    With `checkpoint`, training resumes from a checkpoint of the same cell if there is one,
    and the result equals that of an uninterrupted run.
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    module = EnsembleModule(objective, optimisation, cell_id, seeds, checkpoint)
    chunks = range(module.first_chunk(), math.ceil(optimisation.steps / CHUNK))
    with warnings.catch_warnings():
        # Lightning's own use of a torch API deprecated in torch 2.13, its note that we train
        # without an optimizer (closed-form fits), and its hint to launch through srun (we
        # run one process per cell on purpose): nothing for us to act on
        for message in (".*LeafSpec.*", ".*configure_optimizers.*", ".*`srun` command is available.*"):
            warnings.filterwarnings("ignore", message=message, category=Warning)
        trainer = pl.Trainer(
            accelerator=accelerator, devices=1, max_epochs=1,
            precision=objective.precision, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            deterministic=True,
            # one device per cell: inside a SLURM job Lightning must not take over the job's
            # signals and environment as it does for multi-node training
            plugins=[LightningEnvironment()])
        trainer.fit(module, train_dataloaders=chunks)
    # Lightning's teardown moved the module to the CPU; the caller scores it on its data,
    # which stay on the training device
    module.to(device_of(accelerator))
    return Fitted(module.losses.cpu().double().numpy(),
                  {name: values.cpu().numpy() for name, values in module.traces.items()}, module.snapshots)


# ---------------------------------------------------------------------------
# Writing a cell: spec.json, model.pt, train.parquet, then metrics.parquet (the done marker)
# ---------------------------------------------------------------------------

def loss_table(fitted: Fitted, seeds: list[int]) -> pa.Table:
    """train.parquet: step, seed, loss, plus one column per traced quantity (NaN where not traced)."""
    steps, width = fitted.losses.shape
    columns = {"step": np.repeat(np.arange(1, steps + 1), width), "seed": np.tile(seeds, steps),
               "loss": fitted.losses.reshape(-1)}
    columns.update({name: values.reshape(-1) for name, values in sorted(fitted.traces.items())})
    return pa.table(columns)


def write_cell(out_dir, cell_id: str, spec: dict, model: nn.Module, fitted: Fitted,
               metrics: pa.Table, started: float, threads: int, accelerator: str) -> None:
    """Write a cell directory; metrics.parquet, the done marker, comes last."""
    out = Path(out_dir)
    provenance = {"torch": torch.__version__, "lightning": pl.__version__,
                  "python": platform.python_version(), "threads": threads,
                  "accelerator": accelerator, "seconds": round(time.time() - started, 2)}
    store.write_json({"id": cell_id, "spec": spec, "provenance": provenance}, out / "spec.json")
    store.save_model(state_copy(model), spec, out / "model.pt", snapshots=fitted.snapshots)
    store.write_parquet(loss_table(fitted, spec["seeds"]), out / "train.parquet", spec, cell_id)
    store.write_parquet(metrics, out / "metrics.parquet", spec, cell_id)
    checkpoint_of(out_dir).remove()


def accelerator_of(spec: dict) -> str:
    """Where a cell trains; fu2023's cells name none: their closed-form fits run on the CPU."""
    return spec.get("device", "cpu")


def train_cell(spec: dict, cell_id: str, out_dir, threads: int,
               make_objective: Callable[[dict, torch.device], Objective],
               score: Callable[[Objective, Fitted], pa.Table]) -> None:
    """Fit every seed of a cell as one ensemble (resuming its checkpoint), score it, write the cell.

    A paper's train stage reads what it needs (its test set) and calls this. `score` runs
    with the objective, model included, on the training device, so it may use data kept there.
    """
    started = time.time()
    accelerator = accelerator_of(spec)
    configure_threads(threads)
    objective = make_objective(spec, device_of(accelerator))
    optimisation = Optimisation(**spec["training"]["optimisation"])
    checkpoint = checkpoint_of(out_dir)
    fitted = fit(objective, optimisation, cell_id, len(spec["seeds"]), accelerator, checkpoint)
    metrics = score(objective, fitted)
    write_cell(out_dir, cell_id, spec, objective.model.cpu(), fitted, metrics, started, threads, accelerator)


CHECKPOINT_SECONDS = 300.0   # a killed job loses at most this much training


def checkpoint_of(out_dir) -> Checkpointing:
    """The checkpoint of a cell directory: `train_cell` resumes from it, `write_cell` removes it."""
    return Checkpointing(Path(out_dir) / "checkpoint.pt", CHECKPOINT_SECONDS)
