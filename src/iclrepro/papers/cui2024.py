"""Experiment design of cui2024: which cells, test sets and theory each figure needs.

Figures (spec §4): F1 (loss vs D, full models), F1b (D x excess of the same runs),
F2 (loss vs embedding dimension p per head count), F3-F6 (noisy labels, correlated
features, local examples, prior knowledge; reduced models) and the table T1 of fitted
slopes and constants over F1 and F3-F6. One cell = one model setting at one
(scenario, D) with all its seeds; a cell shared by two figures is planned once.
"""

from __future__ import annotations

from iclrepro import plan
from iclrepro.tasks.cui2024_scenario import Scenario

PAPER = "cui2024"
FIGURES = ("F1", "F1b", "F2", "F3", "F4", "F5", "F6", "T1")
SWEEPS = ("F1", "F3", "F4", "F5", "F6")   # loss vs D over scenarios and model series


def scenario_spec(block: dict, name: str) -> dict:
    if name not in block["scenarios"]:
        raise plan.PlanError(f"config {PAPER}: unknown scenario {name!r} "
                             f"(defined: {', '.join(sorted(block['scenarios']))})")
    settings = dict(block["scenarios"][name])
    prior = settings.get("tau") is not None
    unused, why = (("W", "a prior scenario's E||w||^2 is w0_norm^2 + tau^2") if prior else
                   ("w0_norm", "it is the prior's mean, and only a scenario with tau has a prior"))
    if unused in settings:
        raise plan.PlanError(f"config {PAPER}.scenarios.{name}.{unused}: unused, as {why}")
    if not prior:
        settings.setdefault("W", block["W"])
    try:
        return Scenario(**settings).to_spec()
    except (TypeError, ValueError) as err:
        raise plan.PlanError(f"config {PAPER}.scenarios.{name}: {err}") from None


class Planner:
    def __init__(self, config: dict):
        self.block = config[PAPER]
        self.accelerator = config["accelerator"]
        self.theory_nodes: dict[str, plan.Node] = {}
        for name in self.block["scenarios"]:   # those no figure uses too: a mistake waits for no figure
            scenario_spec(self.block, name)

    def test_set(self, scenario: dict, D: int) -> plan.Node:
        spec = {"paper": PAPER, "scenario": scenario, "D": D,
                "prompts": self.block["test_prompts"], "seed": self.block["test_seed"]}
        return plan.make("data", PAPER, spec)

    def cell(self, scenario: dict, D: int, model: dict) -> plan.Node:
        training = self.block["training"]
        test = self.test_set(scenario, D)
        model = {**self.block["model"], **model}
        if model["param"] == "reduced":
            model.pop("p", None)
        spec = {"paper": PAPER, "scenario": scenario, "D": D, "model": model,
                "seeds": list(range(training["seeds"])), "test": test.id, "device": self.accelerator,
                "training": {"batch": training["batch"], "optimisation": {
                    "steps": training["steps"], "lr": training["lr"][model["param"]],
                    "decay_fraction": training["decay_fraction"]}}}
        return plan.make("train", PAPER, spec, inputs=(test,))

    def theory(self, name: str) -> plan.Node:
        if name not in self.theory_nodes:
            spec = {"scenario": scenario_spec(self.block, name)}
            self.theory_nodes[name] = plan.make("theory", PAPER, spec, name=name)
        return self.theory_nodes[name]

    def sweep_rows(self, figure: str) -> list[tuple[dict, plan.Node]]:
        """(labels, cell) for every scenario x series x D of a loss-vs-D figure."""
        settings = self.block["figures"][figure]
        rows = []
        for name in settings["scenarios"]:
            scenario = scenario_spec(self.block, name)
            for model in settings["series"]:
                model = dict(model)
                series = model.pop("name")
                if model["param"] == "full":
                    model["p"] = settings["p_per_d"] * scenario["d"]
                for D in settings["D"]:
                    labels = {"scenario": name, "series": series, "D": D, "H": model["H"]}
                    rows.append((labels, self.cell(scenario, D, model)))
        return rows

    def embedding_rows(self) -> list[tuple[dict, plan.Node]]:
        """F2: every (p, H) with H dividing p, at one scenario and D."""
        settings = self.block["figures"]["F2"]
        scenario = scenario_spec(self.block, settings["scenario"])
        rows = []
        for p in settings["p"]:
            for H in settings["heads"]:
                if p % H == 0:
                    model = {"param": "full", "H": H, "p": p}
                    labels = {"scenario": settings["scenario"], "series": f"H={H}",
                              "D": settings["D"], "H": H, "p": p}
                    rows.append((labels, self.cell(scenario, settings["D"], model)))
        return rows

    def tidy(self, figure: str, kind: str, rows, extra: dict | None = None) -> plan.Node:
        names = sorted({labels["scenario"] for labels, _ in rows})
        theory = [self.theory(name) for name in names]
        cells = [cell for _, cell in rows]
        data = [cell.inputs[0] for cell in cells]
        spec = {"cells": [dict(labels, cell=cell.id) for labels, cell in rows],
                "theory": {name: node.name for name, node in zip(names, theory, strict=True)},
                "data": {cell.id: cell.spec["test"] for cell in cells},
                "scenarios": {name: scenario_spec(self.block, name) for name in names}, **(extra or {})}
        return plan.tidy(PAPER, figure, kind, spec, cells + data + theory)

    def check_consistency(self) -> None:
        """Cross-key conditions the schema cannot express, each named by its config key."""
        figures, claims = self.block["figures"], self.block["claims"]
        f1 = figures["F1"]
        names = [series["name"] for series in f1["series"]]
        for figure in SWEEPS:
            series = [entry["name"] for entry in figures[figure]["series"]]
            if len(set(series)) < len(series):
                raise plan.PlanError(f"config {PAPER}.figures.{figure}.series: names must be unique, got {series}")
        for key in ("sh_series", "mh_series"):
            if claims[key] not in names:
                raise plan.PlanError(f"config {PAPER}.claims.{key}: {claims[key]!r} is not a series of F1 ({names})")
        if claims["reference_scenario"] not in f1["scenarios"]:
            raise plan.PlanError(f"config {PAPER}.claims.reference_scenario: {claims['reference_scenario']!r} "
                                 f"is not a scenario of F1 ({f1['scenarios']})")
        for name in f1["scenarios"]:
            p = f1["p_per_d"] * scenario_spec(self.block, name)["d"]
            for series in f1["series"]:
                if series["param"] == "full" and p % series["H"]:
                    raise plan.PlanError(f"config {PAPER}.figures.F1: H={series['H']} of series {series['name']!r} "
                                         f"does not divide p = p_per_d * d = {p} (scenario {name})")
        fitted = [D for D in f1["D"] if D >= claims["slope_min_D"]]
        if len(fitted) < 2:
            raise plan.PlanError(f"config {PAPER}.figures.F1.D: the slope claims need two D >= "
                                 f"claims.slope_min_D = {claims['slope_min_D']}, got {f1['D']}")
        for figure in ("F5", "F6"):
            if not set(figures[figure]["D"]) & set(f1["D"]):
                raise plan.PlanError(f"config {PAPER}.figures.{figure}.D: shares no D with F1 ({f1['D']}), "
                                     f"which its claim compares it with")

    def nodes(self) -> list[plan.Node]:
        self.check_consistency()
        figures = self.block["figures"]
        sweep_rows = {name: self.sweep_rows(name) for name in SWEEPS}
        # F4 also shows the learned single-head W^KQ next to Sigma^{-1} (spec §4)
        heatmap = {"F4": {"kq_heatmap": self.block["claims"]["sh_series"]}}
        tidy = {name: self.tidy(name, "sweep", rows, heatmap.get(name)) for name, rows in sweep_rows.items()}
        tidy["F1b"] = self.tidy("F1b", "sweep", sweep_rows["F1"])
        tidy["F2"] = self.tidy("F2", "embedding", self.embedding_rows(),
                               {"two_d": 2 * scenario_spec(self.block, figures["F2"]["scenario"])["d"]})
        table_rows = [row for name in SWEEPS for row in sweep_rows[name]]
        tidy["T1"] = self.tidy("T1", "table", table_rows, {"min_D": self.block["claims"]["slope_min_D"]})
        return plan.figures_and_claims(PAPER, tidy, {"claims": self.block["claims"]})


def describe(spec: dict) -> str:
    """One line of a cell's key settings (for `iclrepro cells`)."""
    scenario = Scenario(**spec["scenario"])
    model = spec["model"]
    size = f" p={model['p']}" if "p" in model else ""
    return (f"{scenario.family} d={scenario.d} sigma2={scenario.sigma2:g} D={spec['D']} "
            f"{model['param']} H={model['H']}{size} init={model['init']} seeds={len(spec['seeds'])}")


def resources(cell: plan.Node) -> dict:
    """Memory (MB) and runtime (minutes) a cell asks the scheduler for, from its size.

    Training holds about ten float32 copies (autograd) of the (S, B, H, D) attention and
    (S, B, D+1, d) prompt tensors. Making and reading the test set (Parquet) peaks at about
    five times its size: 1.3 GB over the imports for the 283 MB of 20,000 prompts at D = 320,
    where the training tensors are 0.2 GB. Runtime is calibrated on a 2-core CPU (about
    1.5e-8 s per element-step) with a 3x margin and a 5-minute floor.
    """
    spec = cell.spec
    S, B, D, d = len(spec["seeds"]), spec["training"]["batch"], spec["D"], spec["scenario"]["d"]
    elements = S * B * (D + 1) * (d + 1 + 3 * spec["model"]["H"])
    test_prompts = next(node.spec["prompts"] for node in cell.inputs if node.id == spec["test"])
    test_bytes = 4 * test_prompts * ((D + 1) * (d + 1) + d)      # float32 x, y and w per prompt
    steps = spec["training"]["optimisation"]["steps"]
    return {"mem_mb": 1000 + int((10 * 4 * elements + 5 * test_bytes) / 2**20),
            "runtime": max(5, int(3 * 1.5e-8 * elements * steps / 60) + 1)}
