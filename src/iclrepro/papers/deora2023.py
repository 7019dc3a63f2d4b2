"""Experiment design of deora2023: which data sets, cells and theory each figure needs.

Figures (spec §4): E1 (training loss over GD steps per H, with the T3 bound and the
c / (eta gamma^2 k) line), E2 (test loss and error per H), E3 (distance from
initialisation per H), E4 (NTK margin at the random and the one-step initialisation
across H, and training from each at one H), E5 (final test loss against n) and hessian
(||grad^2 Phi(theta_0)||_op against H, spec T1). A cell is one (H, n, initialisation)
trained on its seeds' data sets, one data set per (seed, n); cells shared by figures are
trained once.
"""

from __future__ import annotations

from iclrepro import plan
from iclrepro.tasks.deora2023_mixture import Mixture

PAPER = "deora2023"
FIGURES = ("E1", "E2", "E3", "E4", "E5", "hessian")


class Planner:
    def __init__(self, config: dict):
        self.block = config[PAPER]
        self.accelerator = config["accelerator"]
        try:
            self.mixture = Mixture(**self.block["mixture"]).to_spec()
        except (TypeError, ValueError) as err:
            raise plan.PlanError(f"config {PAPER}.mixture: {err}") from None

    def data_set(self, seed: int, n: int) -> plan.Node:
        spec = {"paper": PAPER, "mixture": self.mixture, "n_train": n, "n_test": self.block["n_test"], "seed": seed}
        return plan.make("data", PAPER, spec)

    def init(self, kind: str) -> dict:
        return {"kind": kind, **self.block["one_step"]} if kind == "one_step" else {"kind": kind}

    def cell(self, H: int, n: int | None = None, init: str = "random") -> plan.Node:
        n = n or self.block["n_train"]
        sets = [self.data_set(seed, n) for seed in range(self.block["seeds"])]
        training = self.block["training"]
        spec = {"paper": PAPER, "mixture": self.mixture, "n_train": n, "n_test": self.block["n_test"],
                "seeds": list(range(self.block["seeds"])), "data": [node.id for node in sets],
                "model": {"H": H, **self.block["model"], "init": self.init(init)}, "device": self.accelerator,
                "training": {"log_points": training["log_points"], "optimisation": {
                    "steps": training["steps"], "lr": training["eta"], "optimizer": "gd", "snapshots": [0]}}}
        return plan.make("train", PAPER, spec, inputs=tuple(sets))

    def check_grids(self) -> None:
        figures = self.block["figures"]
        if len(figures["heads"]) < 2:
            raise plan.PlanError(f"config {PAPER}.figures.heads: {figures['heads']} needs two H at least "
                                 "(the claims compare heads)")
        if len(figures["E5"]["n"]) < 2:
            raise plan.PlanError(f"config {PAPER}.figures.E5.n: {figures['E5']['n']} needs two n at least "
                                 "(the claim fits a slope in n)")

    def nodes(self) -> list[plan.Node]:
        self.check_grids()
        figures, margin = self.block["figures"], self.block["margin_iterations"]
        heads = sorted(figures["heads"])
        main = [(H, self.cell(H)) for H in heads]
        entries = [{"H": H, "cell": node.id} for H, node in main]
        cells = [node for _, node in main]
        e4 = figures["E4"]["H"]
        pair = {"random": self.cell(e4), "one_step": self.cell(e4, init="one_step")}
        samples = [(n, H, self.cell(H, n)) for H in sorted(figures["E5"]["H"]) for n in sorted(figures["E5"]["n"])]
        probe = figures["hessian"]
        hessian = plan.make("theory", PAPER, {"mixture": self.mixture, "model": self.block["model"],
                                              "data_seed": 0, **probe}, name="hessian_norm")
        common = {"eta": self.block["training"]["eta"], "margin_iterations": margin}
        tidy = {
            "E1": plan.tidy(PAPER, "E1", "training", {"cells": entries, **common, "theory": self.block["theory"]},
                            cells),
            "E2": plan.tidy(PAPER, "E2", "dynamics", {"cells": entries}, cells),
            "E3": plan.tidy(PAPER, "E3", "dynamics", {"cells": entries}, cells),
            "E4": plan.tidy(PAPER, "E4", "initialization", {
                "cells": entries, **common, "one_step": self.block["one_step"], "mixture": self.mixture,
                "pair": {kind: node.id for kind, node in pair.items()}}, cells + list(pair.values())),
            "E5": plan.tidy(PAPER, "E5", "samples", {
                "cells": [{"n": n, "H": H, "cell": node.id} for n, H, node in samples], **common,
                "theory": self.block["theory"]}, [node for _, _, node in samples]),
            "hessian": plan.tidy(PAPER, "hessian", "hessian", {"theory": hessian.name}, [hessian]),
        }
        return plan.figures_and_claims(PAPER, tidy, {"claims": {**self.block["claims"], "E4_H": e4}})


def describe(spec: dict) -> str:
    """One line of a cell's key settings (for `iclrepro cells`)."""
    mix, model = spec["mixture"], spec["model"]
    return (f"H={model['H']} n={spec['n_train']} T={mix['T']} d={mix['d']} init={model['init']['kind']} "
            f"eta={spec['training']['optimisation']['lr']:g} steps={spec['training']['optimisation']['steps']} "
            f"seeds={len(spec['seeds'])}")


# Bytes held per entry of a pass (resources): a step keeps about 3.8 per entry of every seed's
# training pass for the backward pass, a trace about 13 per entry of one seed's test pass
# (measured on the paper scale's largest cell; rounded up).
MEMORY_BYTES = {"step": 6, "trace": 16}


def resources(cell: plan.Node) -> dict:
    """Memory (MB) and runtime (minutes) a cell asks the scheduler for, from its size.

    A pass over n sequences costs n T H d (d + T) multiply-adds per seed (the (n T, H d)
    product and the (n, H, T, T) scores); a step is a pass over the training set three times
    over (forward and backward), and each of the log_points traces a pass over both sets.
    Measured on the paper scale's largest cell (5 seeds, 1,024 training and 5,000 test
    sequences, H = 64, T = 20, d = 64) on one CPU thread: a step took 22.9 s (2.2e-10 s per
    multiply-add), a trace 88 s; RSS 1.1 GB with the sets, 3.2 GB in a step, 8.1 GB in a
    trace, which scores one seed's test set at once (MEMORY_BYTES). Runtime: 2.5e-10 s per
    multiply-add on a CPU; on a GPU 6 ms a step (a quick cell's, launch-bound, on an H200)
    plus 1e-12 s per multiply-add (unmeasured: a few % of a GPU's float64 peak); a 3x
    margin and a 5-minute floor. Making and reading the sets (Parquet) takes about five
    times their size.
    """
    spec = cell.spec
    mix, S, H = spec["mixture"], len(spec["seeds"]), spec["model"]["H"]
    steps = spec["training"]["optimisation"]["steps"]
    entries = mix["T"] * H * (mix["d"] + mix["T"])          # of one sequence's pass, per seed
    work = mix["d"] * entries * (3 * S * spec["n_train"] * steps
                                 + S * (spec["n_train"] + spec["n_test"]) * spec["training"]["log_points"])
    seconds = 6e-3 * steps + 1e-12 * work if spec["device"] == "cuda" else 2.5e-10 * work
    sets = 8 * S * (spec["n_train"] + spec["n_test"]) * mix["T"] * mix["d"]
    held = max(MEMORY_BYTES["step"] * S * spec["n_train"], MEMORY_BYTES["trace"] * spec["n_test"]) * entries
    return {"mem_mb": 1000 + int((5 * sets + held) / 2**20), "runtime": max(5, int(3 * seconds / 60) + 1)}


# Bytes per entry of one seed's per-sequence gradients (n_train, H (d^2 + d)), float32 with
# vmap's intermediates: E1's table at the paper scale (H = 64, n = 1,000, d = 64: 266 million
# entries) peaked at 6.9 GB, 23 bytes an entry above a 1 GB process
MARGIN_BYTES = 32


def margin_memory(tidy: plan.Node) -> int:
    """Memory (MB) of a figure's tidy job whose table has NTK margins (E1, E4, E5; spec
    `margin_iterations`): it holds one seed's per-sequence gradients at a time, of its largest cell."""
    entries = max(cell.spec["n_train"] * cell.spec["model"]["H"] * (cell.spec["mixture"]["d"] + 1)
                  * cell.spec["mixture"]["d"] for cell in tidy.inputs if cell.stage == "train")
    return 1000 + int(MARGIN_BYTES * entries / 2**20)


# The Hessian probes (theory table hessian_norm) are Hessian-vector products, forward over reverse
# mode, each a fixed HVP_SECONDS["fixed"] (torch.func's) plus HVP_SECONDS["per_entry"] per entry
# of its pass (sequences T H d (d + T)). At the paper scale (d = 64, T = 20) on one AVX-512
# thread, one over T2's 128 sequences took 1.0 s at H = 64 and 5.6-6.0 s at H = 256 (1.2-1.7e-9 s
# an entry), one over a T1 sequence 0.05 s at H = 1; scipy's eigsh (T2) ran 21 to 139 of them
# per (H, seed) (139 at H = 256), so LANCZOS_PRODUCTS assumes 200; and the job peaked at 2.7 GB,
# 53-83 bytes an entry of T2's pass at the largest H above a 0.4 GB process. The whole table
# took 20-24 minutes.
HVP_SECONDS = {"fixed": 0.05, "per_entry": 1.7e-9}
LANCZOS_PRODUCTS = 200
HVP_BYTES = 64


def hessian_resources(probe: dict) -> dict:
    """Memory (MB) and runtime (minutes, 3x over) of the Hessian probes: power_iterations products
    per probe sequence (T1) and LANCZOS_PRODUCTS over loss_sequences (T2), per H and seed."""
    T, d = probe["mixture"]["T"], probe["mixture"]["d"]
    per_sequence = sum(H * T * d * (d + T) for H in probe["H"])     # entries of a pass over one sequence, every H
    runs = ((probe["sequences"] * probe["power_iterations"], 1),    # T1: products per (H, seed), sequences each
            (LANCZOS_PRODUCTS, probe["loss_sequences"]))            # T2
    seconds = probe["seeds"] * sum(products * (len(probe["H"]) * HVP_SECONDS["fixed"]
                                               + sequences * per_sequence * HVP_SECONDS["per_entry"])
                                   for products, sequences in runs)
    largest = probe["loss_sequences"] * max(probe["H"]) * T * d
    return {"mem_mb": 1000 + int(HVP_BYTES * largest / 2**20), "runtime": int(3 * seconds / 60) + 1}


def table_resources(node: plan.Node) -> dict:
    """What a theory or tidy job needs (plan.table_resources asks for at least TABLE_RESOURCES):
    the memory of the tables with NTK margins and the memory and time of the Hessian probes; the
    other tables read stored results."""
    if node.stage == "theory":
        return hessian_resources(node.spec)
    if "margin_iterations" in node.spec:
        return {"mem_mb": margin_memory(node)}
    return {}
