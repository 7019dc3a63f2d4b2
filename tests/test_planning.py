"""Planning: every paper plans its figures and claims at every scale; batches; no heavy imports
(every SLURM job parses the Snakefile again)."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys

import pytest

from conftest import plan_paper
from iclrepro import config, plan
from iclrepro.papers import REGISTRY, cui2024, stage_function
from iclrepro.plan import PlanError


def imported_after(root, code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code` in the repository."""
    script = (f"import importlib, sys; sys.path.insert(0, 'src')\n{code}\n"
              f"print(sorted(set({modules!r}) & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True)
    return ast.literal_eval(result.stdout.strip())


def test_planning_imports_neither_torch_nor_lightning(root):
    code = ("from iclrepro import config, plan\n"
            "for scale in ('smoke', 'quick', 'paper'): plan.build(config.load('config.yaml', {'scale': scale}))")
    assert imported_after(root, code, ("torch", "lightning", "matplotlib", "pandas")) == []


def test_figures_do_not_import_torch(root):
    """Drawing reads tidy Parquet only (DESIGN.md); shared series names must not pull torch in."""
    code = ("from iclrepro.papers import REGISTRY\n"
            "for paper in REGISTRY: importlib.import_module(f'iclrepro.figures.{paper}')")
    assert imported_after(root, code, ("torch", "lightning")) == []


def test_only_training_imports_lightning(root):
    """Every other stage's job skips Lightning's import (seconds), and its ids do not fingerprint training code."""
    stages = ("data", "predict", "theory", "tidy", "claims")
    code = ("from iclrepro.papers import REGISTRY\n"
            "for paper in REGISTRY.values():\n"
            f"    for stage in {stages!r}: importlib.import_module(getattr(paper, stage).partition(':')[0])")
    assert imported_after(root, code, ("lightning", "pytorch_lightning")) == []


@pytest.mark.parametrize("paper", sorted(REGISTRY))
def test_every_stage_entry_names_a_function(paper):
    """A misspelt module or function in the registry fails here, not in the first job that runs the stage."""
    stages = REGISTRY[paper]
    for stage in (field.name for field in dataclasses.fields(stages) if field.name != "planner"):  # a module
        assert callable(stage_function(getattr(stages, stage))), stage


@pytest.mark.parametrize("scale", config.SCALES)
@pytest.mark.parametrize("paper", sorted(REGISTRY))
def test_every_paper_plans_every_figure_and_its_claims_at_every_scale(raw, schema, paper, scale):
    built = plan_paper(raw, schema, paper, scale)
    figures = plan.planner(paper).FIGURES
    assert sorted(built.nodes["draw"]) == sorted(f"{paper}/{name}" for name in figures)
    assert list(built.nodes["claims"]) == [f"{paper}/{paper}"]


@pytest.mark.parametrize(("stage", "key", "message"), [
    ("tidy", "cui2024/F9", "tidy 'cui2024/F9' is not planned .*: F1, F1b, F2, F3, F4, F5, F6, T1$"),
    ("theory", "chen2024/base", r"none \(is chen2024 in papers\?\)"),
])
def test_a_target_outside_the_plan_names_what_is_planned(raw, schema, stage, key, message):
    """`snakemake results/figures/cui2024/F9.png` (a typo) or a paper left out of `papers`."""
    with pytest.raises(PlanError, match=message):
        plan_paper(raw, schema, "cui2024", "smoke").get(stage, key)


def batch_contents(built) -> dict[str, set[str]]:
    return {batch_id: {member.id for member in batch.members} for batch_id, batch in built.batches.items()}


def test_batches_hold_cells_of_the_same_tables_and_a_change_moves_only_theirs(root):
    overrides = {"scale": "quick", "papers": ["cui2024"], "batch_size": 3}
    before = plan.build(config.load(root / "config.yaml", overrides, root))
    consumers = before.consumers()
    for batch in before.batches.values():
        assert 1 <= len(batch.members) <= 3 and len({consumers[m.id] for m in batch.members}) == 1

    overrides["cui2024"] = {"scenarios": {"noisy_0.5": {"d": 5, "sigma2": 0.4}}}
    after = plan.build(config.load(root / "config.yaml", overrides, root))
    changed = set(after.batches) - set(before.batches)
    users = {consumer for batch_id in changed for m in after.batches[batch_id].members
             for consumer in after.consumers()[m.id]}
    assert changed and users == {"tidy:cui2024/F3", "tidy:cui2024/T1"}
    assert set(before.batches) - set(after.batches)  # the old noisy cells' batches are gone


@pytest.mark.parametrize("accelerator", ["cpu", "cuda"])
def test_a_groups_runtime_is_spread_over_its_batches(root, accelerator):
    """A SLURM job asks for its batch's runtimes summed. Dealt in id order, fu2023's paper-scale
    cells put 609 minutes in one batch of a group averaging 299 (longest cell 196), and cui2024's
    273 in one averaging 151: each group's largest batch now holds no more than its share and
    one cell."""
    resolved = config.load(root / "config.yaml", {"scale": "paper", "accelerator": accelerator}, root)
    built = plan.build(resolved)
    consumers, groups = built.consumers(), {}
    for batch in built.batches.values():
        assert 1 <= len(batch.members) <= resolved["batch_size"]
        runtimes = [plan.planner(batch.paper).resources(member)["runtime"] for member in batch.members]
        groups.setdefault((batch.paper, consumers[batch.members[0].id]), []).append((sum(runtimes), max(runtimes)))
    for (paper, tables), batches in groups.items():
        share = sum(runtime for runtime, _ in batches) / len(batches)
        longest_cell = max(longest for _, longest in batches)
        assert max(runtime for runtime, _ in batches) <= share + longest_cell, (paper, tables, batches)


def test_a_cui2024_cell_asks_memory_for_making_and_reading_its_test_set(raw, schema):
    """A test set of 283 MB (20,000 prompts at D = 320) took 1.3 GB to make and read (Parquet), where
    the paper scale's largest cell trains in 0.2 GB: its job peaked at 1.9 GB, asking for 1.2 GB."""
    def largest_ask(test_prompts):
        built = plan_paper(raw, schema, "cui2024", "paper", lambda block: block.update(test_prompts=test_prompts))
        return max(cui2024.resources(cell)["mem_mb"] for cell in built.cells.values())
    extra_test_mb = 20000 * 4 * (321 * 11 + 10) / 2**20          # 20,000 more prompts at D = 320, d = 10
    assert largest_ask(40000) - largest_ask(20000) > 4 * extra_test_mb
