"""fu2023 config and plan: every scale plans, paired data, and mistakes name the key."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import plan_paper
from iclrepro import config, plan
from iclrepro.baselines import ridge
from iclrepro.papers import fu2023 as planner


def planned(raw, schema, scale="quick", edit=lambda block: None):
    return plan_paper(raw, schema, "fu2023", scale, edit)


@pytest.mark.parametrize("scale", config.SCALES)
def test_every_scale_plans_the_references_and_cells_within_the_memory_budget(raw, schema, scale):
    built = planned(raw, schema, scale)
    assert list(built.nodes["theory"]) == ["fu2023/references"]
    for cell in built.cells.values():
        resources = planner.resources(cell)
        assert resources["runtime"] >= 5 and resources["mem_mb"] < 8 * 1024, planner.describe(cell.spec)


def test_paper_scale_training_jobs_ask_for_hours_not_days(raw, schema):
    """At 1e9 flops/s a paper-scale batch asked for 77 hours, beyond many partitions."""
    built = planned(raw, schema, "paper")
    asked = [sum(planner.resources(cell)["runtime"] for cell in batch.members) for batch in built.batches.values()]
    assert max(asked) < 12 * 60


def test_the_largest_paper_scale_cells_ask_for_several_times_what_they_took(raw, schema):
    """At the paper's sizes (n = 8192, 17,000 features) a seed's fit took 53-65 s on one
    AVX-512 core (f4d4e81). Counted as the fits before it ran (two eigendecompositions) its
    5-seed cell asked for 196 minutes, 36-44 times that."""
    largest = max(planned(raw, schema, "paper").cells.values(), key=lambda cell: cell.spec["n"])
    seconds = 60 * planner.resources(largest)["runtime"]
    assert len(largest.spec["seeds"]) == 5 and 3 * 5 * 65 < seconds < 15 * 5 * 53


@pytest.mark.parametrize(("n", "D"), [(300, 800), (800, 300), (2000, 200), (600, 4000)])
def test_a_fits_flops_are_its_gram_products_and_a_factorization_per_penalty(n, D):
    """fit_flops counts what ridge.select runs: its matrix products (counted by torch, which
    counts no factorization) and at most one Cholesky factorization per penalty and the refit."""
    fitting = {"lambdas": [1e-4, 1e-2, 1.0], "validation_fraction": 0.2}
    with FlopCounterMode(display=False) as counter:
        ridge.select(torch.randn(n, D), torch.randn(n, dtype=torch.float64), **fitting)
    products, counted = counter.get_total_flops(), planner.fit_flops(n, D, fitting)
    assert products <= counted <= products + (len(fitting["lambdas"]) + 1) * min(n, D) ** 3 / 3


def test_models_share_training_sets_and_the_test_set(raw, schema):
    cells = [c for c in planned(raw, schema).cells.values() if c.spec["target"] == "key_poly_3" and c.spec["n"] == 1024]
    assert sorted(c.spec["model"]["kind"] for c in cells) == ["rfa", "rfmlp"]
    assert cells[0].spec["train"] == cells[1].spec["train"] and cells[0].spec["test"] == cells[1].spec["test"]
    assert len(set(cells[0].spec["train"])) == 2 and cells[0].inputs[0].id == cells[0].spec["test"]


def test_brfa_shares_the_rfa_weights_but_not_the_cell(raw, schema):
    cells = [c for c in planned(raw, schema).cells.values() if c.spec["target"] == "qk_He_2" and c.spec["n"] == 4096]
    kinds = {c.spec["model"]["kind"]: c.spec["model"] for c in cells}
    assert kinds["rfa"]["bias_scale"] == 0.0 and kinds["brfa"]["bias_scale"] == raw["fu2023"]["bias_scale"] > 0
    assert {c.spec["seeds"] == [0, 1] for c in cells} == {True}


def test_the_rfmlp_width_defaults_to_equal_parameters(raw, schema):
    built = planned(raw, schema, edit=lambda b: [b.pop("K"), b["scales"]["quick"].pop("K")])
    widths = {c.spec["model"]["K"] for c in built.cells.values() if c.spec["model"]["kind"] == "rfmlp"}
    assert widths == {128 * 9}


@pytest.mark.parametrize("edit,message", [
    (lambda b: b["figures"]["B"].update(targets=["qk_sin"]), r"config fu2023.figures.B: unknown target 'qk_sin'"),
    (lambda b: b["figures"]["D"].update(target="key_poly"), r"config fu2023.figures.D: unknown target"),
    (lambda b: b["claims"].update(brfa_targets=["qk_He_8"]), r"config fu2023.claims.brfa_targets: \['qk_He_8'\]"),
    (lambda b: b["scales"]["quick"].update(memory_budget_mb=10),
     r"config fu2023.figures.A: a rfa fit at n = 1024 .* over memory_budget_mb = 10"),
])
def test_plan_errors_name_the_key(raw, schema, edit, message):
    with pytest.raises(plan.PlanError, match=message):
        planned(raw, schema, edit=edit)


@pytest.mark.parametrize("edit,message", [
    (lambda b: b["figures"]["A"].update(models=["rnn"]), r"config fu2023.figures.A.models.0: 'rnn' is not one of"),
    (lambda b: b["fitting"].update(validation_fraction=1.5), r"config fu2023.fitting.validation_fraction"),
    (lambda b: b.update(heads=3), r"config fu2023: .*'heads' was unexpected"),
])
def test_schema_errors_name_the_key(raw, schema, edit, message):
    with pytest.raises(config.ConfigError, match=message):
        planned(raw, schema, edit=edit)


def test_the_memory_estimate_uses_the_ridge_block_size():
    from iclrepro.baselines import ridge

    assert planner.RIDGE_BLOCK_ROWS == ridge.BLOCK_ROWS
