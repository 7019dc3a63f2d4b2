"""chen2024 end to end at the smoke scale, in a copy of the workflow: figures, claims, CLI, reruns."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import SMOKE, cli, copy_run, snakemake
from iclrepro import config, plan, store
from iclrepro.evaluation.claims import SCHEMA as CLAIM_SCHEMA
from iclrepro.papers.chen2024 import FIGURES

pytestmark = pytest.mark.e2e

PROBE_COLUMNS = {"L", "sigma", "n", "model", "seed", "layer", "probe_risk", "output_risk"}
COLUMNS = {
    "risk_vs_n": {"H", "seed", "n", "excess_risk"},
    "importance": {"seed", "layer", "head", "risk", "risk_full", "importance", "share", "rank", "n"},
    "prune_probe": PROBE_COLUMNS,
    "depth_noise": PROBE_COLUMNS,
    "algorithms": {"sigma", "n", "method", "source", "excess_risk", "eta", "T", "lam", "alpha"},
}


def smoke_plan(workdir) -> plan.Plan:
    return plan.build(config.load(workdir / "config.yaml", {"scale": "smoke", "papers": "chen2024"}, workdir))


def planned_rules(workdir) -> list[str]:
    return re.findall(r"^rule (\w+):", snakemake(workdir, "-n", *SMOKE).stdout, flags=re.M)


@pytest.fixture(scope="module")
def workdir(smoke_run, tmp_path_factory):
    return copy_run(smoke_run, tmp_path_factory.mktemp("chen2024") / "run")


def test_every_figure_and_the_claims_are_written(workdir):
    figures = workdir / "results" / "figures" / "chen2024"
    for name in FIGURES:
        for ext in ("png", "pdf", "parquet", "json"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        tidy = pd.read_parquet(figures / f"{name}.parquet")
        assert COLUMNS[name] <= set(tidy.columns), (name, COLUMNS[name] - set(tidy.columns))
    claims = pd.read_parquet(workdir / "results" / "claims" / "chen2024.parquet")
    assert list(claims.columns) == CLAIM_SCHEMA.names and claims["passed"].dtype == bool
    assert len(claims) == 8 and set(claims["figure"]) == set(FIGURES)
    assert all(claim_id in (workdir / "results" / "claims.md").read_text() for claim_id in claims["claim_id"])


def test_tidy_data_records_models_and_tuned_baselines(workdir):
    figures = workdir / "results" / "figures" / "chen2024"
    probes = pd.read_parquet(figures / "depth_noise.parquet")
    assert set(probes["model"]) == {"full", "pruned", "single-head"} and set(probes["sigma"]) == {0.1, 0.5}
    algorithms = pd.read_parquet(figures / "algorithms.parquet")
    ridge = algorithms[algorithms["method"] == "ridge"]
    assert ridge["lam"].notna().all() and set(algorithms["source"]) == {"baseline", "trained", "theory"}
    importance = pd.read_parquet(figures / "importance.parquet")
    assert importance.groupby(["seed", "layer"])["share"].sum().round(6).eq(1).all()


def test_cells_are_complete(workdir):
    cells = smoke_plan(workdir).cells
    assert len(cells) == 4
    for node_id in cells:
        cell = workdir / "results" / "cells" / node_id
        assert sorted(p.name for p in cell.iterdir()) == sorted(store.CELL_FILES)


def test_cli_lists_and_predicts(workdir, tmp_path):
    listing = cli(workdir, "cells", "--scale", "smoke", "--papers", "chen2024")
    assert "chen2024: 4 cells: 4 done" in listing.stderr and "L=2" in listing.stdout
    node = next(iter(smoke_plan(workdir).cells.values()))
    out = tmp_path / "predictions.parquet"
    cli(workdir, "predict", f"results/cells/{node.id}", f"results/data/{node.spec['heldout']}.parquet", str(out))
    predictions = pd.read_parquet(out)
    assert list(predictions.columns) == ["prompt", "seed", "n", "prediction", "target"]
    assert set(predictions["n"]) == set(range(node.spec["task"]["n"] + 1)) and set(predictions["seed"]) == {0, 1}


def test_reruns_touch_only_what_changed(workdir):
    assert planned_rules(workdir) == []
    figure_code = workdir / "src" / "iclrepro" / "figures" / "chen2024.py"
    figure_code.write_text(figure_code.read_text() + "\n# a plotting-only change\n")
    rules = planned_rules(workdir)
    assert rules.count("draw") == len(FIGURES) and not {"train", "tidy", "data", "theory"} & set(rules)
