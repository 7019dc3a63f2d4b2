"""chen2024 end to end at the smoke scale, in a copy of the workflow: figures, claims, CLI, reruns."""

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
from iclrepro import store
from iclrepro.evaluation import chen2024 as evaluation
from iclrepro.models import chen2024 as models
from iclrepro.papers import chen2024 as planner
from iclrepro.papers.chen2024 import FIGURES

pytestmark = pytest.mark.e2e

PROBE_COLUMNS = {"L", "sigma", "n", "model", "seed", "layer", "probe_risk", "output_risk", "eta"}
COLUMNS = {
    "risk_vs_n": {"H", "seed", "n", "excess_risk"},
    "importance": {"seed", "layer", "head", "risk", "risk_full", "importance", "share", "rank", "n"},
    "prune_probe": PROBE_COLUMNS,
    "depth_noise": PROBE_COLUMNS,
    "algorithms": {"sigma", "n", "method", "source", "excess_risk", "eta", "T", "lam", "alpha"},
    "dimension": {"d", "s", "n", "sigma", "method", "excess_risk", "eta", "T", "lam", "alpha"},
}


def test_every_figure_and_the_claims_are_written(workdir):
    assert_paper_written(workdir, "chen2024", COLUMNS, claims=9)


def test_tidy_data_records_models_and_tuned_baselines(workdir):
    figures = workdir / "results" / "figures" / "chen2024"
    probes = pd.read_parquet(figures / "depth_noise.parquet")
    assert set(probes["model"]) == {"full", "pruned", "single-head", "GD, l steps", "PtO, l - 1 steps"}
    assert set(probes["sigma"]) == {0.1, 0.5} and probes.loc[probes["model"].str.contains("steps"), "eta"].notna().all()
    main = probes[(probes["L"] == 2) & (probes["sigma"] == 0.1)].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_parquet(figures / "prune_probe.parquet"), main)
    algorithms = pd.read_parquet(figures / "algorithms.parquet")
    ridge = algorithms[algorithms["method"] == "ridge"]
    assert ridge["lam"].notna().all() and set(algorithms["source"]) == {"baseline", "trained", "theory"}
    dimension = pd.read_parquet(figures / "dimension.parquet")
    assert set(dimension["d"]) == {4, 8} and dimension.groupby("d")["method"].nunique().eq(7).all()
    importance = pd.read_parquet(figures / "importance.parquet")
    assert importance.groupby(["seed", "layer"])["share"].sum().round(6).eq(1).all()


def test_cells_are_complete(workdir):
    assert len(complete_cells(workdir, "chen2024")) == 4


def test_cli_lists_and_predicts(workdir, tmp_path):
    listing = cli(workdir, "cells", "--scale", "smoke", "--papers", "chen2024")
    assert "chen2024: 4 cells: 4 done" in listing.stderr and "L=2" in listing.stdout
    node = next(iter(smoke_plan(workdir, "chen2024").cells.values()))
    out = tmp_path / "predictions.parquet"
    cli(workdir, "predict", f"results/cells/{node.id}", f"results/data/{node.spec['heldout']}.parquet", str(out))
    predictions = pd.read_parquet(out)
    assert list(predictions.columns) == ["prompt", "seed", "n", "prediction", "target"]
    assert set(predictions["n"]) == set(range(node.spec["task"]["n"] + 1)) and set(predictions["seed"]) == {0, 1}
    # per seed and n, the rows give the cell's stored excess risk on the same test set
    risk = mean_squared_error(predictions, "target", ["seed", "n"])
    metrics = stored_metrics(workdir, node.id).set_index(["seed", "n"])
    assert risk.to_numpy() == pytest.approx(metrics.loc[risk.index, "excess_risk"].to_numpy(), rel=1e-4)


@pytest.mark.parametrize(("name", "table"), [("importance", evaluation.importance),
                                             ("depth_noise", evaluation.probing)])
def test_a_tables_runtime_ask_counts_the_passes_it_runs(workdir, monkeypatch, name, table):
    """The tables that run trained models ask SLURM for time by the FLOPs of their passes
    (planner.table_flops, 24 D^2 a token and block): the tokens they put through the models'
    blocks, counted here as they run, are the ones it counts."""
    counted, forward = [], models.Block.forward

    def counting(block, h, *args):
        counted.append(24 * block.s.width ** 2 * h.shape[:-1].numel())   # seeds x prompts x tokens a prompt
        return forward(block, h, *args)

    monkeypatch.setattr(models.Block, "forward", counting)
    node = smoke_plan(workdir, "chen2024").get("tidy", f"chen2024/{name}")
    table(node.spec, store.Layout(str(workdir / "results")))
    assert len(counted) > 1 and sum(counted) == planner.table_flops(node)


def test_reruns_touch_only_what_changed(workdir):
    assert_plotting_change_only_redraws(workdir, "chen2024", FIGURES)
