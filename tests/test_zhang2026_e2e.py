"""zhang2026 end to end at the smoke scale, in a copy of the workflow: figures, claims, CLI, reruns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_paper_written, assert_plotting_change_only_redraws, cli, complete_cells, smoke_plan
from iclrepro.models import zhang2026 as models
from iclrepro.papers.zhang2026 import FIGURES
from iclrepro.tasks import zhang2026 as tasks

pytestmark = pytest.mark.e2e

LOOP_COLUMNS = {"T", "seed", "series", "source", "direction_error", "margin_gap", "accuracy", "w_norm"}
COLUMNS = {
    "E1": LOOP_COLUMNS | {"N", "max_abs_diff_ngd"},
    "E2": {"step", "seed", "quantity", "value", "eta"},
    "E3": {"part", "matrix", "panel", "step", "i", "j", "value", "seed", "offblock_fraction",
           "seen_offblock_fraction"},
    "E4": LOOP_COLUMNS | {"cos_ngd_min", "cos_ngd_mean", "rel_err_ngd"},
    "E5": LOOP_COLUMNS | {"family", "setting", "cos_ngd_min"},
    "E6": LOOP_COLUMNS | {"checkpoint", "Q_diag", "V_diag", "Q_cos", "V_cos"},
    "E7": {"part", "prompt", "i", "z1", "z2", "u1", "u2", "alpha_share", "support", "T", "seed", "p",
           "support_mass", "w1", "w2"},
}


def test_every_figure_and_the_claims_are_written(workdir):
    assert_paper_written(workdir, "zhang2026", COLUMNS, claims=10)


def test_tidy_data_compares_the_model_with_ngd(workdir):
    figures = workdir / "results" / "figures" / "zhang2026"
    e1 = pd.read_parquet(figures / "E1.parquet")
    assert set(e1["source"]) == {"constructed", "algorithm", "reference"}
    assert e1[e1["source"] == "constructed"]["max_abs_diff_ngd"].max() < 1e-10
    e4 = pd.read_parquet(figures / "E4.parquet")
    assert set(e4[e4["source"] == "trained"]["seed"]) == {0, 1} and set(e4["series"]) >= {"NGD", "GD"}


def test_cells_are_complete_with_their_snapshots(workdir):
    cells = complete_cells(workdir, "zhang2026")
    assert len(cells) == 3
    for node_id, node in cells.items():
        kept = models.load_cell(workdir / "results" / "cells" / node_id)[2]
        assert sorted(kept) == node.spec["training"]["optimisation"]["snapshots"]


def test_cli_lists_and_predicts(workdir, tmp_path):
    listing = cli(workdir, "cells", "--scale", "smoke", "--papers", "zhang2026")
    assert "zhang2026: 3 cells: 3 done" in listing.stderr and "Q, V blocks" in listing.stdout
    node = next(n for n in smoke_plan(workdir, "zhang2026").cells.values() if not n.spec["model"]["full_blocks"])
    out = tmp_path / "predictions.parquet"
    cli(workdir, "predict", f"results/cells/{node.id}", f"results/data/{node.spec['heldout']}.parquet", str(out))
    predictions = pd.read_parquet(out)
    assert list(predictions.columns) == ["prompt", "seed", "T", "score", "y_hat", "y_query"]
    assert set(predictions["T"]) == {1, 10, 100, 1000} and set(predictions["seed"]) == {0, 1}
    # One loop is the trained layer's query output, as training computes it (another code path)
    _, model, _ = models.load_cell(workdir / "results" / "cells" / node.id)
    _, prompts = tasks.read_test_set(workdir / "results" / "data" / f"{node.spec['heldout']}.parquet")
    z, x_q, y_q = tasks.context(prompts)
    H = models.embed(z, x_q, prompts["w0"])
    with torch.no_grad():
        scores = (model.query_output(H.expand(len(model.W_KQ), *H.shape)) * x_q).sum(-1)      # (S, B)
    one_loop = predictions[predictions["T"] == 1].sort_values(["seed", "prompt"])
    np.testing.assert_allclose(one_loop["score"], scores.numpy().reshape(-1), rtol=1e-9, atol=1e-12)
    assert (one_loop["y_hat"] == np.sign(one_loop["score"])).all()
    assert (one_loop["y_query"].to_numpy() == y_q.numpy()[one_loop["prompt"]]).all()


def test_reruns_touch_only_what_changed(workdir):
    assert_plotting_change_only_redraws(workdir, "zhang2026", FIGURES)
