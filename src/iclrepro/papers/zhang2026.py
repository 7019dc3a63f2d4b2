"""Experiment design of zhang2026: which test sets, cells and theory each figure needs.

Figures (spec §4): E1 (constructed transformer vs NGD and GD over depth, per N), E2
(training dynamics), E3 (learned full weight matrices), E4 (looped trained layer vs NGD),
E5 (out-of-distribution shifts), E6 (early checkpoints looped), E7 (attention on the
support vectors, d = 2). Three cells: the default layer (trainable Q, V; E2, E4-E6), the
full-matrix layer (E3) and a d = 2 layer (E7). Each cell is scored on held-out prompts of
its training distribution; test sets start from w_0 = 0 unless a shift says otherwise.
"""

from __future__ import annotations

from iclrepro import plan
from iclrepro.tasks.zhang2026_distribution import Distribution

PAPER = "zhang2026"
FIGURES = ("E1", "E2", "E3", "E4", "E5", "E6", "E7")


class Planner:
    def __init__(self, config: dict):
        self.block = config[PAPER]
        self.accelerator = config["accelerator"]

    def distribution(self, where: str, **changes) -> dict:
        """The configured test distribution with `changes`; a bad value names `where`."""
        settings = {"d": self.block["d"], "N": self.block["N"], **self.block["distribution"], **changes}
        try:
            return Distribution(**settings).to_spec()
        except (TypeError, ValueError) as err:
            raise plan.PlanError(f"config {PAPER}.{where}: {err}") from None

    def test_set(self, distribution: dict, prompts: int | None = None) -> plan.Node:
        spec = {"paper": PAPER, "distribution": distribution,
                "prompts": prompts or self.block["test_prompts"], "seed": self.block["test_seed"]}
        return plan.make("data", PAPER, spec)

    def cell(self, distribution: dict, full_blocks: bool, snapshots: list[int], where: str) -> plan.Node:
        training = self.block["training"]
        late = [step for step in snapshots if step >= training["steps"]]
        if late:
            raise plan.PlanError(f"config {PAPER}.{where}: steps {late} are not before the last training step "
                                 f"(training.steps = {training['steps']}; the final weights are always shown)")
        # held-out starting points at the typical norm sigma_w sqrt(d) of the training ones
        heldout = self.test_set(dict(distribution, w0_norm=training["sigma_w"] * distribution["d"] ** 0.5))
        spec = {"paper": PAPER, "distribution": distribution, "eta": self.block["eta"],
                "model": {**self.block["model"], "full_blocks": full_blocks},
                "seeds": list(range(training["seeds"])), "heldout": heldout.id, "device": self.accelerator,
                "training": {"batch": training["batch"], "sigma_w": training["sigma_w"], "optimisation": {
                    "steps": training["steps"], "lr": training["lr"], "decay_fraction": training["decay_fraction"],
                    "optimizer": training["optimizer"], "snapshots": sorted(snapshots)}}}
        return plan.make("train", PAPER, spec, inputs=(heldout,))

    def algorithms(self) -> dict:
        return {"eta": self.block["eta"], "gd_eta": self.block["gd_eta"]}

    def depth(self) -> plan.Node:
        """E1: one test set per context length N, no training."""
        settings = self.block["figures"]["E1"]
        if self.block["N"] not in settings["N"]:
            raise plan.PlanError(f"config {PAPER}.figures.E1.N: {settings['N']} must include the main N = "
                                 f"{self.block['N']} (the NGD-vs-GD claim is checked there)")
        if not {"ngd", "gd"} <= set(settings["rules"]):
            raise plan.PlanError(f"config {PAPER}.figures.E1.rules: {settings['rules']} must include ngd and gd "
                                 "(the claims compare them)")
        sets = {N: self.test_set(self.distribution("figures.E1.N", N=N)) for N in settings["N"]}
        spec = {"L": settings["L"], "rules": settings["rules"], **self.algorithms(),
                "sets": [{"N": N, "data": node.id} for N, node in sets.items()]}
        return plan.tidy(PAPER, "E1", "depth", spec, sets.values())

    def shifted_sets(self) -> list[tuple[dict, plan.Node]]:
        """E5: one test set per (family, value); the family is the distribution field it changes."""
        found = []
        for family, values in self.block["figures"]["E5"]["shifts"].items():
            for value in values:
                distribution = self.distribution(f"figures.E5.shifts.{family}", **{family: value})
                found.append(({"family": family, "setting": f"{family}={value}"}, self.test_set(distribution)))
        return found

    def nodes(self) -> list[plan.Node]:
        figures, loops = self.block["figures"], self.block["loops"]
        base = self.distribution("distribution")
        in_distribution = self.test_set(base)
        main = self.cell(base, False, figures["E6"]["checkpoints"], "figures.E6.checkpoints")
        full = self.cell(base, True, figures["E3"]["steps"], "figures.E3.steps")
        e7 = figures["E7"]
        plane = self.distribution("figures.E7", **{key: e7[key] for key in ("d", "N", "margin_gap") if key in e7})
        plane_cell = self.cell(plane, False, [], "figures.E7")
        plane_set = self.test_set(plane, e7["prompts"])
        construction = plan.make("theory", PAPER, {"d": base["d"], "eta": self.block["eta"]},
                                 name=f"construction_d{base['d']}")
        shifted = self.shifted_sets()
        loop_spec = {"T": loops, **self.algorithms()}
        tidy = {
            "E1": self.depth(),
            "E2": plan.tidy(PAPER, "E2", "training", {"cell": main.id, "eta": self.block["eta"]}, [main]),
            "E3": plan.tidy(PAPER, "E3", "weights", {"cell": full.id, "steps": sorted(figures["E3"]["steps"]),
                                                     "theory": construction.name}, [full, construction]),
            "E4": plan.tidy(PAPER, "E4", "loop", {"cell": main.id, "data": in_distribution.id, **loop_spec},
                            [main, in_distribution]),
            "E5": plan.tidy(PAPER, "E5", "ood", {"cell": main.id, **loop_spec,
                                                 "sets": [dict(labels, data=node.id) for labels, node in shifted]},
                            [main] + [node for _, node in shifted]),
            "E6": plan.tidy(PAPER, "E6", "early", {"cell": main.id, "data": in_distribution.id,
                                                   "checkpoints": sorted(figures["E6"]["checkpoints"]), **loop_spec},
                            [main, in_distribution]),
            "E7": plan.tidy(PAPER, "E7", "support", {"cell": plane_cell.id, "data": plane_set.id, "T": loops},
                            [plane_cell, plane_set]),
        }
        # the GD-vs-NGD claim is checked at the main context length (spec §5 test 5)
        return plan.figures_and_claims(PAPER, tidy, {"claims": {**self.block["claims"], "N": self.block["N"]}})


def describe(spec: dict) -> str:
    """One line of a cell's key settings (for `iclrepro cells`)."""
    dist, training = spec["distribution"], spec["training"]
    params = "full W^KQ, W^PV" if spec["model"]["full_blocks"] else "Q, V blocks"
    return (f"d={dist['d']} N={dist['N']} x={dist['x']} {params} target={spec['model']['target']} "
            f"eta={spec['eta']:g} steps={training['optimisation']['steps']} seeds={len(spec['seeds'])}")


def resources(cell: plan.Node) -> dict:
    """Memory (MB) and runtime (minutes) a cell asks the scheduler for, from its size.

    A step touches S * B * (N+1) * 2d float64 token entries about twenty times (forward,
    backward, sampling); runtime is calibrated on a 2-core CPU (about 1e-7 s per
    entry-step, Python overhead included) with a 3x margin and a 5-minute floor.
    """
    spec = cell.spec
    dist, training = spec["distribution"], spec["training"]
    entries = len(spec["seeds"]) * training["batch"] * (dist["N"] + 1) * 2 * dist["d"]
    steps = training["optimisation"]["steps"]
    return {"mem_mb": 1000 + int(20 * 8 * entries / 2**20),
            "runtime": max(5, int(3 * 1e-7 * entries * steps / 60) + 1)}
