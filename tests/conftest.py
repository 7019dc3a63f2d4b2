"""Shared test helpers: the repository root and a fresh copy of the workflow to run in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "src")


def copy_workflow(target: Path) -> Path:
    """A copy of the workflow and its package source, so a test may edit either."""
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    return target


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `iclrepro` from the workflow copy's own source."""
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"))
    return subprocess.run([sys.executable, "-m", "iclrepro", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, check=True)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


SMOKE = ("--config", "scale=smoke")  # every implemented paper (the config's default list)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke run of every paper. Read-only: use `copy_run` before changing anything."""
    workdir = copy_workflow(tmp_path_factory.mktemp("smoke_run"))
    snakemake(workdir, *SMOKE)
    return workdir


def copy_run(run: Path, target: Path) -> Path:
    """A copy of a finished run (workflow, results and Snakemake's records, mtimes kept)."""
    shutil.copytree(run, target, symlinks=True)
    return target


@pytest.fixture(scope="module")
def raw(root) -> dict:
    """The repository's config.yaml as read, before validation."""
    import yaml

    return yaml.safe_load((root / "config.yaml").read_text())


@pytest.fixture(scope="module")
def schema(root) -> dict:
    from iclrepro import config

    return config.load_schema(root)


def check_figures_and_claims(workdir: Path, paper: str, columns: dict[str, set], claims: int):
    """Every figure of `paper` written (png, pdf, tidy parquet with `columns`, provenance) and
    its `claims` claims in the claims parquet and table; returns the claims."""
    import pandas as pd

    from iclrepro.evaluation.claims import SCHEMA

    figures = workdir / "results" / "figures" / paper
    for name, expected in columns.items():
        for ext in ("png", "pdf", "parquet", "json"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        tidy = pd.read_parquet(figures / f"{name}.parquet")
        assert expected <= set(tidy.columns), (name, expected - set(tidy.columns))
    found = pd.read_parquet(workdir / "results" / "claims" / f"{paper}.parquet")
    assert list(found.columns) == SCHEMA.names and found["passed"].dtype == bool
    assert len(found) == claims and set(found["figure"]) == set(columns)
    table = (workdir / "results" / "claims.md").read_text()
    assert all(claim_id in table for claim_id in found["claim_id"])
    return found


def plan_paper(raw: dict, schema: dict, paper: str, scale: str = "quick", edit=lambda block: None):
    """The plan of one paper at `scale`, after `edit` changed a copy of its config block."""
    import copy

    from iclrepro import config, plan

    changed = copy.deepcopy(raw)
    edit(changed[paper])
    return plan.build(config.check_and_resolve(dict(changed, scale=scale, papers=[paper]), schema))


def smoke_plan(workdir: Path, paper: str):
    """The smoke-scale plan of one paper in a workflow copy."""
    from iclrepro import config, plan

    return plan.build(config.load(workdir / "config.yaml", {"scale": "smoke", "papers": paper}, workdir))
