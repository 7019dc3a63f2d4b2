"""zhang2026 training (spec §3): the one-step-supervised layer reaches the construction."""

from __future__ import annotations

import pytest
import torch

from iclrepro import store
from iclrepro.models import zhang2026 as models
from iclrepro.tasks import zhang2026 as tasks
from iclrepro.training import core
from iclrepro.training import zhang2026 as training


def cell_spec(seeds, steps, d=3, N=10, full_blocks=False, snapshots=(), lr=0.01, batch=64):
    return {"paper": "zhang2026", "distribution": tasks.Distribution(d=d, N=N).to_spec(), "eta": 0.2,
            "model": {"init_std": 0.01, "target": "ngd", "full_blocks": full_blocks}, "seeds": seeds,
            "heldout": "0" * 16, "device": "cpu",
            "training": {"batch": batch, "sigma_w": 1.0, "optimisation": {
                "steps": steps, "lr": lr, "decay_fraction": 0.2, "optimizer": "adam", "snapshots": list(snapshots)}}}


def fit(spec):
    objective = training.OneStepSupervision(spec, torch.device("cpu"))
    fitted = core.fit(objective, core.Optimisation(**spec["training"]["optimisation"]), "test", len(spec["seeds"]))
    return objective, fitted


def test_training_reaches_the_construction():
    """Spec §5 test 6 (loss < 1e-6 and ||Q + I||_F < 1e-2), made quick: d = 3, batch 32 and
    300 Adam steps at lr 0.03 instead of 1,000 at lr 0.01."""
    objective, fitted = fit(cell_spec([0], steps=300, batch=32, lr=0.03))
    final = objective.trace(300)
    assert fitted.losses[-1, 0] < 1e-6
    assert final["dist_Q"].item() < 1e-2 and final["dist_V"].item() < 1e-2
    assert objective.model.W_KQ.dtype == torch.float64


def test_ensemble_trains_each_seed_as_if_alone():
    together, _ = fit(cell_spec([2, 5], steps=15))
    for slot, seed in enumerate((2, 5)):
        alone, _ = fit(cell_spec([seed], steps=15))
        assert torch.allclose(together.model.W_KQ[slot], alone.model.W_KQ[0], atol=1e-12)


def test_trace_is_zero_distance_at_the_construction():
    objective = training.OneStepSupervision(cell_spec([0], steps=1, full_blocks=True), torch.device("cpu"))
    with torch.no_grad():
        objective.model.W_KQ.zero_()
        objective.model.W_PV.zero_()
        objective.model.W_KQ[0, 3:, :3] = -torch.eye(3)
        objective.model.W_PV[0, 3:, :3] = 0.2 * torch.eye(3, dtype=torch.float64)
    traced = objective.trace(1)
    assert all(traced[name].item() == 0 for name in ("dist_Q", "dist_V", "Q_offdiag", "V_offdiag", "Q_offblock"))
    assert traced["Q_diag"].item() == -1 and traced["V_diag"].item() == pytest.approx(0.2)
    assert objective.loss(objective.draw()).item() < 1e-28


def test_train_cell_writes_snapshots_traces_and_heldout_error(tmp_path):
    spec = cell_spec([0, 1], steps=8, snapshots=(0, 4))
    heldout = {"paper": "zhang2026", "distribution": tasks.Distribution(d=3, N=10, w0_norm=3**0.5).to_spec(),
               "prompts": 20, "seed": 1}
    tasks.write_test_set(heldout, spec["heldout"], tmp_path / "heldout.parquet")
    training.train_cell(spec, "cellid", [str(tmp_path / "heldout.parquet")], str(tmp_path / "cell"))
    assert {p.name for p in (tmp_path / "cell").iterdir()} == set(store.CELL_FILES)
    _, model, snapshots = models.load_cell(tmp_path / "cell")
    assert sorted(snapshots) == [0, 4]
    steps = store.read_parquet(tmp_path / "cell" / "train.parquet").to_pandas()
    assert len(steps) == 16 and steps[["loss", "dist_Q", "V_diag"]].notna().all().all()
    metrics = store.read_parquet(tmp_path / "cell" / "metrics.parquet", content="cellid").to_pandas()
    assert list(metrics["seed"]) == [0, 1]
    # the stored held-out error is the stored model's on the held-out set (not an untrained model's)
    _, prompts = tasks.read_test_set(tmp_path / "heldout.parquet")
    found = training.one_step_error(model, prompts, spec["eta"], spec["model"]["target"])
    assert metrics["heldout_loss"].to_numpy() == pytest.approx(found.numpy(), rel=1e-9)


def test_train_cell_names_a_heldout_set_that_does_not_match(tmp_path):
    spec = cell_spec([0], steps=2)
    heldout = {"paper": "zhang2026", "distribution": tasks.Distribution(d=3, N=10).to_spec(), "prompts": 4, "seed": 1}
    tasks.write_test_set(heldout, "f" * 16, tmp_path / "heldout.parquet")
    with pytest.raises(store.StoreError, match="heldout.parquet: metadata id"):
        training.train_cell(spec, "cellid", [str(tmp_path / "heldout.parquet")], str(tmp_path / "cell"))
