"""The package and tests pass the linter configured in pyproject.toml; the workflow lints."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the `test` extra")
def test_ruff(root):
    result = subprocess.run(["ruff", "check", "src", "tests"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_snakemake_lint(root):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
