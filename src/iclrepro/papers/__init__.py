"""Registry of implemented papers: where each stage of a paper is implemented.

Each entry names `module:function` per stage. The planner module (`iclrepro.papers.<id>`)
turns the paper's resolved config block into nodes; the stage functions do the work
inside jobs. A node's id fingerprints only the source its stage function imports, so
stage modules keep their imports narrow (a figure module never imports training code).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PaperStages:
    planner: str  # module with Planner(config).nodes() -> list[Node], describe(cell spec) -> str,
                  # resources(cell node) -> {mem_mb, runtime (minutes)} and, where some theory or
                  # tidy tables need more than plan.TABLE_RESOURCES, table_resources(theory or
                  # tidy node) -> the keys it estimates
    data: str     # (spec, id, out) -> None: write a test or training set
    train: str    # (spec, id, data, out_dir, threads) -> None: train + evaluate
    objective: str  # (cell spec, device) -> training.core.Objective (what `iclrepro bench` times)
    predict: str  # (cell_dir, prompts, out) -> None: run a trained cell on a prompt set
    theory: str   # (spec, id, out) -> None: closed forms / reference algorithms
    tidy: str     # (spec, id, results, out) -> None: a figure's tidy data
    draw: str     # (spec, id, tidy, out_png, out_pdf) -> None: draw a figure
    claims: str   # (spec, id, results, out) -> None: the paper's claim verdicts


def conventional(paper: str, objective: str, **other_places: str) -> PaperStages:
    """The stages of a paper laid out as usual (iclrepro.<kind>.<paper>:<function>), but for `other_places`."""
    return replace(PaperStages(
        planner=f"iclrepro.papers.{paper}",
        data=f"iclrepro.tasks.{paper}:write_test_set",
        train=f"iclrepro.training.{paper}:train_cell",
        objective=f"iclrepro.training.{paper}:{objective}",
        predict=f"iclrepro.evaluation.{paper}:predict",
        theory=f"iclrepro.theory.{paper}:write",
        tidy=f"iclrepro.evaluation.{paper}:tidy",
        draw=f"iclrepro.figures.{paper}:draw",
        claims=f"iclrepro.evaluation.{paper}:claims",
    ), **other_places)


def stage_function(entry: str) -> Callable:
    """The function a `module:function` entry names; its module is imported only now, so a job
    imports what its own stage needs and no more."""
    module, _, function = entry.partition(":")
    return getattr(importlib.import_module(module), function)


REGISTRY: dict[str, PaperStages] = {
    "cui2024": conventional("cui2024", objective="Regression"),
    "zhang2026": conventional("zhang2026", objective="OneStepSupervision"),
    # its data stage writes training sets as well as test sets
    "deora2023": conventional("deora2023", objective="FullBatchLogistic",
                              data="iclrepro.tasks.deora2023:write_data_set"),
    "chen2024": conventional("chen2024", objective="PrefixRegression"),
    # its data stage writes training sets as well as test sets, its cells are closed-form ridge fits
    "fu2023": conventional("fu2023", objective="RidgeFit", data="iclrepro.tasks.fu2023:write_set"),
}
