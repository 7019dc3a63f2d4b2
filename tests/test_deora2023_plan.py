"""deora2023 config and plan: every scale plans, shared cells are trained once, mistakes name the key."""

from __future__ import annotations

import re

import pytest

from conftest import copy_workflow, plan_paper, snakemake
from iclrepro import config, plan
from iclrepro.papers import deora2023 as planner


def planned(raw, schema, scale="quick", edit=lambda block: None):
    return plan_paper(raw, schema, "deora2023", scale, edit)


@pytest.mark.parametrize("scale", config.SCALES)
def test_every_scale_plans_the_hessian_theory(raw, schema, scale):
    assert list(planned(raw, schema, scale).nodes["theory"]) == ["deora2023/hessian_norm"]


def test_quick_cells_are_shared_between_figures(raw, schema):
    built = planned(raw, schema)
    block = config.merged_block(raw["deora2023"], "quick")
    heads, e5 = block["figures"]["heads"], block["figures"]["E5"]
    # E5's cells at the main n are E1's, E4's random cell is E1's: only one extra one-step cell
    extra = sum(1 for H in e5["H"] for n in e5["n"] if not (n == block["n_train"] and H in heads))
    assert len(built.cells) == len(heads) + 1 + extra
    kinds = [node.spec["model"]["init"]["kind"] for node in built.cells.values()]
    assert kinds.count("one_step") == 1
    assert len(built.nodes["data"]) == block["seeds"] * len(set(e5["n"]) | {block["n_train"]})


def test_a_changed_step_size_changes_every_cell_and_nothing_else_in_the_data(raw, schema):
    before = planned(raw, schema)
    after = planned(raw, schema, edit=lambda block: block["training"].update(eta=0.5))
    assert set(before.cells).isdisjoint(after.cells) and set(before.nodes["data"]) == set(after.nodes["data"])


@pytest.mark.parametrize("edit, message", [
    (lambda b: b["scales"]["quick"]["mixture"].update(M=30), r"config deora2023.mixture: the 2 \+ M"),
    (lambda b: b["scales"]["quick"]["figures"].update(heads=[4]), "config deora2023.figures.heads"),
    (lambda b: b["scales"]["quick"]["figures"]["E5"].update(n=[64]), "config deora2023.figures.E5.n"),
])
def test_bad_settings_name_the_key(raw, schema, edit, message):
    with pytest.raises(plan.PlanError, match=message):
        planned(raw, schema, edit=edit)


def test_schema_rejects_unknown_keys_and_values(raw, schema):
    with pytest.raises(config.ConfigError, match="deora2023.model"):
        planned(raw, schema, edit=lambda b: b["model"].update(scale="1/H^2"))
    with pytest.raises(config.ConfigError, match="deora2023.training"):
        planned(raw, schema, edit=lambda b: b["training"].update(momentum=0.9))


def test_describe_and_resources(raw, schema):
    cell = next(iter(planned(raw, schema, "smoke").cells.values()))
    assert "init=" in planner.describe(cell.spec) and "H=" in planner.describe(cell.spec)
    assert set(planner.resources(cell)) == {"mem_mb", "runtime"}


def test_the_largest_paper_scale_cell_asks_for_what_it_measured_and_a_cluster_grants(raw, schema):
    """Measured on one CPU thread, the largest paper-scale cell peaked at 8.1 GB and took 22.9 s a
    step (10,000 steps: 64 h); it asked for 149 GB and 3.1 million minutes, which no cluster grants."""
    def asks(accelerator):
        built = plan.build(config.check_and_resolve(dict(raw, scale="paper", papers=["deora2023"],
                                                         accelerator=accelerator), schema))
        return [planner.resources(cell) for cell in built.cells.values()]
    cpu, cuda = asks("cpu"), asks("cuda")
    assert 8.1 * 1024 < max(ask["mem_mb"] for ask in cpu) < 16 * 1024
    assert 64 * 60 < max(ask["runtime"] for ask in cpu) < 14 * 24 * 60
    assert max(ask["runtime"] for ask in cuda) < 2 * 60


def test_tables_ask_the_scheduler_for_what_the_paper_scale_measured(tmp_path):
    """At the paper scale E1's table peaked at 6.9 GB (its NTK margins hold a seed's per-sequence
    gradients) and the Hessian probes' theory table at 2.6 GB in 24 minutes (1,414 s), where
    both asked for the 2 GB and 30 minutes every table asked for; the tables that read stored
    results ask for that still."""
    dry_run = snakemake(copy_workflow(tmp_path), "-n", "--config", "scale=paper", "papers=deora2023").stdout
    asks = {(job.split(":")[0], re.search(r"name=(\w+)", job).group(1)):
            {key: int(re.search(rf"{key}=(\d+)", job).group(1)) for key in ("mem_mb", "runtime")}
            for job in dry_run.split("\nrule ")[1:] if job.startswith(("tidy:", "theory:"))}
    margins = {name: asks["tidy", name]["mem_mb"] for name in ("E1", "E4", "E5")}
    assert 6.9 * 1024 < margins["E1"] < 16 * 1024 and margins["E5"] >= margins["E4"] >= margins["E1"]
    assert all(asks["tidy", name] == plan.TABLE_RESOURCES for name in ("E2", "E3", "hessian"))
    hessian = asks["theory", "hessian_norm"]
    assert 2.6 * 1024 < hessian["mem_mb"] < 8 * 1024 and 2 * 24 < hessian["runtime"] < 6 * 60
