"""`iclrepro bench`: its synthetic DAG has the size it claims, and its table shows every figure."""

from __future__ import annotations

from iclrepro import bench, config, plan


def test_synthetic_config_plans_ten_thousand_cells(root, tmp_path):
    bench.write_config(bench.synthetic_config(config.read(root / "config.yaml"), 10_000), tmp_path / "config.yaml")
    resolved = config.load(tmp_path / "config.yaml", workdir=root)
    # F3's synthetic grid holds the 10,000; the other quick figures add a few dozen
    assert 10_000 <= len(plan.build(resolved).cells) < 10_100


def test_table_lists_every_figure_but_the_machine():
    figures = {"machine": {"cpus": 2}, "lightning_over_bare": {"H=1": 0.91, "H=8": 1.02},
               "dryrun_s_10k_cells": 9.64, "kills": 5, "kills_lost_or_corrupted": 0}
    assert bench.table(figures).splitlines()[2:] == [
        "| lightning_over_bare H=1 | 0.91 |", "| lightning_over_bare H=8 | 1.02 |",
        "| dryrun_s_10k_cells | 9.64 |", "| kills | 5 |", "| kills_lost_or_corrupted | 0 |"]


def test_ensemble_step_breakdown_times_every_part_for_one_and_eight_seeds():
    parts = bench.ensemble_step_us(updates=2)
    assert sorted(parts) == sorted(f"S={S} {part}" for S in (1, 8)
                                   for part in ("draw", "forward_backward", "optimizer"))
    assert all(us > 0 for us in parts.values())


def test_paired_timings_alternate_so_machine_drift_reaches_both_runs():
    calls = []
    first, second = bench.best_of_alternating(lambda: calls.append("a"), lambda: calls.append("b"), repeats=3)
    assert calls == ["a", "b"] * 3
    assert first >= 0 and second >= 0
