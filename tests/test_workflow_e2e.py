"""End to end at the smoke scale, in a copy of the workflow: figures, claims, CLI, reruns.

The rerun test changes the copy's config and code, so it comes last.

The rerun checks count jobs in dry runs: (a) a finished run has nothing left to do;
(b) changing one scenario's value reruns exactly that scenario's cells and what is
downstream of them; (c) reverting the value trains nothing; (d) a change in plotting
code redraws figures and trains nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter

import pandas as pd
import pytest

from conftest import (
    SMOKE,
    assert_figures_written,
    assert_plotting_change_only_redraws,
    cli,
    cli_command,
    complete_cells,
    mean_squared_error,
    smoke_plan,
    snakemake,
    stored_metrics,
    written_claims,
)
from iclrepro.papers.cui2024 import FIGURES

pytestmark = pytest.mark.e2e

NOISY = "noisy_0.5: {d: 5, sigma2: 0.5}"


def planned_jobs(workdir) -> list[tuple[str, str]]:
    """(rule, first output) of every job a dry run would execute."""
    out = snakemake(workdir, "-n", *SMOKE).stdout
    return re.findall(r"^rule (\w+):\n(?:    (?!output).*\n)*?    output: ([^,\n]+)", out, flags=re.M)


def counts(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


def test_every_figure_and_claim_file_is_written(workdir):
    assert_figures_written(workdir, "cui2024", FIGURES)
    assert len(written_claims(workdir, "cui2024")) >= 8


def test_the_run_keeps_its_results_out_of_git(workdir):
    assert (workdir / "results" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_tidy_data_has_trained_theory_and_baseline_rows(workdir):
    f3 = pd.read_parquet(workdir / "results" / "figures" / "cui2024" / "F3.parquet")
    assert set(f3["source"]) == {"trained", "theory", "baseline"}
    trained = f3[f3["source"] == "trained"]
    assert set(trained["seed"]) == {0, 1} and (trained["excess"] > 0).all()


def test_cells_are_complete_and_readable(workdir):
    complete_cells(workdir, "cui2024")


def test_cli_lists_cells_as_done(workdir):
    listing = cli(workdir, "cells", "--scale", "smoke", "--papers", "cui2024")
    rows = [line.split("\t") for line in listing.stdout.splitlines()]
    assert len(rows) == len(smoke_plan(workdir, "cui2024").cells) and all(row[3] == "done" for row in rows)
    assert "cui2024: 24 cells: 24 done, 0 running, 0 failed, 0 interrupted, 0 pending" in listing.stderr


def test_cli_lists_the_cells_of_the_results_directory_it_is_given(workdir, tmp_path):
    """After `snakemake --config results=DIR`, `iclrepro cells --results DIR` reads DIR."""
    listing = cli(workdir, "cells", "--scale", "smoke", "--papers", "cui2024", "--results", str(tmp_path))
    assert "cui2024: 24 cells: 0 done, 0 running, 0 failed, 0 interrupted, 24 pending" in listing.stderr


def test_cli_into_a_closed_pipe_ends_without_a_traceback(workdir):
    """`iclrepro cells | head`: here the reader closes the pipe before anything is written."""
    listing = subprocess.Popen(**cli_command(workdir, "cells", "--scale", "smoke"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    listing.stdout.close()
    assert listing.wait() == 1 and "Traceback" not in listing.stderr.read()


def test_cli_predict_gives_one_row_per_prompt_and_seed(workdir, tmp_path):
    node = next(iter(smoke_plan(workdir, "cui2024").cells.values()))
    prompts = workdir / "results" / "data" / f"{node.spec['test']}.parquet"
    out = tmp_path / "predictions.parquet"
    cli(workdir, "predict", f"results/cells/{node.id}", str(prompts), str(out))
    predictions = pd.read_parquet(out)
    assert list(predictions.columns) == ["prompt", "seed", "prediction", "y_query"]
    assert len(predictions) == 2 * 400 and predictions["prediction"].notna().all()
    assert (predictions.groupby("prompt")["y_query"].nunique() == 1).all()
    # each seed's rows are its own predictions on the cell's test set: they give its stored test MSE
    mse = mean_squared_error(predictions, "y_query", ["seed"])
    assert mse.to_numpy() == pytest.approx(stored_metrics(workdir, node.id)["mse"].to_numpy(), rel=1e-5)


def test_every_figure_has_its_provenance(workdir):
    planned = smoke_plan(workdir, "cui2024")
    for draw in planned.nodes["draw"].values():
        record = json.loads((workdir / "results" / "figures" / "cui2024" / f"{draw.name}.json").read_text())
        expected = sorted({cell.id for tidy in draw.inputs for cell in tidy.inputs if cell.stage == "train"})
        assert [cell["id"] for cell in record["cells"]] == expected
        assert all(cell["seeds"] == [0, 1] and cell["provenance"]["seconds"] > 0 for cell in record["cells"])
        assert {"python", "torch", "lightning", "snakemake"} <= record["versions"].keys()
        assert "commit" in record["git"] and record["training_seconds"] > 0


def cell_mtimes(workdir) -> dict[str, float]:
    return {cell.name: (cell / "metrics.parquet").stat().st_mtime
            for cell in (workdir / "results" / "cells").iterdir()}


def batch_ids(jobs, rule: str) -> set[str]:
    return {output.rsplit("/", 1)[1].removesuffix(".json") for name, output in jobs if name == rule}


def test_reruns_touch_only_what_changed(workdir):
    # (a) a finished run has nothing left to do
    assert planned_jobs(workdir) == []

    # (b) one scenario's value: only its cells, its data and theory, and what depends on them
    before = smoke_plan(workdir, "cui2024")
    config_file = workdir / "config.yaml"
    original = config_file.read_text()
    config_file.write_text(original.replace(NOISY, NOISY.replace("0.5}", "0.4}")))
    after = smoke_plan(workdir, "cui2024")
    new_cells = set(after.cells) - set(before.cells)
    assert new_cells and all(after.cells[i].spec["scenario"]["sigma2"] == 0.4 for i in new_cells)
    jobs = planned_jobs(workdir)
    # the batches whose cells changed (new cells in, old ones out); data sets are made on demand
    assert batch_ids(jobs, "train") == set(after.batches) - set(before.batches) and not counts(jobs)["data"]
    assert {output for rule, output in jobs if rule == "theory"} == {"results/theory/cui2024/noisy_0.5.parquet"}
    assert {output.rsplit("/", 1)[1] for rule, output in jobs if rule == "tidy"} == {"F3.parquet", "T1.parquet"}
    assert counts(jobs)["draw"] == 2 and counts(jobs)["claims"] == 1
    trained_before = cell_mtimes(workdir)
    snakemake(workdir, *SMOKE)
    trained_after = cell_mtimes(workdir)
    assert set(trained_after) - set(trained_before) == new_cells  # the batches trained only the new cells
    assert all(trained_after[cell] == mtime for cell, mtime in trained_before.items())

    # (c) reverting finds the old cells again: nothing to train or generate
    config_file.write_text(original)
    jobs = counts(planned_jobs(workdir))
    assert jobs["train"] == 0 and jobs["data"] == 0 and jobs["tidy"] == 2
    snakemake(workdir, *SMOKE)

    # (d) a comment changes nothing; a plotting-only code change redraws every figure and trains nothing
    assert_plotting_change_only_redraws(workdir, "cui2024", FIGURES)
