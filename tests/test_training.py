"""The Lightning ensemble trainer: seeds independent, divergence caught, cells written whole."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from iclrepro import accelerator, store
from iclrepro.models import cui2024 as cui_models
from iclrepro.training import core
from iclrepro.training import cui2024 as training


def cell_spec(seeds, steps=12):
    return {"paper": "cui2024", "scenario": {"d": 3, "W": 1.0, "sigma2": 0.1}, "D": 6,
            "model": {"param": "full", "H": 2, "p": 8, "init_std": 0.01, "init": "identity", "identity_eps": 0.05},
            "seeds": seeds, "test": "0" * 16, "device": "cpu",
            "training": {"batch": 16, "optimisation": {"steps": steps, "lr": 0.01, "decay_fraction": 0.5}}}


def trained_parameters(seeds):
    spec = cell_spec(seeds)
    objective = training.Regression(spec, torch.device("cpu"))
    core.fit(objective, core.Optimisation(**spec["training"]["optimisation"]), "test", len(seeds))
    return [p.detach() for p in objective.model.parameters()]


def test_ensemble_trains_each_seed_as_if_alone():
    together = trained_parameters([3, 7])
    alone = [trained_parameters([3]), trained_parameters([7])]
    for index, ensemble_param in enumerate(together):
        for slot in range(2):
            assert torch.allclose(ensemble_param[slot], alone[slot][index][0], atol=1e-6)


def test_different_seeds_differ():
    first, second = trained_parameters([0]), trained_parameters([1])
    assert not torch.allclose(first[0], second[0])


class Diverging(core.Objective):
    def __init__(self, bad_step: int):
        self.model = torch.nn.Linear(1, 1)
        self.bad_step, self.step = bad_step, 0

    def draw(self):
        self.step += 1
        return self.step - 1

    def loss(self, step):
        value = self.model.weight.sum() * 0 + 1.0
        return (value * float("nan") if step == self.bad_step else value).reshape(1)


def test_nan_loss_stops_training_naming_cell_and_step():
    message = r"cell abc123: training loss is nan at step 7 \(seed index 0\) at learning rate 0.1; lower it"
    with pytest.raises(core.DivergenceError, match=message):
        core.fit(Diverging(bad_step=7), core.Optimisation(steps=60, lr=0.1), "abc123", 1)


class Growing(core.Objective):
    """Seed 0's loss stays at 1; seed 1's is 1 until `from_step`, then `factor`."""

    def __init__(self, from_step: int, factor: float):
        self.model = torch.nn.Linear(1, 1)
        self.from_step, self.factor, self.step = from_step, factor, 0

    def draw(self):
        self.step += 1
        return self.step - 1

    def loss(self, step):
        value = self.model.weight.sum() * 0 + 1.0
        return torch.stack([value, value * (self.factor if step >= self.from_step else 1.0)])


def test_a_loss_grown_a_thousandfold_stops_training_though_finite():
    message = (r"cell abc123: training loss is 2000 at step 70 \(seed index 1\), over 1000 times its first \(1\), "
               r"at learning rate 0.1; lower it")
    with pytest.raises(core.DivergenceError, match=message):
        core.fit(Growing(from_step=70, factor=2000.0), core.Optimisation(steps=120, lr=0.1), "abc123", 2)


def test_a_loss_that_grows_less_trains_to_the_end():
    fitted = core.fit(Growing(from_step=70, factor=900.0), core.Optimisation(steps=120, lr=0.1), "abc123", 2)
    assert fitted.losses[-1].tolist() == [1.0, 900.0]


class NaNGradient(core.Objective):
    """Seed 1's loss |w| is finite at w = 0, but its gradient there is NaN."""

    def __init__(self):
        self.model = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(2, 1))])

    def draw(self):
        return None

    def loss(self, batch):
        w = self.model[0][:, 0]
        return torch.stack([w[0] ** 2, (w[1] ** 2).sqrt()])


def test_parameters_the_last_update_made_non_finite_stop_the_cell():
    message = (r"cell abc123: the last update left non-finite parameters \(seed index 1\) at learning rate 0.1; "
               "lower it")
    with pytest.raises(core.DivergenceError, match=message):
        core.fit(NaNGradient(), core.Optimisation(steps=1, lr=0.1, optimizer="gd"), "abc123", 2)


def test_train_cell_writes_every_file_with_metrics_per_seed(tmp_path):
    from iclrepro.tasks import cui2024 as tasks

    spec = cell_spec([0, 1], steps=5)
    data = {"paper": "cui2024", "scenario": spec["scenario"], "D": 6, "prompts": 50, "seed": 1}
    tasks.write_test_set(data, spec["test"], tmp_path / "test.parquet")
    training.train_cell(spec, "cellid", [str(tmp_path / "test.parquet")], str(tmp_path / "cell"))
    assert {p.name for p in (tmp_path / "cell").iterdir()} == set(store.CELL_FILES)
    metrics = store.read_parquet(tmp_path / "cell" / "metrics.parquet", content="cellid").to_pandas()
    assert list(metrics["seed"]) == [0, 1]
    # the stored excess risk is the stored model's on the test set (not an untrained model's)
    _, model = cui_models.load_cell(tmp_path / "cell")
    _, prompts = tasks.read_test_set(tmp_path / "test.parquet")
    excess = ((cui_models.predict(model, prompts).double() - tasks.clean_targets(prompts)) ** 2).mean(1)
    assert metrics["excess"].to_numpy() == pytest.approx(excess.numpy(), rel=1e-6)
    losses = store.read_parquet(tmp_path / "cell" / "train.parquet").to_pandas()
    assert len(losses) == 10 and losses["loss"].notna().all()
    state, saved = store.load_model(tmp_path / "cell" / "model.pt")
    assert saved == spec and state["W_Q"].shape[0] == 2


class Quadratic(core.Objective):
    """Loss 0.5 * ||w - target||^2 per seed: GD has a closed-form trajectory."""

    def __init__(self, seeds: int, precision: str = "32-true"):
        self.model = torch.nn.Linear(3, seeds, bias=False)  # weight (S, 3): one row per seed
        torch.nn.init.zeros_(self.model.weight)
        self.target = torch.arange(3.0)
        self.precision = precision

    def draw(self):
        return None

    def loss(self, batch):
        return 0.5 * ((self.model.weight - self.target.to(self.model.weight)) ** 2).sum(-1)

    def solve(self, batch):
        self.model.weight.copy_(self.target.expand_as(self.model.weight))
        return self.loss(batch)

    def trace(self, step):
        return {"distance": (self.model.weight - self.target.to(self.model.weight)).norm(dim=-1)} if step % 2 else None


def test_gradient_descent_follows_its_closed_form_and_keeps_snapshots_and_traces():
    objective = Quadratic(seeds=2)
    lr, steps = 0.1, 5
    fitted = core.fit(objective, core.Optimisation(steps=steps, lr=lr, optimizer="gd", snapshots=(0, 2)), "gd", 2)
    expected = (1 - (1 - lr) ** steps) * objective.target
    assert torch.allclose(objective.model.weight, expected.expand(2, 3), atol=1e-6)
    assert torch.equal(fitted.snapshots[0]["weight"], torch.zeros(2, 3))
    assert torch.allclose(fitted.snapshots[2]["weight"][0], (1 - (1 - lr) ** 2) * objective.target)
    distance = fitted.traces["distance"]          # one (steps, seeds) array, NaN where not traced
    assert distance.shape == (steps, 2) and list(np.flatnonzero(~np.isnan(distance[:, 0])) + 1) == [1, 3, 5]
    assert distance[4] == pytest.approx([(1 - lr) ** 5 * float(objective.target.norm())] * 2)
    table = core.loss_table(fitted, [0, 1]).to_pandas()
    assert table["distance"].notna().sum() == 6 and table["step"].min() == 1


def test_closed_form_fit_runs_one_solve_step():
    objective = Quadratic(seeds=1)
    fitted = core.fit(objective, core.Optimisation(steps=1, optimizer="closed_form"), "cf", 1)
    assert torch.equal(objective.model.weight[0], objective.target) and fitted.losses.shape == (1, 1)


def test_double_precision_trains_in_float64():
    objective = Quadratic(seeds=1, precision="64-true")
    core.fit(objective, core.Optimisation(steps=2, lr=0.1, optimizer="gd"), "f64", 1)
    assert objective.model.weight.dtype == torch.float64


def test_schedule_warms_up_linearly_then_holds_then_decays_to_zero():
    schedule = core.Optimisation(steps=10, lr=1.0, decay_fraction=0.4, warmup_steps=4)
    factors = [schedule.factor(step) for step in range(10)]
    assert factors[:6] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert factors[6] == 1.0 and factors[6:] == sorted(factors[6:], reverse=True)
    assert 0 < factors[9] < 0.2
    assert core.Optimisation(steps=10, lr=1.0).factor(0) == 1.0   # no warm-up unless asked


class Flat(Quadratic):
    """A loss with zero gradient: Adam's own update is 0, so only weight decay moves the weights."""

    def loss(self, batch):
        return (0 * self.model.weight).sum(-1)


def adam_trained_weight(objective: Quadratic, **optimisation) -> torch.Tensor:
    torch.nn.init.ones_(objective.model.weight)
    core.fit(objective, core.Optimisation(steps=5, lr=0.1, **optimisation), "adam", 2)
    return objective.model.weight.detach()


def test_adam_without_weight_decay_is_torchs_adam():
    objective = Quadratic(seeds=2)
    torch.nn.init.ones_(objective.model.weight)
    adam = torch.optim.Adam(objective.model.parameters(), lr=0.1)
    for _ in range(5):
        adam.zero_grad()
        objective.loss(None).sum().backward()
        adam.step()
    assert torch.equal(adam_trained_weight(Quadratic(seeds=2)), objective.model.weight.detach())


def test_weight_decay_is_decoupled_from_the_gradient():
    """AdamW: every step multiplies the weights by 1 - lr * weight_decay, whatever the gradient."""
    assert torch.allclose(adam_trained_weight(Flat(seeds=2), weight_decay=0.5), torch.full((2, 3), 0.95 ** 5))
    assert torch.equal(adam_trained_weight(Flat(seeds=2)), torch.ones(2, 3))


def test_plain_updates_refuse_a_trainer_whose_lightning_steps_would_do_more():
    """Updates skip manual_backward and the Lightning optimizer: refused where those would scale
    the loss (mixed precision), clip gradients or call a callback."""
    import lightning.pytorch as pl
    from lightning.fabric.plugins.environments import LightningEnvironment

    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", gradient_clip_val=1.0,
                         callbacks=[pl.callbacks.LearningRateMonitor()], logger=False, plugins=[LightningEnvironment()],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"MixedPrecision.*LearningRateMonitor.*gradient clipping at 1.0"):
        core.check_plain_updates(trainer)


def test_weight_decay_needs_adam():
    with pytest.raises(ValueError, match="weight_decay 0.1 needs the adam optimizer, not 'gd'"):
        core.Optimisation(steps=1, lr=0.1, optimizer="gd", weight_decay=0.1)


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        core.Optimisation(steps=1, optimizer="sgdd")


def test_a_cuda_accelerator_without_a_cuda_device_is_a_clear_error(monkeypatch):
    """Not torch's message about a missing ATen_cuda library, from deep inside the objective."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = r"accelerator 'cuda' \(the config's, or iclrepro bench --accelerator\).*no CUDA device.*accelerator cpu"
    with pytest.raises(accelerator.AcceleratorError, match=message):
        accelerator.device_of("cuda")
    assert accelerator.device_of("cpu") == torch.device("cpu")


class Interrupted(RuntimeError):
    pass


class Traced(training.Regression):
    """The cui2024 objective, tracing its first parameter's norm per seed at every third step."""

    def trace(self, step):
        first = next(self.model.parameters())
        return {"norm": first.reshape(len(first), -1).norm(dim=-1)} if step % 3 == 0 else None


class Stopping(Traced):
    """The traced cui2024 objective, killed (an exception) when it draws batch `stop_at`."""

    def __init__(self, spec, stop_at):
        super().__init__(spec, torch.device("cpu"))
        self.stop_at, self.drawn = stop_at, 0

    def draw(self):
        self.drawn += 1
        if self.drawn == self.stop_at:
            raise Interrupted
        return super().draw()


def test_resumed_training_equals_uninterrupted(tmp_path):
    spec = cell_spec([0, 1], steps=160)
    optimisation = core.Optimisation(**spec["training"]["optimisation"])
    whole = Traced(spec, torch.device("cpu"))
    expected = core.fit(whole, optimisation, "cell", 2)

    checkpoint = core.Checkpointing(tmp_path / "checkpoint.pt", every_seconds=0)
    with pytest.raises(Interrupted):
        core.fit(Stopping(spec, stop_at=130), optimisation, "cell", 2, checkpoint=checkpoint)
    assert torch.load(checkpoint.path, weights_only=True)["done"] == 100  # last chunk boundary
    resumed = Stopping(spec, stop_at=10**9)   # never stops: counts the batches it draws
    fitted = core.fit(resumed, optimisation, "cell", 2, checkpoint=checkpoint)
    assert resumed.drawn == 60   # only the steps after the checkpoint ran (a fresh start draws 160)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (fitted.losses == expected.losses).all()
    assert np.isfinite(fitted.traces["norm"][2::3]).all() and np.isnan(fitted.traces["norm"][::3]).all()
    assert np.array_equal(fitted.traces["norm"], expected.traces["norm"], equal_nan=True)  # those before too


def test_checkpoint_of_another_cell_is_ignored(tmp_path):
    spec = cell_spec([0], steps=60)
    optimisation = core.Optimisation(**spec["training"]["optimisation"])
    checkpoint = core.Checkpointing(tmp_path / "checkpoint.pt", every_seconds=0)
    core.fit(training.Regression(spec, torch.device("cpu")), optimisation, "other", 1, checkpoint=checkpoint)
    assert checkpoint.load("cell") is None and checkpoint.load("other")["done"] == 50


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(bytes(range(256)) * 8),              # not a torch file at all
    lambda path: path.write_bytes(path.read_bytes()[:300]),            # cut short
    lambda path: path.write_bytes(b""),
    lambda path: torch.save([1, 2], path),                             # no checkpoint's contents
])
def test_a_damaged_checkpoint_is_ignored_and_the_cell_trains_from_the_start(damage, tmp_path):
    spec = cell_spec([0], steps=60)
    optimisation = core.Optimisation(**spec["training"]["optimisation"])
    checkpoint = core.Checkpointing(tmp_path / "checkpoint.pt", every_seconds=0)
    whole = core.fit(training.Regression(spec, torch.device("cpu")), optimisation, "cell", 1, checkpoint=checkpoint)
    damage(checkpoint.path)
    assert checkpoint.load("cell") is None
    again = core.fit(training.Regression(spec, torch.device("cpu")), optimisation, "cell", 1, checkpoint=checkpoint)
    assert (again.losses == whole.losses).all()


def test_progress_lines_report_step_loss_rate_and_time_left(capsys):
    progress = core.Progress("abc", steps=200, every_seconds=0)
    losses = torch.full((200, 2), 0.5)
    for done in (50, 100, 150, 200):
        progress.update(done, losses)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # the first call starts the clock, the last step prints nothing
    assert re.fullmatch(r"cell abc: step 150/200 \(75%\), loss 0.5, \d+ steps/s, about [\d.]+ min left", lines[-1])
