"""Experiment design of fu2023: which data sets, cells and theory each figure needs.

Figures (spec §3): A (RFA vs RFMLP, test error vs n per target), B (BRFA vs RFA on
inner-product targets and a control), C (RFA over targets of increasing degree), D (RFA
at growing M against its infinite-head kernel limit, spec §2.1). A cell is one (model,
target, n) with `reps` seeds; seed r is fitted on training set r of (target, n), which
every model at that (target, n) shares, and scored on the target's one test set
(paired comparisons, spec §4).
"""

from __future__ import annotations

from iclrepro import plan, store
from iclrepro.tasks.fu2023_target import Target

PAPER = "fu2023"
FIGURES = ("A", "B", "C", "D")
RIDGE_BLOCK_ROWS = 4096  # baselines.ridge.BLOCK_ROWS (not imported: planning stays torch-free)


def peak_bytes(n: int, D: int) -> int:
    """Largest memory of one seed's fit (baselines/ridge.py), an upper bound: float32 features
    (n, D), up to two row blocks of them in float64 for the Gram product, and four float64
    matrices the size of the Gram matrix of the smaller side: it, and for each penalty its
    shifted copy and Cholesky factor (or, where rounding leaves none, eigenvectors and LAPACK's
    workspace: the bound of the eigendecompositions the fits did before)."""
    float64_rows = min(n, 2 * RIDGE_BLOCK_ROWS)
    return 4 * n * D + 8 * float64_rows * D + 4 * 8 * min(n, D) ** 2


class Planner:
    def __init__(self, config: dict):
        self.block = config[PAPER]
        self.check_targets()

    def check_targets(self) -> None:
        for figure in FIGURES:
            settings = self.block["figures"][figure]
            names = settings.get("targets", [settings.get("target")])
            for name in names:
                try:
                    Target.parse(name)
                except ValueError as err:
                    raise plan.PlanError(f"config {PAPER}.figures.{figure}: {err}") from None
        missing = set(self.block["claims"]["brfa_targets"]) - set(self.block["figures"]["B"]["targets"])
        if missing:
            raise plan.PlanError(f"config {PAPER}.claims.brfa_targets: {sorted(missing)} are not targets of "
                                 "figures.B (the claim compares BRFA and RFA there)")

    def data(self, target: str, rows: int, seed: int, noise: float) -> plan.Node:
        spec = {"paper": PAPER, "d": self.block["d"], "N": self.block["N"], "target": target,
                "rows": rows, "seed": seed, "noise": noise}
        return plan.make("data", PAPER, spec)

    def test_set(self, target: str) -> plan.Node:
        return self.data(target, self.block["test_size"], self.block["test_seed"], 0.0)

    def training_sets(self, target: str, n: int) -> list[plan.Node]:
        seeds = [int(store.digest(f"{target}/{n}/{rep}", 15), 16) for rep in range(self.block["reps"])]
        return [self.data(target, n, seed, self.block["noise"]) for seed in seeds]

    def model(self, kind: str, M: int | None = None) -> dict:
        block = self.block
        if kind == "rfmlp":
            return {"kind": kind, "K": block.get("K") or block["M"] * (block["d"] + 1)}
        return {"kind": kind, "M": M or block["M"], "weight_std": block["weight_std"],
                "bias_scale": block["bias_scale"] if kind == "brfa" else 0.0}

    def width(self, model: dict) -> int:
        return model["K"] if model["kind"] == "rfmlp" else model["M"] * (self.block["d"] + 1)

    def cell(self, kind: str, target: str, n: int, where: str, M: int | None = None) -> plan.Node:
        model = self.model(kind, M)
        needed = peak_bytes(n, self.width(model)) / 2**20
        if needed > self.block["memory_budget_mb"]:
            raise plan.PlanError(f"config {PAPER}.{where}: a {kind} fit at n = {n} with {self.width(model)} "
                                 f"features needs about {needed:.0f} MB, over memory_budget_mb = "
                                 f"{self.block['memory_budget_mb']}")
        test, train = self.test_set(target), self.training_sets(target, n)
        spec = {"paper": PAPER, "d": self.block["d"], "N": self.block["N"], "target": target, "n": n,
                "model": model, "seeds": list(range(self.block["reps"])), "test": test.id,
                "train": [node.id for node in train], "fitting": self.block["fitting"],
                # one closed-form step (training.fu2023), stated like the other papers' optimisation
                "training": {"optimisation": {"steps": 1, "optimizer": "closed_form"}}}
        return plan.make("train", PAPER, spec, inputs=(test, *train))

    def references(self) -> plan.Node:
        """One theory table of reference sample sizes for every degree the curve figures use."""
        targets = {target for figure in ("A", "B", "C") for target in self.block["figures"][figure]["targets"]}
        degrees = sorted({Target.parse(target).p for target in targets})
        return plan.make("theory", PAPER, {"d": self.block["d"], "N": self.block["N"], "p": degrees},
                         name="references")

    def curves(self, figure: str) -> plan.Node:
        """A, B, C: every (model, target, n) cell of the figure, and the reference sample sizes."""
        settings = self.block["figures"][figure]
        cells = [({"model": kind, "target": target, "n": n},
                  self.cell(kind, target, n, f"figures.{figure}", None))
                 for target in settings["targets"] for kind in settings["models"] for n in self.block["n"]]
        theory = self.references()
        spec = {"theory": theory.name, "cells": [dict(labels, cell=node.id) for labels, node in cells]}
        return plan.tidy(PAPER, figure, "curves", spec, (theory, *(node for _, node in cells)))

    def kernel_limit(self) -> plan.Node:
        """D: RFA cells at growing M on one (target, n), with what the kernel limit needs."""
        settings = self.block["figures"]["D"]
        target, n = settings["target"], settings["n"]
        cells = {M: self.cell("rfa", target, n, "figures.D", M) for M in settings["M"]}
        test, train = self.test_set(target), self.training_sets(target, n)
        spec = {"target": target, "n": n, "test": test.id,
                "train": [node.id for node in train], "weight_std": self.block["weight_std"],
                "fitting": self.block["fitting"], "gram_samples": settings["gram_samples"],
                "cells": [{"M": M, "cell": node.id} for M, node in cells.items()]}
        return plan.tidy(PAPER, "D", "kernel", spec, (test, *train, *cells.values()))

    def nodes(self) -> list[plan.Node]:
        tidy = {figure: self.curves(figure) for figure in ("A", "B", "C")}
        tidy["D"] = self.kernel_limit()
        return plan.figures_and_claims(PAPER, tidy, {"claims": self.block["claims"]})


def describe(spec: dict) -> str:
    """One line of a cell's key settings (for `iclrepro cells`)."""
    model = spec["model"]
    width = f"K={model['K']}" if model["kind"] == "rfmlp" else f"M={model['M']} bias={model['bias_scale']:g}"
    return f"{model['kind']} {width} target={spec['target']} n={spec['n']} d={spec['d']} N={spec['N']} " \
           f"seeds={len(spec['seeds'])}"


# FLOP/s a cell is assumed to run at on one core, by resources' count: under half what the paper's
# sizes ran at on one AVX-512 core (4.1-6.0e10: n = 4096 in 14-17 s a seed, n = 8192 in 53-65 s,
# 17,000 features, f4d4e81; benchmarks.md), as a core with narrower vector units runs slower
FIT_FLOPS = 2e10


def fit_flops(n: int, D: int, fitting: dict) -> float:
    """FLOPs of one seed's fit (baselines/ridge.py) on n rows of D features: Gram products of the
    smaller side, 2 min(n, D)^2 max(n, D) each (in the dual form, n < D, one of all rows; in the
    primal form one of the fitted rows and one of all), and a Cholesky factorization, min(n, D)^3
    / 3, per penalty on the fitted rows and once more for the refit on all."""
    fitted, penalties = 1 - fitting["validation_fraction"], len(fitting["lambdas"])
    if n < D:
        return 2 * n**2 * D + (penalties * fitted**3 + 1) * n**3 / 3
    return 2 * (1 + fitted) * n * D**2 + (penalties + 1) * D**3 / 3


def resources(cell: plan.Node) -> dict:
    """Memory (MB) and runtime (minutes) a cell asks the scheduler for, from its size.

    Per seed: features cost about n * width * (N+1) * (d+1) flops (attention scores), the fit
    fit_flops; at FIT_FLOPS, 3x margin, a 5-minute floor (the quick scale's jobs, imports and
    data included, take under a minute). Memory: peak_bytes plus 1 GB for the interpreter.
    """
    spec = cell.spec
    d, N, n, model = spec["d"], spec["N"], spec["n"], spec["model"]
    D = model["K"] if model["kind"] == "rfmlp" else model["M"] * (d + 1)
    flops = len(spec["seeds"]) * (n * D * (N + 1) * (d + 1) + fit_flops(n, D, spec["fitting"]))
    return {"mem_mb": 1000 + int(peak_bytes(n, D) / 2**20), "runtime": max(5, int(3 * flops / FIT_FLOPS / 60) + 1)}
