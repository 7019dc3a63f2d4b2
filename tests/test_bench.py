"""`iclrepro bench`: its synthetic DAG has the size it claims, and its table shows every figure."""

from __future__ import annotations

import pytest
import torch

from iclrepro import accelerator, bench, config, plan
from iclrepro.training import core


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


def test_table_says_when_a_slurm_client_without_controller_slowed_every_snakemake_start():
    figures = {"machine": {"slurm_client_without_controller": True}, "dryrun_s_10k_cells": 13.1}
    assert bench.table(figures).splitlines()[2:] == ["| dryrun_s_10k_cells | 13.1 |", "", bench.SLURM_WAIT_NOTE]


def test_table_names_the_gpu_when_the_training_figures_ran_on_one():
    figures = {"machine": {"accelerator": "cuda", "gpu": "NVIDIA H200"}, "ensemble8_speedup": 6.41}
    assert bench.table(figures).splitlines()[2:] == [
        "| ensemble8_speedup | 6.41 |", "", "Training figures measured on the GPU: NVIDIA H200."]


@pytest.mark.parametrize("ping_status, waits", [(0, False), (1, True)])
def test_a_slurm_client_whose_ping_fails_has_no_controller(tmp_path, monkeypatch, ping_status, waits):
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f"#!/bin/sh\nexit {ping_status}\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench.slurm_without_controller() is waits


def test_no_slurm_client_means_no_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench.slurm_without_controller() is False


def test_the_update_breakdown_times_whole_loops_with_a_fresh_draw_and_with_a_fixed_batch(monkeypatch):
    draws = []
    objective_of = bench.objective_of

    def counting_objective(spec):
        objective = objective_of(spec)
        draw = objective.draw
        objective.draw = lambda: draws.append(len(spec["seeds"])) or draw()
        return objective

    monkeypatch.setattr(bench, "objective_of", counting_objective)
    us = bench.ensemble_update_us("cpu", updates=3, rounds=2)
    assert sorted(us) == sorted(f"S={S} {part}" for S in (1, 8) for part in ("update", "fixed batch", "draw"))
    assert all(us[f"S={S} draw"] == us[f"S={S} update"] - us[f"S={S} fixed batch"] for S in (1, 8))
    # per seed count: the fixed batch once, then fresh prompts for each of 3 updates x 2 rounds
    assert draws.count(1) == draws.count(8) == 1 + 3 * 2


def test_the_ensemble_ceiling_pays_eight_draws_and_one_seeds_arithmetic():
    update_us = {"S=1 update": 800.0, "S=1 fixed batch": 600.0, "S=8 draw": 1_600.0}
    assert bench.ensemble8_ceiling(update_us) == pytest.approx(8 * 800 / (1_600 + 600))


def write_records(results, records: dict[str, list[str]]) -> None:
    """Snakemake benchmark records: per file, its jobs' (seconds, max_rss) rows."""
    for name, rows in records.items():
        (results / "benchmarks" / name).parent.mkdir(parents=True, exist_ok=True)
        (results / "benchmarks" / name).write_text("s\tmax_rss\n" + "".join(f"{row}\n" for row in rows))


def test_job_time_sums_every_record_of_every_rule_kind(tmp_path):
    write_records(tmp_path, {"train/a.tsv": ["10.5\tNA", "2.0\t1.0"], "claims_table.tsv": ["0.25\t0.00"]})
    assert bench.job_seconds(tmp_path) == 12.75


def test_peak_memory_per_rule_kind_leaves_out_jobs_too_short_to_sample(tmp_path):
    write_records(tmp_path, {"train/a.tsv": ["1\t512.5"], "train/b.tsv": ["1\t300.0"], "draw/c.tsv": ["1\tNA"],
                             "claims_table.tsv": ["0.36\t0.00"]})
    assert bench.peak_rss_mb(tmp_path) == {"train": 512.5}


def test_the_pipeline_figures_say_how_busy_the_cores_were(root, monkeypatch):
    def fake_snakemake(workdir, *args):
        cores = int(args[args.index("--cores") + 1])
        write_records(workdir / "results", {"train/a.tsv": [f"{30 * cores}\t1.0"]})

    monkeypatch.setattr(bench, "snakemake", fake_snakemake)
    found = bench.pipeline_seconds(root)
    for cores in (1, 2):
        wall = found[f"quick_pipeline_s_cores{cores}"]
        assert found[f"cores_busy_cores{cores}"] * cores * wall == pytest.approx(30 * cores)
    assert found["cores1_over_cores2"] == found["quick_pipeline_s_cores1"] / found["quick_pipeline_s_cores2"]


def test_a_ratio_is_the_median_over_pairs_timed_back_to_back(monkeypatch):
    calls, durations = [], {"a": iter([2.0, 2.0, 2.0]), "b": iter([1.0, 4.0, 0.5])}  # ratios 2, 0.5, 4

    def fake_seconds(run):
        run()
        return next(durations[calls[-1]])

    monkeypatch.setattr(bench, "seconds", fake_seconds)
    ratio = bench.median_ratio(lambda: calls.append("a"), lambda: calls.append("b"), pairs=3)
    assert calls == ["a", "b"] * 3
    assert ratio == 2.0


def test_the_accelerator_reaches_every_trained_model(root, monkeypatch):
    """--accelerator cuda: the quick cells and the cui2024 cells are specified, built and fitted on it."""
    built, fitted = [], []
    monkeypatch.setattr(bench, "objective_of", lambda spec: built.append(spec["device"]))
    monkeypatch.setattr(core, "fit", lambda *args: fitted.append(args[4]))
    bench.lightning_run(bench.cui2024_spec(8, [0, 1], accelerator="cuda"))()
    assert built == fitted == ["cuda"]
    devices = {paper: core.accelerator_of(spec) for paper, spec in bench.largest_quick_cells(root, "cuda").items()}
    assert devices == {"cui2024": "cuda", "zhang2026": "cuda", "deora2023": "cuda", "chen2024": "cuda",
                       "fu2023": "cpu"}  # closed-form fits, on the CPU whatever the config says


def test_the_largest_quick_cells_are_the_largest(root):
    """Every quick cui2024 and deora2023 cell's runtime estimate sits at the 5-minute floor; the
    memory estimate breaks the tie (by runtime alone cui2024's was its first cell, D = 20)."""
    cells = bench.largest_quick_cells(root, "cpu")
    assert cells["cui2024"]["D"] == 320 and cells["deora2023"]["model"]["H"] == 64


def test_without_a_gpu_a_cuda_bench_stops_before_measuring(root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "largest_quick_cells", lambda *args: pytest.fail("measured without a GPU"))
    with pytest.raises(accelerator.AcceleratorError, match="no CUDA device"):
        bench.training_figures(root, "cuda")


def test_a_timed_run_waits_for_the_gpus_work(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("synchronize"))
    bench.seconds(lambda: events.append("run"))
    assert events == ["run", "synchronize"]
