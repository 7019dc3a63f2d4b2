"""`iclrepro bench`: the performance figures of issue-level targets, measured in one run.

* lightning_over_bare: steps/s of the pipeline's Lightning path over a bare torch loop
  (same model, batch, optimiser and schedule; cui2024 with H = 1 and H = 8, and chen2024's
  largest quick cell), setup included;
* ensemble8_speedup: 8 seeds trained as one ensemble vs 8 single-seed runs in sequence;
* ensemble8_ceiling: the most ensemble8_speedup can be per update while each seed draws its own
  prompts, from ensemble_update_us: microseconds per update in a bare loop with 1 and 8 seeds,
  with a fresh draw and with a fixed batch (their difference: the draw);
* ensemble_speedup_quick: per paper, its largest quick cell's seeds as one ensemble vs one by one;
* steps_per_s: per paper, the largest quick-scale cell's model through the Lightning path;
* dryrun_s_10k_cells: parse + `snakemake -n` of a synthetic 10,000-cell config;
* peak_rss_mb: per rule kind, the largest in Snakemake's benchmark records under results/ (a
  job's record stays until that job runs again, so after runs at two scales it is the larger
  of their peaks);
* with --pipeline: the quick pipeline from scratch with 2 cores and with 1 core, and how busy
  the cores were in each (summed job time over cores x wall time);
* with --kills N: the smoke pipeline SIGKILLed N times at random moments, each time
  resumed and compared, bitwise, with an uninterrupted run (results lost or corrupted).
With --accelerator cuda the training figures (all but the dry run, peak RSS and the
pipeline) are measured on the GPU, each timed run ending when the GPU's work has.
The JSON's machine record also says whether SLURM's client is installed without a
controller (every Snakemake start then waits about 9 s, which the dry run would include;
the table says so). Rates take the best of a few repeats. A ratio is the median over
several pairs of runs, the two sides of each pair timed back to back: the machine may be
shared, its speed drifts, and a burst of load elsewhere can slow one run of a pair by a
third.
"""

from __future__ import annotations

import copy
import csv
import itertools
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from iclrepro import config, integrity, plan
from iclrepro.accelerator import device_of
from iclrepro.papers import REGISTRY, stage_function
from iclrepro.training import core
from iclrepro.workspace import copy_workflow

BENCH_STEPS = 500    # cui2024 steps per timed run (about 0.6 s with H = 1)
PAPER_STEPS = 300    # steps timed per paper model (steps_per_s)
RATIO_STEPS = 100    # steps per timed run of a paper model in a ratio (chen2024: about 5 s)
ENSEMBLE_STEPS = 100  # steps timed per paper ensemble (deora2023's full-batch steps are slow)
REPEATS = 3
ROUNDS = 5           # interleaved runs behind each figure of the update breakdown
PAIRS = 7            # pairs of runs behind each issue-level ratio
QUICK_PAIRS = 3      # pairs behind each paper's ensemble speed-up (deora2023: about 1 min a pair)


def cui2024_spec(H: int, seeds: list[int], steps: int = BENCH_STEPS, accelerator: str = "cpu") -> dict:
    """A quick-scale cui2024 cell (d = 5, D = 80, batch 128) with H heads, p = 8 per head."""
    return {"paper": "cui2024", "scenario": {"d": 5, "W": 1.0, "sigma2": 0.0}, "D": 80,
            "model": {"param": "full", "H": H, "p": 8 * H, "init_std": 0.01, "init": "identity",
                      "identity_eps": 0.05},
            "seeds": seeds, "test": "0" * 16, "device": accelerator,
            "training": {"batch": 128, "optimisation": {"steps": steps, "lr": 0.003, "decay_fraction": 0.2}}}


def objective_of(spec: dict) -> core.Objective:
    return stage_function(REGISTRY[spec["paper"]].objective)(spec, device_of(core.accelerator_of(spec)))


def optimisation_of(spec: dict, steps: int | None = None) -> core.Optimisation:
    settings = dict(spec["training"]["optimisation"])
    if steps is not None:
        settings["steps"] = min(steps, settings["steps"])
    return core.Optimisation(**settings)


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    if torch.cuda.is_initialized():  # CUDA kernels run asynchronously: count them to their end
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best_seconds(run, repeats: int = REPEATS) -> float:
    return min(seconds(run) for _ in range(repeats))


def median_ratio(first, second, pairs: int = PAIRS) -> float:
    """Median over `pairs` of time(first) / time(second), the two timed back to back (first,
    second, first, ...): a change in the shared machine's speed then reaches both sides of a
    pair, and a pair in which a burst of load slowed one side only does not move the median."""
    return statistics.median(seconds(first) / seconds(second) for _ in range(pairs))


def lightning_run(spec: dict, steps: int | None = None):
    return lambda: core.fit(objective_of(spec), optimisation_of(spec, steps), "bench", len(spec["seeds"]),
                            core.accelerator_of(spec))


def bare_run(spec: dict, steps: int | None = None):
    """The same training in a plain loop: no Lightning, no loss buffer, no checks."""

    def run():
        objective = objective_of(spec)
        bare_loop(objective, optimisation_of(spec, steps), objective.draw)

    return run


def bare_loop(objective: core.Objective, optimisation: core.Optimisation, next_batch) -> None:
    optimizer, schedule = optimisation.optimizer_and_schedule(objective.model.parameters())
    for _ in range(optimisation.steps):
        loss = objective.loss(next_batch()).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def lightning_over_bare(spec: dict, steps: int | None = None) -> float:
    return median_ratio(bare_run(spec, steps), lightning_run(spec, steps))


def lightning_over_bare_figures(quick_cells: dict[str, dict], accelerator: str) -> dict[str, float]:
    """cui2024's quick model with H = 1 and 8 (issue 8), and chen2024's largest quick cell (issue 3)."""
    figures = {f"cui2024 H={H}": lightning_over_bare(cui2024_spec(H, [0], accelerator=accelerator))
               for H in (1, 8)}
    if "chen2024" in quick_cells:
        figures["chen2024"] = lightning_over_bare(quick_cells["chen2024"], RATIO_STEPS)
    return figures


def ensemble_speedup(spec: dict, steps: int | None = None, pairs: int = PAIRS) -> float:
    """Time to train the spec's seeds one at a time over the time to train them as one ensemble."""
    alone = [lightning_run(dict(spec, seeds=[seed]), steps) for seed in spec["seeds"]]
    return median_ratio(lambda: [run() for run in alone], lightning_run(spec, steps), pairs)


def ensemble8_speedup(accelerator: str) -> float:
    return ensemble_speedup(cui2024_spec(1, list(range(8)), accelerator=accelerator))


def ensemble_speedup_quick(quick_cells: dict[str, dict]) -> dict[str, float]:
    """Per paper whose largest quick cell trains several seeds by gradient steps: its ensemble's speed-up."""
    found = {}
    for paper, spec in quick_cells.items():
        if len(spec["seeds"]) > 1 and spec["training"]["optimisation"].get("optimizer") != "closed_form":
            found[paper] = ensemble_speedup(spec, ENSEMBLE_STEPS, QUICK_PAIRS)
    return found


def ensemble_update_us(accelerator: str, seeds=(1, 8), updates: int = BENCH_STEPS,
                       rounds: int = ROUNDS) -> dict[str, float]:
    """Microseconds per update of the ensemble8 cell inside a bare training loop, with 1 and 8
    seeds: drawing fresh prompts every update, as training does, and reusing one fixed batch;
    the difference is the draw. Parts timed apart do not add up to the loop's update, so only
    whole loops are timed: each configuration's median over `rounds` interleaved runs."""
    loops = {(S, fixed): bare_update_loop(S, fixed, updates, accelerator) for S in seeds for fixed in (False, True)}
    times = {key: [] for key in loops}
    for _ in range(rounds):
        for key, loop in loops.items():
            times[key].append(seconds(loop))
    us = {key: 1e6 * statistics.median(runs) / updates for key, runs in times.items()}
    figures = {}
    for S in seeds:
        figures |= {f"S={S} update": us[S, False], f"S={S} fixed batch": us[S, True],
                    f"S={S} draw": us[S, False] - us[S, True]}
    return figures


def bare_update_loop(seeds: int, fixed_batch: bool, updates: int, accelerator: str):
    spec = cui2024_spec(1, list(range(seeds)), updates, accelerator)
    objective = objective_of(spec)
    next_batch = itertools.repeat(objective.draw()).__next__ if fixed_batch else objective.draw
    return lambda: bare_loop(objective, optimisation_of(spec), next_batch)


def ensemble8_ceiling(update_us: dict[str, float]) -> float:
    """The most ensemble8_speedup can be per update with this draw: every seed draws its own
    prompts from its own generator, so the eight-seed update pays the eight-seed draw, and its
    forward, backward and optimizer step cost at least one seed's."""
    return 8 * update_us["S=1 update"] / (update_us["S=8 draw"] + update_us["S=1 fixed batch"])


def largest_quick_cells(workdir: Path, accelerator: str) -> dict[str, dict]:
    """Per configured paper, the spec of its quick-scale cell with the largest estimated runtime, and
    of those the largest memory: most quick cells' runtimes sit at the estimates' 5-minute floor."""
    resolved = config.load(workdir / "config.yaml", {"scale": "quick", "accelerator": accelerator}, workdir)
    found = {}
    for paper in resolved["papers"]:
        planner = plan.planner(paper)
        cells = plan.build(dict(resolved, papers=[paper])).cells.values()
        asks = {node.id: planner.resources(node) for node in cells}
        found[paper] = max(cells, key=lambda node: (asks[node.id]["runtime"], asks[node.id]["mem_mb"])).spec
    return found


def steps_per_s(quick_cells: dict[str, dict]) -> dict[str, float]:
    """Per paper: its largest quick-scale cell through the Lightning path, PAPER_STEPS steps."""
    found = {}
    for paper, spec in quick_cells.items():
        steps = optimisation_of(spec, PAPER_STEPS).steps
        found[paper] = steps / best_seconds(lightning_run(spec, PAPER_STEPS), repeats=2)
    return found


def snakemake(workdir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "snakemake", "--quiet", *args], cwd=workdir, check=True,
                   capture_output=True)


def synthetic_config(raw: dict, cells: int) -> dict:
    """The cui2024 block with enough noisy scenarios x D values in F3 for `cells` cells."""
    block = copy.deepcopy(raw["cui2024"])
    D_values = list(range(10, 110))                       # 100 D values x 2 series = 200 cells a scenario
    names = [f"noisy_{i}" for i in range(cells // 200)]
    block["scenarios"].update({name: {"d": 5, "sigma2": 0.01 * (i + 1)} for i, name in enumerate(names)})
    block["scales"]["quick"]["figures"]["F3"] = {"scenarios": names, "D": D_values}
    return dict(raw, cui2024=block, papers=["cui2024"], scale="quick")


def write_config(raw: dict, path: Path) -> None:
    """Write a config as YAML: written as JSON, 1e-06 would read back as text (YAML 1.1)."""
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def dryrun_seconds(workdir: Path, cells: int = 10_000) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_workflow(workdir, Path(tmp))
        raw = synthetic_config(config.read(workdir / "config.yaml"), cells)
        write_config(raw, copy / "config.yaml")
        planned = len(plan.build(config.load(copy / "config.yaml", workdir=copy)).cells)
        start = time.perf_counter()
        snakemake(copy, "-n", "all", "--cores", "2")
        return time.perf_counter() - start, planned


SLURM_WAIT_NOTE = ("Note: SLURM's client is installed but no controller answers, so every Snakemake start "
                   "waited for `scontrol`'s timeout (about 9 s), and the dry-run and pipeline times include "
                   "it (README, Troubleshooting).")


def slurm_without_controller() -> bool:
    """Whether SLURM's client is installed while no controller answers: the SLURM executor
    plugin then makes every Snakemake start wait for `scontrol show config` to time out."""
    return shutil.which("scontrol") is not None and subprocess.run(
        ["scontrol", "ping"], capture_output=True).returncode != 0


def benchmark_rows(results: Path):
    """(rule kind, row) for every row of Snakemake's benchmark records under `results`."""
    for record in (results / "benchmarks").rglob("*.tsv"):
        kind = record.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        with record.open() as handle:
            yield from ((kind, row) for row in csv.DictReader(handle, delimiter="\t"))


def peak_rss_mb(results: Path) -> dict[str, float]:
    """Largest max_rss (MB) per rule kind in Snakemake's benchmark records, of every run whose
    jobs' records are still there (a rerun of a job replaces its own). A job too short to be
    sampled has "NA" there, or 0.00 in Snakemake 9: it is left out."""
    peaks: dict[str, float] = {}
    for kind, row in benchmark_rows(results):
        try:
            rss = float(row["max_rss"])
        except ValueError:
            continue
        if rss > 0:
            peaks[kind] = max(peaks.get(kind, 0.0), rss)
    return peaks


def job_seconds(results: Path) -> float:
    return sum(float(row["s"]) for _, row in benchmark_rows(results))


def pipeline_seconds(workdir: Path) -> dict[str, float]:
    """The quick pipeline from scratch, with 2 cores and with 1 core (long: minutes each), and
    how busy the cores were: summed job time over cores x wall time, 1 when every core ran a
    job throughout. Unlike the 1-core over 2-core ratio, that does not move with the machine's
    speed between the two runs."""
    found = {}
    for cores in (2, 1):
        with tempfile.TemporaryDirectory() as tmp:
            workflow = copy_workflow(workdir, Path(tmp))
            start = time.perf_counter()
            snakemake(workflow, "--cores", str(cores))
            found[f"quick_pipeline_s_cores{cores}"] = wall = time.perf_counter() - start
            found[f"cores_busy_cores{cores}"] = job_seconds(workflow / "results") / (cores * wall)
    found["cores1_over_cores2"] = found["quick_pipeline_s_cores1"] / found["quick_pipeline_s_cores2"]
    return found


SMOKE = ("--cores", "2", "--config", "scale=smoke")


def kill_and_resume(workdir: Path, kills: int, seed: int = 0) -> dict[str, int]:
    """Kill the smoke pipeline at `kills` random moments; resume each and compare it with a whole run.

    A moment is uniform over the uninterrupted run's duration. A run counts as lost or
    corrupted if any metric or verdict differs from the whole run's, or `verify` finds a problem.
    """
    moments = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        whole = copy_workflow(workdir, Path(tmp) / "whole")
        start = time.perf_counter()
        snakemake(whole, *SMOKE)
        duration = time.perf_counter() - start
        damaged = 0
        for attempt in range(kills):
            killed = copy_workflow(whole, Path(tmp) / f"killed{attempt}")  # the code of the whole run
            running = subprocess.Popen([sys.executable, "-m", "snakemake", *SMOKE], cwd=killed,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(moments.uniform(0, duration))
            os.killpg(running.pid, signal.SIGKILL)  # snakemake and every job it started
            running.wait()
            snakemake(killed, "--unlock", *SMOKE)
            snakemake(killed, *SMOKE)
            results = killed / "results"
            problems = (integrity.result_differences(whole / "results", results)
                        + integrity.verify(str(results)).problems)
            for problem in problems:
                print(f"kill {attempt}: {problem}", file=sys.stderr)
            damaged += bool(problems)
    return {"kills": kills, "kills_lost_or_corrupted": damaged}


def machine(accelerator: str) -> dict:
    record = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "torch": torch.__version__, "accelerator": accelerator,
              "slurm_client_without_controller": slurm_without_controller()}
    if accelerator == "cuda":
        record["gpu"] = torch.cuda.get_device_name()
    return record


def training_figures(workdir: Path, accelerator: str) -> dict:
    """The figures that train models, measured on `accelerator` (cpu or cuda)."""
    device_of(accelerator)  # a missing GPU stops the run before any measurement
    quick_cells = largest_quick_cells(workdir, accelerator)
    update_us = ensemble_update_us(accelerator)
    return {
        "machine": machine(accelerator),
        "lightning_over_bare": lightning_over_bare_figures(quick_cells, accelerator),
        "ensemble8_speedup": ensemble8_speedup(accelerator),
        "ensemble8_ceiling": ensemble8_ceiling(update_us),
        "ensemble_update_us": update_us,
        "ensemble_speedup_quick": ensemble_speedup_quick(quick_cells),
        "steps_per_s": steps_per_s(quick_cells),
    }


def run(workdir: Path, results: Path, pipeline: bool, kills: int, accelerator: str = "cpu") -> dict:
    core.configure_threads(1)
    figures = training_figures(workdir, accelerator)
    seconds, cells = dryrun_seconds(workdir)
    figures |= {
        "dryrun_s_10k_cells": seconds, "dryrun_cells": cells,
        "peak_rss_mb": peak_rss_mb(results),
    }
    if pipeline:
        figures.update(pipeline_seconds(workdir))
    if kills:
        figures.update(kill_and_resume(workdir, kills))
    return figures


def table(figures: dict) -> str:
    lines = ["| figure | value |", "|---|---|"]
    for key, value in figures.items():
        if isinstance(value, dict) and key != "machine":
            lines += [f"| {key} {sub} | {v:.3g} |" for sub, v in value.items()]
        elif key != "machine":
            lines.append(f"| {key} | {value:.3g} |")
    return "\n".join(lines + machine_notes(figures.get("machine", {})))


def machine_notes(record: dict) -> list[str]:
    """Lines under the table that a reader needs to compare its figures with another run's."""
    notes = []
    if record.get("accelerator") == "cuda":
        # the GPU changes the training figures by several times, so the table must say it
        notes.append(f"Training figures measured on the GPU: {record['gpu']}.")
    if record.get("slurm_client_without_controller"):
        notes.append(SLURM_WAIT_NOTE)
    return [""] + notes if notes else []
