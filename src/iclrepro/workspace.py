"""The files a workflow run needs, fresh copies of them (tests and benchmarks run in copies), and
the results directory kept out of git.

No stage imports this module, so a change here changes no result's id.
"""

from __future__ import annotations

import os
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


def ignore_in_git(results: str | os.PathLike) -> None:
    """Keep the results directory out of git wherever `results=` puts it, as a virtual
    environment does: the repository's .gitignore names only the default `results/`."""
    ignore = Path(results, ".gitignore")
    if not ignore.exists():
        ignore.parent.mkdir(parents=True, exist_ok=True)
        ignore.write_text("# written by iclrepro: results are made by the workflow, not tracked by git\n*\n")
