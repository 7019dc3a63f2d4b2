"""fu2023 cells: the closed-form fit through the Lightning module, written and read back."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from conftest import mean_squared_error
from iclrepro import store
from iclrepro.evaluation import fu2023 as evaluation
from iclrepro.models import fu2023 as models
from iclrepro.tasks import fu2023 as tasks
from iclrepro.training import core
from iclrepro.training import fu2023 as training

FITTING = {"lambdas": [1e-6, 1e-3, 1e-1], "validation_fraction": 0.2}


def data_spec(target: str, rows: int, seed: int) -> dict:
    return {"paper": "fu2023", "d": 4, "N": 4, "target": target, "rows": rows, "seed": seed, "noise": 0.0}


def cell_spec(kind: str, target: str = "key_poly_2", n: int = 400) -> dict:
    model = {"kind": kind, "K": 200} if kind == "rfmlp" else \
        {"kind": kind, "M": 40, "weight_std": 0.5, "bias_scale": 2.0 if kind == "brfa" else 0.0}
    return {"paper": "fu2023", "d": 4, "N": 4, "target": target, "n": n, "model": model, "seeds": [0, 1],
            "test": "t" * 16, "train": ["a" * 16, "b" * 16], "fitting": FITTING,
            "training": {"optimisation": {"steps": 1, "optimizer": "closed_form"}}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A test set and two training sets of key_poly_2 on disk: [test, train seed 0, train seed 1]."""
    folder = tmp_path_factory.mktemp("fu2023_data")
    paths = []
    for content, rows, seed in (("t" * 16, 500, 7), ("a" * 16, 400, 1), ("b" * 16, 400, 2)):
        paths.append(str(folder / f"{content}.parquet"))
        tasks.write_set(data_spec("key_poly_2", rows, seed), content, paths[-1])
    return paths


def test_data_sets_round_trip_and_are_checked(data, tmp_path):
    spec, test = tasks.read_set(data[0], content="t" * 16)
    assert spec["rows"] == 500 and test["x"].shape == (500, 5, 4)
    assert torch.allclose(test["x"].norm(dim=-1), torch.ones(500, 5, dtype=torch.float64))
    assert torch.equal(test["f"], tasks.target_values(tasks.Target.parse("key_poly_2"), test["x"]))
    with pytest.raises(store.StoreError, match="does not match"):
        tasks.read_set(data[0], content="a" * 16)


def test_a_cell_is_fitted_written_and_predicts(data, tmp_path, capsys):
    spec = cell_spec("rfa")
    training.train_cell(spec, "cell", data, str(tmp_path / "cell"))
    # a line per seed keeps a long fit's log fresh (a stale one reads as an ended job)
    fitted = re.findall(r"cell cell: seed (\d)/2 fitted \(lambda [\d.e+-]+, \d+ s\)", capsys.readouterr().err)
    assert fitted == ["1", "2"]
    assert sorted(p.name for p in (tmp_path / "cell").iterdir()) == sorted(store.CELL_FILES)
    metrics = pd.read_parquet(tmp_path / "cell" / "metrics.parquet")
    assert list(metrics["seed"]) == [0, 1] and set(metrics["lambda"]) <= set(FITTING["lambdas"])
    assert (metrics["nmse"] < 0.3).all(), metrics   # key_poly_2 is in RFA's reach at n = 400
    _, model = models.load_cell(tmp_path / "cell")
    out = tmp_path / "predictions.parquet"
    evaluation.predict(str(tmp_path / "cell"), data[0], str(out))
    predictions = pd.read_parquet(out)
    mse = mean_squared_error(predictions, "target", ["seed"])
    assert mse.to_numpy() == pytest.approx(metrics["test_mse"].to_numpy(), rel=1e-6)


def test_seeds_draw_their_own_weights_and_brfa_shares_rfa_noise():
    rfa, brfa = training.build_model(cell_spec("rfa")), training.build_model(cell_spec("brfa"))
    assert not torch.equal(rfa.W[0], rfa.W[1])
    assert torch.allclose(brfa.W - rfa.W, 2.0 * models.bias_matrix(4).expand_as(rfa.W))


def test_rfmlp_is_worse_than_rfa_on_a_query_key_target():
    """The paper's direction at a tiny size: one seed, qk_poly_1, n = 400 (can fail)."""
    found = {}
    x_test = tasks.sample(4, 4, 400, torch.Generator().manual_seed(11))
    target = tasks.Target.parse("qk_poly_1")
    for kind in ("rfa", "rfmlp"):
        objective = training.RidgeFit(cell_spec(kind, "qk_poly_1"), torch.device("cpu"))
        core.fit(objective, core.Optimisation(**objective.spec["training"]["optimisation"]), "test", 2)
        _, nmse = training.test_error(objective.model, {"x": x_test, "f": tasks.target_values(target, x_test)})
        found[kind] = nmse.mean()
    assert found["rfa"] < 0.5 * found["rfmlp"], found
