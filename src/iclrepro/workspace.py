"""The files a workflow run needs, and fresh copies of them (tests and benchmarks run in copies)."""

from __future__ import annotations

import shutil
from pathlib import Path

WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "src")


def copy_workflow(source: Path, target: Path) -> Path:
    """A copy of the workflow in `source` and its package source (bytecode caches left out)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source / name, target / name)
    return target
