"""fu2023 end to end at the smoke scale, in a copy of the workflow: figures, claims, CLI, reruns."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import (
    assert_paper_written,
    assert_plotting_change_only_redraws,
    cli,
    complete_cells,
    mean_squared_error,
    smoke_plan,
    stored_metrics,
)
from iclrepro.papers.fu2023 import FIGURES

pytestmark = pytest.mark.e2e

CURVES = {"target", "model", "n", "seed", "nmse", "test_mse", "lambda", "part", "samples", "slope"}
COLUMNS = {"A": CURVES, "B": CURVES, "C": CURVES,
           "D": {"M", "seed", "nmse", "gram_error", "source", "target", "n"}}


def test_every_figure_and_the_claims_are_written(workdir):
    assert_paper_written(workdir, "fu2023", COLUMNS, claims=6)


def test_tidy_data_pairs_the_models(workdir):
    figures = workdir / "results" / "figures" / "fu2023"
    a = pd.read_parquet(figures / "A.parquet")
    fits = a[a["part"] == "fit"]
    assert set(fits["model"]) == {"RFA", "RFMLP"} and set(fits["seed"]) == {0, 1}
    assert fits.groupby(["target", "n", "model"]).size().eq(2).all()
    d = pd.read_parquet(figures / "D.parquet")
    assert set(d["source"]) == {"finite M", "kernel limit"} and (d["nmse"] > 0).all()
    # Phi Phi^T approaches K_RFA as M grows (error ~ M^-1/2): every seed's largest M beats its smallest
    gram = d[d["source"] == "finite M"].pivot(index="seed", columns="M", values="gram_error")
    assert len(gram.columns) >= 2 and (gram[gram.columns.max()] < gram[gram.columns.min()]).all(), gram


def test_cells_are_complete(workdir):
    complete_cells(workdir, "fu2023")


def test_cli_lists_and_predicts(workdir, tmp_path):
    cells = smoke_plan(workdir, "fu2023").cells
    listing = cli(workdir, "cells", "--scale", "smoke", "--papers", "fu2023")
    assert f"fu2023: {len(cells)} cells: {len(cells)} done" in listing.stderr and "rfmlp K=32" in listing.stdout
    node = next(n for n in cells.values() if n.spec["model"]["kind"] == "rfa")
    out = tmp_path / "predictions.parquet"
    cli(workdir, "predict", f"results/cells/{node.id}", f"results/data/{node.spec['test']}.parquet", str(out))
    predictions = pd.read_parquet(out)
    assert list(predictions.columns) == ["sample", "seed", "prediction", "target"]
    assert set(predictions["seed"]) == {0, 1}
    mse = mean_squared_error(predictions, "target", ["seed"])
    assert mse.to_numpy() == pytest.approx(stored_metrics(workdir, node.id)["test_mse"].to_numpy(), rel=1e-5)


def test_reruns_touch_only_what_changed(workdir):
    assert_plotting_change_only_redraws(workdir, "fu2023", FIGURES)
