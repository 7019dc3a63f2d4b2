"""zhang2026 config and plan: every scale plans, and mistakes name the key."""

from __future__ import annotations

import copy

import pytest

from conftest import plan_paper
from iclrepro import config, plan
from iclrepro.papers import zhang2026 as planner


def nested(block: dict, keys) -> dict:
    for key in keys:
        block = block[key]
    return block


def planned(raw, schema, scale="quick", edit=lambda block: None):
    return plan_paper(raw, schema, "zhang2026", scale, edit)


@pytest.mark.parametrize("scale", config.SCALES)
def test_every_scale_plans_three_cells_and_a_test_set_per_shift(raw, schema, scale):
    built = planned(raw, schema, scale)
    assert len(built.cells) == 3
    shifts = config.resolve(dict(raw, scale=scale, papers=["zhang2026"]), schema)["zhang2026"]["figures"]["E5"]
    assert len(built.get("tidy", "zhang2026/E5").spec["sets"]) == sum(len(v) for v in shifts["shifts"].values())


def test_cells_keep_the_snapshots_their_figures_need(raw, schema):
    cells = planned(raw, schema).cells.values()
    snapshots = sorted(tuple(c.spec["training"]["optimisation"]["snapshots"]) for c in cells)
    assert snapshots == [(), (0, 30, 100), (10, 30, 100)]
    assert all(c.spec["distribution"]["d"] in (2, 5) and c.inputs[0].spec["prompts"] == 50 for c in cells)


def test_a_shift_changes_only_its_own_test_set(raw, schema):
    before = planned(raw, schema)
    shifts = ("scales", "quick", "figures", "E5", "shifts")
    after = planned(raw, schema, edit=lambda c: nested(c, shifts).update(kappa=[10.0, 30.0]))
    assert set(before.cells) == set(after.cells)
    assert len(set(after.nodes["data"]) - set(before.nodes["data"])) == 1


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["figures"]["E5"]["shifts"].update(d=[3]), r"config zhang2026.figures.E5.shifts: .*'d' was unexpected"),
    (lambda c: c["distribution"].update(x="cauchy"), r"config zhang2026.distribution.x: 'cauchy' is not one of"),
    (lambda c: c["model"].update(target="adam"), r"config zhang2026.model.target: 'adam' is not one of"),
    (lambda c: c["training"].update(optimizer="sgd"), r"config zhang2026.training.optimizer: 'sgd' is not one of"),
    (lambda c: c["claims"].pop("loop_cosine_min"), r"config zhang2026.claims: 'loop_cosine_min' is a required"),
    (lambda c: c["figures"]["E6"].update(checkpoints=[-1]), r"config zhang2026.figures.E6.checkpoints.0: -1 is less"),
])
def test_config_mistakes_name_the_key(raw, schema, edit, message):
    broken = copy.deepcopy(raw)
    edit(broken["zhang2026"])
    with pytest.raises(config.ConfigError, match=message):
        config.check_and_resolve(dict(broken, papers=["zhang2026"]), schema)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["scales"]["quick"]["figures"]["E6"].update(checkpoints=[10, 1000]),
     r"config zhang2026.figures.E6.checkpoints: steps \[1000\] are not before the last training step"),
    (lambda c: c["scales"]["quick"]["figures"]["E1"].update(N=[10, 40]),
     r"config zhang2026.figures.E1.N: \[10, 40\] must include the main N = 20"),
    (lambda c: c["figures"]["E1"].update(rules=["ngd"]), r"config zhang2026.figures.E1.rules: \['ngd'\] must include"),
])
def test_inconsistent_settings_fail_at_planning_naming_the_key(raw, schema, edit, message):
    with pytest.raises(plan.PlanError, match=message):
        planned(raw, schema, edit=edit)


def test_cells_are_described_and_sized(raw, schema):
    cell = next(c for c in planned(raw, schema, "paper").cells.values() if c.spec["model"]["full_blocks"])
    assert planner.describe(cell.spec) == "d=10 N=40 x=gaussian full W^KQ, W^PV target=ngd eta=0.2 steps=5000 seeds=3"
    assert planner.resources(cell)["runtime"] >= 5 and planner.resources(cell)["mem_mb"] > 1000
