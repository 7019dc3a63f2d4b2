"""Turn the resolved config into the content-addressed DAG the Snakefile runs.

A `Node` is one unit of work: a test set, a training cell, a theory table, a figure's
tidy data, its drawing, a paper's claims. Each paper module (`iclrepro.papers.<id>`)
declares which nodes its figures need; this module gives them ids and paths.

Ids: data sets and cells live at paths keyed by `content_id(spec, fingerprint(stage
module))`, so a changed setting or stage source makes new paths only for what it touches.
Named outputs (theory, figures, claims) keep readable paths and carry a `version` (the
same hash over their spec and inputs) that the rules pass as a param, so Snakemake
reruns them exactly when it changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from iclrepro import store
from iclrepro.errors import IclreproError
from iclrepro.papers import REGISTRY

STAGES = ("data", "train", "theory", "tidy", "draw", "claims")


class PlanError(IclreproError, ValueError):
    """The config asks for something the planner cannot build; the message names it."""


@dataclass(frozen=True)
class Node:
    stage: str
    paper: str
    spec: dict = field(compare=False, hash=False)
    name: str | None = None   # readable name of theory/tidy/draw outputs
    inputs: tuple["Node", ...] = field(default=(), compare=False, hash=False)
    id: str = ""
    source: str = ""          # fingerprint of the source its stage imports

    def entry(self) -> str:
        """'module:function' that runs this node (declared by the paper module)."""
        return getattr(REGISTRY[self.paper], self.stage)

    def payload(self) -> dict:
        """What the job receives: everything needed to run it, and to recompute its id.

        A drawing also gets the cells behind its figure, for the figure's provenance.
        """
        payload = {"stage": self.stage, "paper": self.paper, "name": self.name, "id": self.id,
                   "spec": self.spec, "inputs": sorted(i.id for i in self.inputs), "source": self.source}
        if self.stage == "draw":
            payload["cells"] = sorted({cell.id for tidy in self.inputs for cell in tidy.inputs
                                       if cell.stage == "train"})
        return payload


def make(stage: str, paper: str, spec: dict, name: str | None = None,
         inputs: tuple[Node, ...] = ()) -> Node:
    """A node whose id hashes its spec, its inputs' ids and its stage's source."""
    node = Node(stage, paper, spec, name, tuple(inputs))
    source = store.fingerprint(node.entry().partition(":")[0])
    node_id = store.identity_id({"spec": spec, "inputs": sorted(i.id for i in inputs), "name": name,
                                 "source": source})
    return Node(stage, paper, spec, name, tuple(inputs), node_id, source)


CONTENT_ADDRESSED = ("data", "train")   # stored under their id, recorded in results/index
NEEDS_RESULTS = ("tidy", "claims")      # stage functions that read other nodes' outputs


def run(payload: dict, results: str, **kwargs):
    """Run a node's stage function inside a job.

    Content-addressed nodes first get their identity record (spec, inputs, source) in
    results/index/<id>.json, so `iclrepro verify` can recompute every stored id. A
    drawing is followed by its figure's provenance (results/figures/<paper>/<name>.json).
    """
    node = Node(payload["stage"], payload["paper"], payload["spec"], payload["name"], id=payload["id"])
    layout = store.Layout(results)
    if node.stage in CONTENT_ADDRESSED:
        store.write_json(payload, layout.index(node.id))
    if node.stage in NEEDS_RESULTS:
        kwargs["results"] = results
    module, _, function = node.entry().partition(":")
    getattr(importlib.import_module(module), function)(node.spec, node.id, **kwargs)
    if node.stage == "draw":
        from iclrepro import provenance

        provenance.write(payload, results, layout.figure(node.paper, node.name, "json"))


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------

@dataclass
class Plan:
    """Every node of the selected papers, by stage; identical nodes are kept once."""

    layout: store.Layout
    nodes: dict[str, dict[str, Node]] = field(default_factory=lambda: {s: {} for s in STAGES})

    def add(self, node: Node) -> None:
        for upstream in node.inputs:
            self.add(upstream)
        self.nodes[node.stage].setdefault(self.key(node), node)

    @staticmethod
    def key(node: Node) -> str:
        """Content-addressed stages are keyed by id, named ones by paper/name."""
        return node.id if node.stage in ("data", "train") else f"{node.paper}/{node.name}"

    def get(self, stage: str, key: str) -> Node:
        return self.nodes[stage][key]

    @property
    def cells(self) -> dict[str, Node]:
        return self.nodes["train"]

    def targets(self) -> list[str]:
        """Every figure (png, pdf, tidy parquet) and claims file, plus the claims table."""
        paths = []
        for node in self.nodes["draw"].values():
            paths += self.layout.outputs(node) + self.layout.input_paths(node)
        paths += [self.layout.claims(node.paper) for node in self.nodes["claims"].values()]
        return paths + [self.layout.claims_table("md"), self.layout.claims_table("html")]


def build(config: dict) -> Plan:
    """The plan of every selected paper under the resolved config."""
    plan = Plan(store.Layout(config["results"]))
    for paper in config["papers"]:
        planner = importlib.import_module(REGISTRY[paper].planner)
        for node in planner.nodes(config):
            plan.add(node)
    return plan
