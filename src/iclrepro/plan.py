"""Turn the resolved config into the content-addressed DAG the Snakefile runs.

A `Node` is one unit of work: a test set, a training cell, a theory table, a figure's
tidy data, its drawing, a paper's claims. Each paper module (`iclrepro.papers.<id>`)
declares which nodes its figures need; this module gives them ids and paths.

Ids: every node's id is `store.identity_id` of its spec, its inputs' ids, its name and the
fingerprint of its stage's source, so a changed setting or stage source gives new ids only
to what it touches. Data sets and cells live at paths keyed by their ids. Named outputs
(theory, figures, claims) keep readable paths; the rules pass each job its node's payload,
id included, as a param, so Snakemake reruns them exactly when the id changes.
"""

from __future__ import annotations

import heapq
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from iclrepro import store
from iclrepro.errors import IclreproError
from iclrepro.papers import REGISTRY, stage_function

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

        The payloads of its data inputs come along, so that the job can make a data set
        nobody made yet (data sets are made on demand, see `run`). A drawing also gets the
        cells behind its figure, for the figure's provenance.
        """
        payload = {"stage": self.stage, "paper": self.paper, "name": self.name, "id": self.id,
                   "spec": self.spec, "inputs": sorted(i.id for i in self.inputs), "source": self.source,
                   "data": [i.payload() for i in self.inputs if i.stage == "data"]}
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


# What a table's job (a theory table or a figure's tidy data) asks the scheduler for at least,
# memory (MB) and runtime (minutes), and all it asks unless its paper's planner estimates more
# (`table_resources`: deora2023's for the memory of its margins and for its Hessian probes,
# chen2024's for the time of its masking passes): the SLURM profile's defaults. Tables that read
# stored results take seconds to minutes (deora2023's E4, the slowest measured at the paper
# scale, 10 minutes on one core), and so do the other theory tables (at most 3 s each at the
# paper scale).
TABLE_RESOURCES = {"mem_mb": 2000, "runtime": 30}
# What a drawing asks for (minutes): it plots its tidy table, in seconds.
DRAW_RUNTIME = 10

CONTENT_ADDRESSED = ("data", "train")   # stored under their id, recorded in results/index
NEEDS_RESULTS = ("tidy", "claims")      # stage functions that read other nodes' outputs


def tidy(paper: str, figure: str, kind: str, spec: dict, inputs) -> Node:
    """A figure's tidy node: the evaluation function `kind` builds it from `inputs`."""
    return make("tidy", paper, {"figure": figure, "kind": kind, **spec}, name=figure, inputs=tuple(inputs))


def figures_and_claims(paper: str, tidy: dict[str, Node], claims_spec: dict) -> list[Node]:
    """A drawing node per tidy table, and the paper's claims node over all the tables."""
    draws = [make("draw", paper, {"figure": name, "kind": node.spec["kind"]}, name=name, inputs=(node,))
             for name, node in tidy.items()]
    claims = make("claims", paper, {**claims_spec, "figures": sorted(tidy)}, name=paper, inputs=tuple(tidy.values()))
    return draws + [claims]


def ensure_data(payloads: list[dict], results: str) -> None:
    """Make every data set in `payloads` that does not exist yet.

    Data sets are content-addressed and deterministic, so they are made on demand by the
    first job that needs one, never as a Snakemake output (so never deleted by it, and a
    new data set never reruns jobs that do not read it). Two jobs making the same one at
    once write identical bytes through atomic renames.
    """
    layout = store.Layout(results)
    for payload in payloads:
        if not Path(layout.data(payload["id"])).is_file():
            run(payload, results, out=layout.data(payload["id"]))


def run(payload: dict, results: str, **kwargs):
    """Run a node's stage function inside a job.

    Its missing data sets are made first. Content-addressed nodes get their identity
    record (spec, inputs, source) in results/index/<id>.json, so `iclrepro verify` can
    recompute every stored id. A drawing is followed by its figure's provenance
    (results/figures/<paper>/<name>.json).
    """
    ensure_data(payload.get("data", []), results)
    node = Node(payload["stage"], payload["paper"], payload["spec"], payload["name"], id=payload["id"])
    layout = store.Layout(results)
    if node.stage in CONTENT_ADDRESSED:
        store.write_json(payload, layout.index(node.id))
    if node.stage in NEEDS_RESULTS:
        kwargs["results"] = results
    try:
        stage_function(node.entry())(node.spec, node.id, **kwargs)
    except store.StoreError as err:   # a damaged or missing input: verify says what to delete
        raise store.StoreError(f"{err} (`iclrepro verify` names each damaged stored file and what to delete "
                               "to remake it)") from err   # the log keeps where the read failed
    if node.stage == "draw":
        from iclrepro import provenance

        provenance.write(payload, results, layout.figure(node.paper, node.name, "json"))


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    """Cells of one paper that one Snakemake job trains together.

    A batch holds cells that the same nodes consume, so a changed batch reruns only the
    tables that needed the change. The job's only output is the batch marker; it runs
    just the members that are not done yet, so computed results are never Snakemake
    outputs that could be deleted.
    """

    stage: str
    paper: str
    members: tuple[Node, ...]
    id: str

    def payloads(self) -> list[dict]:
        return [member.payload() for member in self.members]


@dataclass
class Plan:
    """Every node of the selected papers, by stage; identical nodes are kept once."""

    layout: store.Layout
    nodes: dict[str, dict[str, Node]] = field(default_factory=lambda: {s: {} for s in STAGES})
    batches: dict[str, Batch] = field(default_factory=dict)
    batch_of: dict[str, Batch] = field(default_factory=dict)

    def add(self, node: Node) -> None:
        key = self.key(node)
        if key in self.nodes[node.stage]:
            return
        for upstream in node.inputs:
            self.add(upstream)
        self.nodes[node.stage][key] = node

    @staticmethod
    def key(node: Node) -> str:
        """Content-addressed stages are keyed by id, named ones by paper/name."""
        return node.id if node.stage in CONTENT_ADDRESSED else f"{node.paper}/{node.name}"

    def get(self, stage: str, key: str) -> Node:
        """The planned node; a key outside the plan (a mistyped target) is a PlanError naming
        what the paper does plan, rather than a bare KeyError."""
        try:
            return self.nodes[stage][key]
        except KeyError:
            paper = key.partition("/")[0]
            planned = sorted(k.partition("/")[2] for k in self.nodes[stage] if k.startswith(f"{paper}/"))
            raise PlanError(f"{stage} {key!r} is not planned by this config; {paper}'s {stage} nodes: "
                            f"{', '.join(planned) or f'none (is {paper} in papers?)'}") from None

    @property
    def cells(self) -> dict[str, Node]:
        return self.nodes["train"]

    def make_batches(self, size: int) -> None:
        """Group each paper's cells by the nodes that consume them, `size` or fewer to a batch,
        their runtimes spread evenly over the group's batches (deal_by_runtime)."""
        groups: dict[tuple[str, tuple[str, ...]], list[Node]] = {}
        consumers = self.consumers()
        for node_id in sorted(self.cells):
            node = self.cells[node_id]
            groups.setdefault((node.paper, consumers[node_id]), []).append(node)
        for (paper, _), members in sorted(groups.items()):
            for batch_members in deal_by_runtime(members, size):
                batch = Batch("train", paper, batch_members, store.digest(" ".join(m.id for m in batch_members)))
                self.batches[batch.id] = batch
                self.batch_of.update({member.id: batch for member in batch_members})

    def consumers(self) -> dict[str, tuple[str, ...]]:
        """The keys of the nodes that take each cell as an input."""
        taken_by: dict[str, set[str]] = {node_id: set() for node_id in self.cells}
        for stage in STAGES:
            for key, node in self.nodes[stage].items():
                for upstream in node.inputs:
                    if upstream.stage == "train":
                        taken_by[upstream.id].add(f"{stage}:{key}")
        return {node_id: tuple(sorted(keys)) for node_id, keys in taken_by.items()}

    def marker(self, batch: Batch) -> str:
        return self.layout.batch(batch.stage, batch.paper, batch.id)

    def input_paths(self, inputs) -> list[str]:
        """What a job waits for: batch markers of cells, done markers of named nodes.

        Data sets are not waited for: the job makes any that are missing.
        """
        paths = [self.marker(self.batch_of[i.id]) if i.stage == "train" else self.layout.done_marker(i)
                 for i in inputs if i.stage != "data"]
        return list(dict.fromkeys(paths))

    def targets(self) -> list[str]:
        """Every batch marker, theory and tidy table, figure (png, pdf, provenance) and claims
        file, and the claims table: each is asked for, so one that was deleted is made again
        (Snakemake does not remake a missing file whose consumers' outputs are present)."""
        paths = [self.marker(batch) for batch in self.batches.values()]
        for stage in ("theory", "tidy", "draw", "claims"):
            paths += [path for node in self.nodes[stage].values() for path in self.layout.outputs(node)]
        return paths + [self.layout.claims_table("md"), self.layout.claims_table("html")]


def deal_by_runtime(cells: list[Node], size: int) -> list[tuple[Node, ...]]:
    """The cells (of one paper) in as few batches of `size` or fewer as they fit, dealt longest
    first, each to the batch with the least runtime so far that has room: a SLURM job asks for
    its cells' runtimes summed, so a group's longest job is about its share, not the sum of
    whichever long cells an order of ids put together (fu2023's largest paper-scale batch asked
    for 609 minutes dealt in id order, 402 so). Ties go by id, so the batches are the same on
    every reading of the config."""
    runtime = {cell.id: planner(cell.paper).resources(cell)["runtime"] for cell in cells}
    batches: list[list[Node]] = [[] for _ in range(-(-len(cells) // size))]
    with_room = [(0, 0, i) for i in range(len(batches))]  # (runtime so far, cells, index): a heap
    for cell in sorted(cells, key=lambda c: (-runtime[c.id], c.id)):
        load, held, lightest = heapq.heappop(with_room)
        batches[lightest].append(cell)
        if held + 1 < size:
            heapq.heappush(with_room, (load + runtime[cell.id], held + 1, lightest))
    return [tuple(sorted(batch, key=lambda c: c.id)) for batch in batches]


def planner(paper: str):
    """A paper's planner module: its Planner, describe, resources and optional table_resources."""
    return importlib.import_module(REGISTRY[paper].planner)


def describe(paper: str, spec: dict) -> str:
    """One line of a cell's key settings, by its paper's planner (`iclrepro cells`, batch logs)."""
    return planner(paper).describe(spec)


def table_resources(node: Node) -> dict:
    """Memory (MB) and runtime (minutes) a theory or tidy job asks the scheduler for: its paper's
    estimates where its planner makes them and they are larger, else TABLE_RESOURCES."""
    estimates = getattr(planner(node.paper), "table_resources", lambda _: {})(node)
    return {key: max(default, estimates.get(key, default)) for key, default in TABLE_RESOURCES.items()}


def build(config: dict) -> Plan:
    """The plan of every selected paper under the resolved config."""
    plan = Plan(store.Layout(config["results"]))
    for paper in config["papers"]:
        for node in planner(paper).Planner(config).nodes():
            plan.add(node)
    plan.make_batches(config["batch_size"])
    return plan
