"""Shared test helpers: the repository root and a fresh copy of the workflow to run in."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def copy_workflow(target: Path) -> Path:
    """A copy of the workflow and its package source, so a test may edit either."""
    from iclrepro import workspace

    return workspace.copy_workflow(ROOT, target)


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def cli_command(workdir: Path, *args: str) -> dict:
    """Popen's arguments to run `iclrepro` from the workflow copy's own source."""
    return {"args": [sys.executable, "-m", "iclrepro", *args], "cwd": workdir,
            "env": dict(os.environ, PYTHONPATH=str(workdir / "src")), "text": True}


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(**cli_command(workdir, *args), capture_output=True, check=True)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def raw() -> dict:
    """config.yaml as written (before validation and scale resolution)."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.fixture(scope="session")
def schema() -> dict:
    from iclrepro import config

    return config.load_schema(ROOT)


SMOKE = ("--config", "scale=smoke")  # every implemented paper (the config's default list)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke run of every paper. Read-only: use `copy_run` before changing anything."""
    workdir = copy_workflow(tmp_path_factory.mktemp("smoke_run"))
    snakemake(workdir, *SMOKE)
    return workdir


@pytest.fixture(scope="module")
def workdir(smoke_run, tmp_path_factory, request) -> Path:
    """A copy of the smoke run for one test module, which may change it."""
    return copy_run(smoke_run, tmp_path_factory.mktemp(request.module.__name__) / "run")


def copy_run(run: Path, target: Path) -> Path:
    """A copy of a finished run (workflow, results and Snakemake's records, mtimes kept)."""
    shutil.copytree(run, target, symlinks=True)
    return target


def smoke_plan(workdir: Path, paper: str):
    """The smoke-scale plan of one paper in a workflow copy."""
    from iclrepro import config, plan

    return plan.build(config.load(workdir / "config.yaml", {"scale": "smoke", "papers": paper}, workdir))


def assert_figures_written(workdir: Path, paper: str, figures) -> None:
    """Every figure's png, pdf, tidy parquet and provenance json exists and is not empty.

    `figures` lists the names, or maps each name to the columns its tidy data must have.
    """
    import pandas as pd

    folder = workdir / "results" / "figures" / paper
    for name in figures:
        for ext in ("png", "pdf", "parquet", "json"):
            assert (folder / f"{name}.{ext}").stat().st_size > 0, f"{paper}/{name}.{ext}"
        if isinstance(figures, dict):
            missing = figures[name] - set(pd.read_parquet(folder / f"{name}.parquet").columns)
            assert not missing, f"{paper}/{name}.parquet lacks {missing}"


def written_claims(workdir: Path, paper: str):
    """A paper's claim verdicts, checked for the shared columns and listed in results/claims.md."""
    import pandas as pd

    from iclrepro.evaluation.claims import SCHEMA

    claims = pd.read_parquet(workdir / "results" / "claims" / f"{paper}.parquet")
    assert list(claims.columns) == SCHEMA.names and claims["passed"].dtype == bool
    table = (workdir / "results" / "claims.md").read_text()
    assert table.startswith("# Claim verdicts (smoke scale)\n")   # the end-to-end runs are smoke's
    assert all(claim_id in table for claim_id in claims["claim_id"])
    return claims


def assert_paper_written(workdir: Path, paper: str, columns: dict[str, set], claims: int) -> None:
    """Every figure of a paper, with the tidy columns `columns` names for it, and its `claims`
    verdicts, which between them cover every figure."""
    from iclrepro import plan

    figures = plan.planner(paper).FIGURES
    assert sorted(columns) == sorted(figures)
    assert_figures_written(workdir, paper, columns)
    verdicts = written_claims(workdir, paper)
    assert len(verdicts) == claims and set(verdicts["figure"]) == set(figures)


def complete_cells(workdir: Path, paper: str) -> dict:
    """A paper's smoke cells, by id, each checked to hold exactly a stored cell's files."""
    from iclrepro import store

    cells = smoke_plan(workdir, paper).cells
    for node_id in cells:
        assert sorted(path.name for path in (workdir / "results" / "cells" / node_id).iterdir()) == \
            sorted(store.CELL_FILES), node_id
    return cells


def stored_metrics(workdir: Path, node_id: str):
    """A trained cell's metrics.parquet as a DataFrame."""
    import pandas as pd

    return pd.read_parquet(workdir / "results" / "cells" / node_id / "metrics.parquet")


def mean_squared_error(predictions, target: str, by: list[str]):
    """Mean (prediction - target)^2 over `iclrepro predict`'s rows, grouped by the columns `by`,
    in float64."""
    errors = (predictions["prediction"].astype(float) - predictions[target].astype(float)) ** 2
    return errors.groupby([predictions[column] for column in by]).mean()


def as_written_on_another_node(log_text: str) -> str:
    """A cell log's text as if its job ran on a cluster node, whose processes this machine cannot see."""
    return log_text.replace(f" on {socket.gethostname()}", " on a-cluster-node")


def plan_paper(raw: dict, schema: dict, paper: str, scale: str = "quick", edit=lambda block: None):
    """The plan of one paper at `scale`, after `edit` changed a copy of its config block."""
    import copy

    from iclrepro import config, plan

    changed = copy.deepcopy(raw)
    edit(changed[paper])
    return plan.build(config.check_and_resolve(dict(changed, scale=scale, papers=[paper]), schema))


def planned_rules(workdir: Path) -> list[str]:
    """The rules a smoke-scale dry run in `workdir` would run, one entry per job."""
    import re

    return re.findall(r"^rule (\w+):", snakemake(workdir, "-n", *SMOKE).stdout, flags=re.M)


def assert_plotting_change_only_redraws(workdir: Path, paper: str, figures) -> None:
    """From a finished run: a comment in the code every stage imports runs nothing, and a code
    change to the paper's plotting module redraws its figures and runs nothing upstream."""
    package = workdir / "src" / "iclrepro"
    assert planned_rules(workdir) == []
    with open(package / "store.py", "a") as store_code:
        store_code.write("# a comment changes no id\n")
    assert planned_rules(workdir) == []
    with open(package / "figures" / f"{paper}.py", "a") as figure_code:
        figure_code.write("PLOTTING_CHANGE = True\n")
    rules = planned_rules(workdir)
    assert rules.count("draw") == len(figures) and not {"train", "tidy", "data", "theory"} & set(rules)

