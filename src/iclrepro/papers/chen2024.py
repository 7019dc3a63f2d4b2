"""Experiment design of chen2024: which test sets, cells and theory each figure needs.

Figures (spec §6): risk_vs_n (Fig. 1b: one cell per head count), importance (Fig. 1c: the
multi-head cell), depth_noise (appendix: pruning and probing of the multi-head and
single-head cells over a grid of depths and noise levels, which always holds the main
depth and noise), prune_probe (Fig. 1d: the main depth and noise's rows of depth_noise),
algorithms (p.8: PtO, GD, ridge, Lasso, OLS per noise level, with the transformer) and
dimension (appendix pp.32-33: the same algorithms against d at fixed s, n and sigma).
A cell is one (depth L, heads H, noise sigma); cells shared by figures are trained once.
Each noise level has three prompt sets with their own seeds: test (scoring), tune
(baseline hyperparameters) and probe (fitting the linear probes, choosing pruned heads).
"""

from __future__ import annotations

from iclrepro import plan
from iclrepro.training import schedule

PAPER = "chen2024"
FIGURES = ("risk_vs_n", "importance", "prune_probe", "depth_noise", "algorithms", "dimension")
GRIDS = ("eta", "steps", "ridge_lambda", "lasso_alpha", "lasso_steps")  # the algorithms' tuning grids
SEED_OFFSETS = {"test": 0, "tune": 1, "probe": 2}  # a distinct stream per purpose


class Planner:
    def __init__(self, config: dict):
        self.block = config[PAPER]
        self.accelerator = config["accelerator"]
        self.check()

    def fail(self, key: str, message: str):
        raise plan.PlanError(f"config {PAPER}.{key}: {message}")

    def check(self) -> None:
        b = self.block
        if b["s"] > b["d"]:
            self.fail("s", f"sparsity {b['s']} exceeds d = {b['d']}")
        if b["analysis_n"] > b["n"]:
            self.fail("analysis_n", f"{b['analysis_n']} exceeds the prompts' n = {b['n']}")
        if 1 not in b["heads"] or len(b["heads"]) < 2:
            self.fail("heads", f"{b['heads']} must hold 1 (the single-head model) and a larger count")
        uneven = [H for H in b["heads"] if b["model"]["width"] % H]
        if uneven:
            self.fail("heads", f"{uneven} do not divide model.width = {b['model']['width']}")
        beyond = [n for n in b["figures"]["algorithms"]["n"] if n > b["n"]]
        if beyond:
            self.fail("figures.algorithms.n", f"{beyond} exceed the prompts' n = {b['n']}")
        training = b["training"]
        decay_start = schedule.decay_start(training["steps"], training["decay_fraction"])
        if training["warmup_steps"] > decay_start:
            self.fail("training.warmup_steps", f"{training['warmup_steps']} runs into the decay, which starts after "
                      f"{decay_start} of {training['steps']} steps")
        if b["model"]["layers"] < 2:
            self.fail("model.layers", "pruning and probing need at least 2 layers")
        shallow = [v for v in b["figures"]["depth_noise"]["variants"] if v["layers"] < 2]
        if shallow:
            self.fail("figures.depth_noise.variants", f"{shallow}: pruning and probing need at least 2 layers")
        narrow = [d for d in b["figures"]["dimension"]["d"] if d < b["s"]]
        if narrow:
            self.fail("figures.dimension.d", f"{narrow} are below the sparsity s = {b['s']}")

    def task(self, sigma: float, d: int | None = None) -> dict:
        return {"d": d or self.block["d"], "s": self.block["s"], "sigma": sigma, "n": self.block["n"],
                "prior": self.block["prior"]}

    def prompt_set(self, sigma: float, purpose: str, d: int | None = None) -> plan.Node:
        spec = {"paper": PAPER, "task": self.task(sigma, d), "purpose": purpose,
                "prompts": self.block[f"{purpose}_prompts"], "seed": self.block["test_seed"] + SEED_OFFSETS[purpose]}
        return plan.make("data", PAPER, spec)

    def cell(self, layers: int, heads: int, sigma: float) -> plan.Node:
        training = self.block["training"]
        heldout = self.prompt_set(sigma, "test")
        spec = {"paper": PAPER, "task": self.task(sigma), "model": {**self.block["model"], "layers": layers,
                                                                      "heads": heads},
                "seeds": list(range(training["seeds"])), "heldout": heldout.id, "device": self.accelerator,
                "training": {"batch": training["batch"], "optimisation": {
                    "steps": training["steps"], "lr": training["lr"], "decay_fraction": training["decay_fraction"],
                    "warmup_steps": training["warmup_steps"], "weight_decay": training["weight_decay"],
                    "optimizer": "adam"}}}
        return plan.make("train", PAPER, spec, inputs=(heldout,))

    def probing(self, grid) -> plan.Node:
        """The depth/noise table: pruning and probing of the multi-head and single-head cells at
        each (L, sigma) of `grid`, beside GD and PtO run for as many steps as the layers (step
        sizes from the algorithms' grid)."""
        variants, inputs = [], []
        for layers, sigma in grid:
            full, single = self.cell(layers, max(self.block["heads"]), sigma), self.cell(layers, 1, sigma)
            test, probe = self.prompt_set(sigma, "test"), self.prompt_set(sigma, "probe")
            variants.append({"L": layers, "sigma": sigma, "full": full.id, "single": single.id,
                             "data": test.id, "probe": probe.id})
            inputs += [full, single, test, probe]
        spec = {"variants": variants, "n": self.block["analysis_n"], "ridge": self.block["probe_ridge"],
                "eta": self.block["figures"]["algorithms"]["eta"],   # the GD / PtO steps drawn beside the probes
                "device": self.accelerator}                          # where the models run
        return plan.tidy(PAPER, "depth_noise", "probing", spec, inputs)

    def algorithms(self, main: plan.Node) -> plan.Node:
        settings = self.block["figures"]["algorithms"]
        sets = {sigma: (self.prompt_set(sigma, "tune"), self.prompt_set(sigma, "test")) for sigma in settings["sigmas"]}
        theory = plan.make("theory", PAPER, {"d": self.block["d"], "sigmas": settings["sigmas"], "n": settings["n"]},
                           name=f"ols_d{self.block['d']}")
        spec = {"n": settings["n"], "theory": theory.name, **self.tuning(),
                "sets": [{"sigma": sigma, "tune": tune.id, "test": test.id} for sigma, (tune, test) in sets.items()],
                "transformers": [{"cell": main.id, "H": main.spec["model"]["heads"], "sigma": self.block["sigma"]}]}
        inputs = [node for pair in sets.values() for node in pair] + [main, theory]
        return plan.tidy(PAPER, "algorithms", "algorithms", spec, inputs)

    def tuning(self) -> dict:
        """What the baselines of the algorithms and dimension figures are tuned over: their grids,
        and T = L - 1, the GD steps a transformer of the main depth can run (one per later layer)."""
        settings = self.block["figures"]["algorithms"]
        return {"T_layers": self.block["model"]["layers"] - 1, "grids": {key: settings[key] for key in GRIDS}}

    def dimension(self) -> plan.Node:
        """The algorithms at the prompts' n against d (fixed s and sigma), each d with its own sets."""
        sigma = self.block["figures"]["dimension"]["sigma"]
        sets = {d: (self.prompt_set(sigma, "tune", d), self.prompt_set(sigma, "test", d))
                for d in self.block["figures"]["dimension"]["d"]}
        spec = {"n": self.block["n"], "s": self.block["s"], "sigma": sigma, **self.tuning(),
                "sets": [{"d": d, "tune": tune.id, "test": test.id} for d, (tune, test) in sets.items()]}
        return plan.tidy(PAPER, "dimension", "dimension", spec, [node for pair in sets.values() for node in pair])

    def nodes(self) -> list[plan.Node]:
        b = self.block
        L, sigma = b["model"]["layers"], b["sigma"]
        by_heads = {H: self.cell(L, H, sigma) for H in b["heads"]}
        main, test = by_heads[max(b["heads"])], self.prompt_set(sigma, "test")
        variants = [(v["layers"], v["sigma"]) for v in b["figures"]["depth_noise"]["variants"]]
        if (L, sigma) not in variants:   # prune_probe is the main models' rows of this table
            variants.append((L, sigma))
        depth_noise = self.probing(variants)
        tidy = {
            "risk_vs_n": plan.tidy(PAPER, "risk_vs_n", "risk_vs_n",
                                   {"cells": [{"H": H, "cell": node.id} for H, node in by_heads.items()]},
                                   by_heads.values()),
            "importance": plan.tidy(PAPER, "importance", "importance", {
                "cell": main.id, "data": test.id, "n": b["analysis_n"], "device": self.accelerator}, [main, test]),
            "prune_probe": plan.tidy(PAPER, "prune_probe", "main_variant",
                                     {"table": "depth_noise", "L": L, "sigma": sigma},
                                     [depth_noise, main, by_heads[1]]),   # the cells: the figure's provenance
            "depth_noise": depth_noise,
            "algorithms": self.algorithms(main),
            "dimension": self.dimension(),
        }
        return plan.figures_and_claims(PAPER, tidy, {"claims": {**b["claims"], "d": b["d"]}})


def describe(spec: dict) -> str:
    """One line of a cell's key settings (for `iclrepro cells`)."""
    task, model = spec["task"], spec["model"]
    return (f"d={task['d']} s={task['s']} sigma={task['sigma']:g} n={task['n']} L={model['layers']} "
            f"H={model['heads']} D={model['width']} {model['attention']} "
            f"steps={spec['training']['optimisation']['steps']} seeds={len(spec['seeds'])}")


# Seconds per training step on a GPU, measured on one NVIDIA H200 with paper-scale cells (width
# 256, 3 seeds, batch 64, n = 40): launch-bound, 62 steps/s at 4 layers and 43 at 6, heads aside
# (benchmarks.md, b52b51e).
GPU_STEP_S = {"per_layer": 3.6e-3, "fixed": 1.7e-3}


def block_flops(cell: dict, prompts: int) -> int:
    """FLOPs of one block of a cell's models (every seed) over `prompts` prompts: two per weight
    per token, 12 D^2 weights a layer (spec §8), 2n + 1 tokens a prompt (a slight over-count
    for the last block, which runs its MLP at the query tokens only)."""
    tokens = len(cell["seeds"]) * prompts * (2 * cell["task"]["n"] + 1)
    return 24 * cell["model"]["width"] ** 2 * tokens


def forward_flops(cell: dict, prompts: int) -> int:
    """FLOPs of one pass of a cell's models (every seed) over `prompts` prompts."""
    return cell["model"]["layers"] * block_flops(cell, prompts)


def resources(cell: plan.Node) -> dict:
    """Memory (MB) and runtime (minutes) a cell asks the scheduler for, from its size.

    On a CPU a step costs three forward passes over its batch (forward_flops: the forward pass
    and a backward pass of twice its FLOPs); runtime assumes 5 GFLOP/s on one thread (measured
    ~4-8 on the quick model, Python overhead included) with a 3x margin. On a GPU a step is launch-bound, a time per
    layer (GPU_STEP_S) whatever the width, heads and seeds, with a 2x margin for other GPUs:
    by FLOPs a paper-scale cell would ask for 600 days, which no partition allows. A
    5-minute floor. Activations: about 40 floats per token, width and layer.
    """
    spec = cell.spec
    task, model, training = spec["task"], spec["model"], spec["training"]
    tokens = len(spec["seeds"]) * training["batch"] * (2 * task["n"] + 1)
    steps = training["optimisation"]["steps"]
    if spec["device"] == "cuda":
        seconds = 2 * steps * (GPU_STEP_S["per_layer"] * model["layers"] + GPU_STEP_S["fixed"])
    else:
        seconds = 3 * 3 * forward_flops(spec, training["batch"]) * steps / 5e9
    activations = 40 * 4 * tokens * model["width"] * model["layers"]
    return {"mem_mb": 1000 + int(activations / 2**20), "runtime": max(5, int(seconds / 60) + 1)}


# Forward FLOP/s a table's passes over trained models are assumed to run at: a third of what
# importance and depth_noise's paper-scale masking passes ran at on one NVIDIA H200 (2.7e13:
# 33 passes of 3 seeds over 50,000 prompts in 94 s, 829a65e) and a quarter of what they ran at
# on one AVX-512 CPU thread (3.9e10: over 96 prompts in 125 s); benchmarks.md.
EVAL_FLOPS = {"cuda": 1e13, "cpu": 1e10}


def masking_flops(cell: dict, prompts: int) -> int:
    """The full model's pass and, for each head, the blocks from its layer on with it masked
    (importance by masking, evaluation.chen2024.masked_predictions), each counted whole: the last
    block, which runs at the analysed query alone, takes about a quarter of a block's time."""
    layers, heads = cell["model"]["layers"], cell["model"]["heads"]
    return (layers + heads * layers * (layers + 1) // 2) * block_flops(cell, prompts)


def table_flops(tidy: plan.Node) -> float:
    """FLOPs of the passes over trained models a table runs: importance masks the main model's
    heads over the test prompts; depth_noise, per (L, sigma), masks them over the probe prompts
    (to choose the pruned heads), then runs the full, pruned and single-head models over the
    probe prompts (the probes' features) and twice over the test prompts (features, outputs).
    The other tables read stored scores or run no model."""
    spec, cell = tidy.spec, {node.id: node.spec for node in tidy.inputs if node.stage == "train"}
    prompts = {node.id: node.spec["prompts"] for node in tidy.inputs if node.stage == "data"}
    if spec["kind"] == "importance":
        return masking_flops(cell[spec["cell"]], prompts[spec["data"]])
    if spec["kind"] != "probing":
        return 0.0
    flops = 0.0
    for variant in spec["variants"]:
        full, single, probe = cell[variant["full"]], cell[variant["single"]], prompts[variant["probe"]]
        probed = probe + 2 * prompts[variant["data"]]
        flops += masking_flops(full, probe) + 2 * forward_flops(full, probed) + forward_flops(single, probed)
    return flops


def table_resources(node: plan.Node) -> dict:
    """Runtime (minutes) a figure's tidy job asks for: its passes over trained models at
    EVAL_FLOPS on the tidy spec's device, with a 3x margin (plan.table_resources asks for at least
    the default for reading stored results). At the paper scale depth_noise asks a GPU for 67 minutes
    (its 7 (L, sigma) pass for about 8 on an H200) and a CPU for 46 days. The theory table
    (OLS risks) takes a second."""
    flops = table_flops(node) if node.stage == "tidy" else 0
    if not flops:
        return {}
    minutes = 3 * flops / EVAL_FLOPS[node.spec["device"]] / 60
    return {"runtime": int(minutes) + 1}
