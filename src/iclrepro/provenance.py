"""Where a figure came from: code version, package versions, cells, seeds, settings, runtime.

Written beside every figure as results/figures/<paper>/<name>.json by the job that draws
it, and shown next to the figure in the Snakemake report.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path

from iclrepro import store

PACKAGES = ("torch", "lightning", "snakemake", "numpy", "pandas", "pyarrow", "seaborn", "scipy")


def git_state(directory: str | Path = ".") -> dict:
    """Commit of the working tree and whether tracked files differ from it."""

    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown (not a git checkout)", "dirty": None}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def cell_summary(layout: store.Layout, cell_id: str) -> dict:
    """The cell's resolved spec (every setting behind it), its seeds and how long it took."""
    record = store.read_json(Path(layout.cell_dir(cell_id)) / "spec.json")
    return {"id": cell_id, "seeds": record["spec"].get("seeds"), "spec": record["spec"],
            "provenance": record.get("provenance", {})}


def write(payload: dict, results: str, out) -> None:
    """Provenance of one figure, from its draw node's payload."""
    layout = store.Layout(results)
    cells = [cell_summary(layout, cell_id) for cell_id in payload["cells"]]
    seconds = sum(cell["provenance"].get("seconds", 0.0) for cell in cells)
    store.write_json({
        "paper": payload["paper"], "figure": payload["name"], "figure_id": payload["id"],
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_state(), "versions": versions(),
        "tidy_data": layout.tidy(payload["paper"], payload["name"]),
        "training_seconds": round(seconds, 2), "cells": cells,
    }, out)
