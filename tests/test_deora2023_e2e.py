"""deora2023 end to end at the smoke scale, in a copy of the workflow: figures, claims, CLI, reruns."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import (
    assert_paper_written,
    assert_plotting_change_only_redraws,
    cli,
    complete_cells,
    smoke_plan,
    stored_metrics,
)
from iclrepro.papers.deora2023 import FIGURES

pytestmark = pytest.mark.e2e

CURVE = {"step", "seed", "loss", "H"}
COLUMNS = {
    "E1": CURVE | {"part", "series", "value", "gamma"},
    "E2": CURVE | {"test_loss", "test_error", "train_error"},
    "E3": CURVE | {"distance", "relative_distance"},
    "E4": {"part", "H", "seed", "init", "gamma_all", "gamma_W", "gamma_V", "phi0_max", "series", "value", "step",
           "loss"},
    "E5": {"part", "n", "H", "seed", "train_loss", "test_loss", "test_error", "gamma", "T4_bound", "series"},
    "hessian": {"probe", "H", "seed", "sequence", "hessian_norm", "lambda_min", "loss", "weak_convexity", "slope"},
}


def test_every_figure_and_the_claims_are_written(workdir):
    assert_paper_written(workdir, "deora2023", COLUMNS, claims=11)


def test_tidy_data_hold_margins_and_theory_lines(workdir):
    figures = workdir / "results" / "figures" / "deora2023"
    e4 = pd.read_parquet(figures / "E4.parquet")
    margins = e4[e4["part"] == "margin"]
    assert set(margins["init"]) == {"random", "one_step"} and (margins["gamma_V"] > 0).all()
    # a block's features are part of the whole gradient's: its margin cannot be larger
    for block in ("gamma_W", "gamma_V"):
        assert (margins[block] <= 1.001 * margins["gamma_all"]).all(), margins
    assert set(e4[e4["part"] == "closed_form"]["series"]) == {"gamma_value_uniform", "gamma_oracle"}
    e1 = pd.read_parquet(figures / "E1.parquet")
    assert set(e1[e1["part"] == "theory"]["series"]) == {"T3 bound", "c / (eta gamma^2 k)"}


def test_cells_are_complete(workdir):
    complete_cells(workdir, "deora2023")


def test_cli_lists_and_predicts(workdir, tmp_path):
    listing = cli(workdir, "cells", "--scale", "smoke", "--papers", "deora2023")
    cells = smoke_plan(workdir, "deora2023").cells
    assert f"deora2023: {len(cells)} cells: {len(cells)} done" in listing.stderr and "init=one_step" in listing.stdout
    node = next(iter(cells.values()))
    out = tmp_path / "predictions.parquet"
    cli(workdir, "predict", f"results/cells/{node.id}", f"results/data/{node.spec['data'][0]}.parquet", str(out))
    predictions = pd.read_parquet(out)
    assert list(predictions.columns) == ["sequence", "seed", "phi", "y_hat", "y"]
    assert len(predictions) == node.spec["n_test"] * len(node.spec["seeds"])
    # the first data set is seed 0's: its rows give seed 0's stored test error
    first = predictions[predictions["seed"] == node.spec["seeds"][0]]
    stored = stored_metrics(workdir, node.id)["test_error"].iloc[0]
    assert (first["y"] * first["phi"] <= 0).mean() == pytest.approx(stored, abs=1e-12)


def test_a_plotting_change_only_redraws(workdir):
    assert_plotting_change_only_redraws(workdir, "deora2023", FIGURES)
