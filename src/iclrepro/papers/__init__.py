"""Registry of implemented papers: where each stage of a paper is implemented.

Each entry names `module:function` per stage. The planner module (`iclrepro.papers.<id>`)
turns the paper's resolved config block into nodes; the stage functions do the work
inside jobs. A node's id fingerprints only the source its stage function imports, so
stage modules keep their imports narrow (a figure module never imports training code).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperStages:
    planner: str  # module with nodes(config) -> list[Node], describe(cell spec) -> str and
                  # resources(cell spec) -> {mem_mb, runtime (minutes)}
    data: str     # (spec, id, out) -> None: write a test or training set
    train: str    # (spec, id, data, out_dir, threads, checkpoint_minutes) -> None: train + evaluate
    objective: str  # (cell spec, device) -> training.core.Objective (what `iclrepro bench` times)
    predict: str  # (cell_dir, prompts, out) -> None: run a trained cell on a prompt set
    theory: str   # (spec, id, out) -> None: closed forms / reference algorithms
    tidy: str     # (spec, id, results, out) -> None: a figure's tidy data
    draw: str     # (spec, id, tidy, out_png, out_pdf) -> None: draw a figure
    claims: str   # (spec, id, results, out) -> None: the paper's claim verdicts


REGISTRY: dict[str, PaperStages] = {
    "cui2024": PaperStages(
        planner="iclrepro.papers.cui2024",
        data="iclrepro.tasks.cui2024:write_test_set",
        train="iclrepro.training.cui2024:train_cell",
        objective="iclrepro.training.cui2024:Regression",
        predict="iclrepro.evaluation.cui2024:predict",
        theory="iclrepro.theory.cui2024:write",
        tidy="iclrepro.evaluation.cui2024:tidy",
        draw="iclrepro.figures.cui2024:draw",
        claims="iclrepro.evaluation.cui2024:claims",
    ),
    "zhang2026": PaperStages(
        planner="iclrepro.papers.zhang2026",
        data="iclrepro.tasks.zhang2026:write_test_set",
        train="iclrepro.training.zhang2026:train_cell",
        objective="iclrepro.training.zhang2026:OneStepSupervision",
        predict="iclrepro.evaluation.zhang2026:predict",
        theory="iclrepro.theory.zhang2026:write",
        tidy="iclrepro.evaluation.zhang2026:tidy",
        draw="iclrepro.figures.zhang2026:draw",
        claims="iclrepro.evaluation.zhang2026:claims",
    ),
    "fu2023": PaperStages(
        planner="iclrepro.papers.fu2023",
        data="iclrepro.tasks.fu2023:write_set",
        train="iclrepro.training.fu2023:train_cell",
        objective="iclrepro.training.fu2023:RidgeFit",
        predict="iclrepro.evaluation.fu2023:predict",
        theory="iclrepro.theory.fu2023:write",
        tidy="iclrepro.evaluation.fu2023:tidy",
        draw="iclrepro.figures.fu2023:draw",
        claims="iclrepro.evaluation.fu2023:claims",
    ),
}
