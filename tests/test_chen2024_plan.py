"""chen2024 config and plan: every scale plans, shared cells are trained once, mistakes name the key."""

from __future__ import annotations

import copy
import re

import pytest

from conftest import copy_workflow, plan_paper, snakemake
from iclrepro import config, plan
from iclrepro.papers import chen2024 as planner


def planned(raw, schema, scale="quick", edit=lambda block: None):
    return plan_paper(raw, schema, "chen2024", scale, edit)


def test_quick_cells_are_shared_between_figures(raw, schema):
    built = planned(raw, schema)
    # H in {1, 4} at (L = 3, sigma = 0.1), plus H in {1, 4} at (3, 0.5): the main pair is shared
    assert len(built.cells) == 4
    heads = sorted((c.spec["model"]["layers"], c.spec["task"]["sigma"], c.spec["model"]["heads"])
                   for c in built.cells.values())
    assert heads == [(3, 0.1, 1), (3, 0.1, 4), (3, 0.5, 1), (3, 0.5, 4)]
    purposes = sorted(node.spec["purpose"] for node in built.nodes["data"].values())
    # tune sets: one per algorithms sigma at d = 8, plus the dimension figure's d = 16 and 32
    # (its d = 8 set at sigma = 0.1 is the algorithms figure's)
    assert purposes.count("tune") == 5 and purposes.count("probe") == 2


def test_paper_scale_runs_on_the_configured_accelerator(raw, schema):
    changed = copy.deepcopy(raw)
    built = plan.build(config.check_and_resolve(dict(changed, scale="paper", papers=["chen2024"],
                                                     accelerator="cuda"), schema))
    assert {cell.spec["device"] for cell in built.cells.values()} == {"cuda"}
    assert {cell.spec["model"]["attention"] for cell in built.cells.values()} == {"softmax"}
    # the tables that run the trained models (masking, probing) run them there too
    assert {built.get("tidy", f"chen2024/{name}").spec["device"] for name in ("importance", "depth_noise")} == {"cuda"}


def test_gpu_jobs_ask_the_scheduler_for_a_gpu(tmp_path):
    """With accelerator cuda, chen2024's training and its tidies that run trained models request
    `gpu` (SLURM's --gpus); the other jobs do not, nor do fu2023's closed-form fits."""
    dry_run = snakemake(copy_workflow(tmp_path), "-n", "--config", "scale=smoke", "papers=chen2024,fu2023",
                        "accelerator=cuda").stdout
    asked = {}
    for job in dry_run.split("\nrule ")[1:]:
        found = re.search(r"gpu=(\d)", job)
        paper, name = (re.search(rf"{key}=(\w+)", job) for key in ("paper", "name"))
        key = (job.split(":")[0], paper and paper.group(1), name and name.group(1))
        asked[key] = max(asked.get(key, 0), found and int(found.group(1)) or 0)
    assert {job for job, gpus in asked.items() if gpus} == {("train", "chen2024", None),
                                                         ("tidy", "chen2024", "importance"),
                                                         ("tidy", "chen2024", "depth_noise")}
    assert ("train", "fu2023", None) in asked


def test_tables_that_run_trained_models_ask_for_the_time_their_passes_take(tmp_path):
    """Measured at the paper scale: a 33-pass masking of 3 seeds over 50,000 prompts (L = 4)
    took 94 s on an H200 and 125 s per 96 prompts on one CPU thread, so depth_noise's masking
    alone (7 (L, sigma)) took about 11 minutes there and 5 days here; running the blocks before
    a masked head's layer once for all its heads leaves about 0.62 of that (84 of 132 blocks at
    L = 4), still beyond the 30 minutes every table asked for. The other tables read stored
    results; drawings take seconds."""
    workflow = copy_workflow(tmp_path)

    def asks(accelerator: str) -> dict:
        dry_run = snakemake(workflow, "-n", "--config", "scale=paper", "papers=chen2024",
                            f"accelerator={accelerator}").stdout
        jobs = [job for job in dry_run.split("\nrule ")[1:] if job.startswith(("tidy:", "draw:"))]
        found = ((job.split(":")[0], re.search(r"name=(\w+)", job), re.search(r"runtime=(\d+)", job)) for job in jobs)
        return {(rule, name.group(1)): int(runtime.group(1)) for rule, name, runtime in found}

    cuda, cpu = asks("cuda"), asks("cpu")
    assert 2 * 7 < cuda["tidy", "depth_noise"] < 4 * 60 and cpu["tidy", "depth_noise"] > 3 * 24 * 60
    assert cpu["tidy", "importance"] > 2.3 * 60   # masking 10,000 prompts on one thread (0.64 of 33 passes)
    reading = {name: ask for (rule, name), ask in cuda.items() if rule == "tidy" and name != "depth_noise"}
    assert len(reading) == 5 and set(reading.values()) == {plan.TABLE_RESOURCES["runtime"]}   # importance: 19 s
    assert {ask for job, ask in cuda.items() if job[0] == "draw"} == {plan.DRAW_RUNTIME}


def test_cells_train_with_the_configured_weight_decay(raw, schema):
    built = planned(raw, schema, edit=lambda b: b["training"].update(weight_decay=0.05))
    assert {c.spec["training"]["optimisation"]["weight_decay"] for c in built.cells.values()} == {0.05}


@pytest.mark.parametrize("key, edit, message", [
    ("s", lambda b: b.update(s=b["d"] + 1), "exceeds d"),
    ("analysis_n", lambda b: b.update(analysis_n=b["n"] + 1), "exceeds the prompts"),
    ("heads", lambda b: b.update(heads=[2, 4]), "must hold 1"),
    ("heads", lambda b: b.update(heads=[1, 3]), "do not divide"),
    ("figures.algorithms.n", lambda b: b["figures"]["algorithms"].update(n=[4, 400]), "exceed"),
    ("model.layers", lambda b: b["model"].update(layers=1), "at least 2 layers"),
    ("training.warmup_steps", lambda b: b["training"].update(warmup_steps=190_000), "runs into the decay"),
    ("figures.dimension.d", lambda b: b["figures"]["dimension"].update(d=[2, 16]), "below the sparsity"),
])
def test_plan_errors_name_the_key(raw, schema, key, edit, message):
    with pytest.raises(plan.PlanError, match=f"config chen2024.{key}: .*{message}"):
        planned(raw, schema, "paper", edit)


def test_schema_rejects_unknown_keys_and_values(raw, schema):
    with pytest.raises(config.ConfigError, match="chen2024.model"):
        planned(raw, schema, edit=lambda b: b["model"].update(attention="cosine"))
    with pytest.raises(config.ConfigError, match="chen2024"):
        planned(raw, schema, edit=lambda b: b.update(typo=1))
    with pytest.raises(config.ConfigError, match="chen2024.training.weight_decay"):
        planned(raw, schema, edit=lambda b: b["training"].update(weight_decay=-0.01))
    with pytest.raises(config.ConfigError, match="chen2024.prior"):
        planned(raw, schema, edit=lambda b: b.update(prior="laplace"))


def test_the_prior_reaches_every_prompt_set_and_cell(raw, schema):
    built = planned(raw, schema, edit=lambda b: b.update(prior="sign"))
    specs = [node.spec for stage in ("data", "train") for node in built.nodes[stage].values()]
    assert specs and {spec["task"]["prior"] for spec in specs} == {"sign"}


def test_cells_describe_and_size_themselves(raw, schema):
    cell = next(iter(planned(raw, schema, "paper").cells.values()))
    assert "L=" in planner.describe(cell.spec) and "steps=200000" in planner.describe(cell.spec)
    assert planner.resources(cell)["runtime"] > 60


def test_paper_scale_cells_ask_a_gpu_for_hours_and_a_cpu_for_far_longer(raw, schema):
    """At a CPU's FLOP rate a paper-scale cell asks SLURM for up to 600 days, which no partition
    allows; on a GPU a step is launch-bound (GPU_STEP_S), and 200,000 steps take about an hour."""
    def runtimes(accelerator):
        built = plan.build(config.check_and_resolve(dict(raw, scale="paper", papers=["chen2024"],
                                                         accelerator=accelerator), schema))
        return [planner.resources(cell)["runtime"] for cell in built.cells.values()]
    assert 60 < min(runtimes("cuda")) and max(runtimes("cuda")) < 4 * 60
    assert min(runtimes("cpu")) > 100 * max(runtimes("cuda"))


def test_prune_probe_reads_the_main_models_rows_of_depth_noise(raw, schema):
    # a grid without the main (L, sigma) = (4, 0.1) still gets it: Fig. 1(d) is its rows
    built = planned(raw, schema, "paper",
                    lambda b: b["figures"]["depth_noise"].update(variants=[{"layers": 2, "sigma": 0.5}]))
    depth_noise, prune_probe = (built.get("tidy", f"chen2024/{name}") for name in ("depth_noise", "prune_probe"))
    main = depth_noise.spec["variants"][-1]
    assert [(v["L"], v["sigma"]) for v in depth_noise.spec["variants"]] == [(2, 0.5), (4, 0.1)]
    assert (prune_probe.spec["L"], prune_probe.spec["sigma"]) == (4, 0.1)
    assert [node.id for node in prune_probe.inputs] == [depth_noise.id, main["full"], main["single"]]
    assert built.get("draw", "chen2024/prune_probe").payload()["cells"] == sorted([main["full"], main["single"]])
